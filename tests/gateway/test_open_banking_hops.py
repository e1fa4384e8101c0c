"""An open-banking payment crosses the gateway twice: the TPP's initiation, then the bank's own
ledger transfer (its service key, the same X-Request-ID, the same amount). Both hops are
screened and logged, but the payment counts once: toward the TPP's limits through the first
hop, toward the screening history through the ledger hop (whose parties are the ledger's)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.gateway.main import GatewaySettings
from sandbox.gateway.main import create_app as create_gateway_app
from services.common.demo import DEMO_PARTICIPANTS, DEMO_REGULATOR_KEY, SERVICE_PARTICIPANT_KEYS
from tests.gateway.conftest import LENDER, WANG_FANG, ZHANG_MIN, Sandbox
from tests.openbanking.factories import VERIFIER, bank_behind_gateway, s256

TPP = "ptp_00000000000000000000000002"
BANK = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == SERVICE_PARTICIPANT_KEYS["openbanking"])
COFFEE = "acc_00000000000000000000000b04"  # a merchant at Sandbox Bank
DEBTOR = WANG_FANG  # Wang Fang's wallet, hers at the bank too (PSU `wangfang`)
CREDIT_KEY = "sbx_svc_credit_key"  # the credit service: it holds the lender's float


@dataclass
class World:
    tpp: httpx.Client
    regulator: httpx.Client
    gateway_dir: Path

    def pay(self, n: int, amount: str) -> httpx.Response:
        """A TPP's whole PISP journey for one payment, from Wang Fang's wallet to the coffee shop."""
        client = {"client_id": "tpp_demo", "client_secret": "sbx_demo_tpp_secret"}
        token = self.tpp.post("/oauth2/token", data={"grant_type": "client_credentials", **client})
        assert token.status_code == 200, token.text
        initiation = {
            "InstructionIdentification": f"HOP-{n}", "EndToEndIdentification": f"HOP-E2E-{n}",
            "InstructedAmount": {"Amount": amount, "Currency": "CNY"},
            "DebtorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": DEBTOR, "Name": "Wang Fang"},
            "CreditorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": COFFEE, "Name": "Hutong Coffee"}}
        consent = self.tpp.post("/v3.1/pisp/domestic-payment-consents",
                                headers={"Authorization": f"Bearer {token.json()['access_token']}",
                                         "x-idempotency-key": f"hop-consent-{n}"},
                                json={"Data": {"Initiation": initiation}, "Risk": {}})
        assert consent.status_code == 201, consent.text
        consent_id = consent.json()["Data"]["ConsentId"]
        code = self.tpp.post("/authorize", json={"consent_id": consent_id, "client_id": "tpp_demo",
                                                 "code_challenge": s256(VERIFIER), "code_challenge_method": "S256",
                                                 "psu_id": "wangfang", "otp": "123456"}).json()["code"]
        psu = self.tpp.post("/oauth2/token", data={"grant_type": "authorization_code", "code": code,
                                                   "code_verifier": VERIFIER},
                            auth=("tpp_demo", "sbx_demo_tpp_secret")).json()["access_token"]
        paid = self.tpp.post("/v3.1/pisp/domestic-payments",
                             headers={"Authorization": f"Bearer {psu}", "x-idempotency-key": f"hop-pay-{n}"},
                             json={"Data": {"ConsentId": consent_id, "Initiation": initiation}, "Risk": {}})
        assert paid.status_code == 201, paid.text
        assert paid.json()["Data"]["Status"] == "AcceptedCreditSettlementCompleted"
        return paid

    def money_entries(self) -> list[dict[str, Any]]:
        entries = self.regulator.get("/sandbox/audit/entries", params={"limit": 100}).json()["data"]
        return [e for e in entries if e["amount"] is not None and e["phase"] != "intent"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.regulator.get("/sandbox/alerts").json()["data"]

    def volume(self, participant_id: str) -> str:
        activity = self.regulator.get(f"/sandbox/participants/{participant_id}/activity").json()
        return activity["volume"]["amount"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with bank_behind_gateway(tmp_path) as base:
        with httpx.Client(base_url=base + "/open-banking", headers={"X-API-Key": "sbx_demo_tpp_key"},
                          timeout=30) as tpp, \
                httpx.Client(base_url=base, headers={"X-API-Key": DEMO_REGULATOR_KEY}, timeout=30) as regulator:
            yield World(tpp, regulator, tmp_path / "gateway")


def test_two_open_banking_payments_are_not_a_structuring_pattern(world: World) -> None:
    """The audit's case: two 9,000 CNY payments fired structuring and opened two alerts."""
    for n in (1, 2):
        world.pay(n, "9000.00")
    assert world.alerts() == []
    entries = world.money_entries()
    hops = [(e["participant_id"], e["via"], e["path"], e["decision"], e["counts_toward"]) for e in entries]
    # Each payment: the bank's ledger hop is logged first (it finishes inside the TPP's call), as
    # the TPP's movement sent via the bank's own key.
    ledger_hop = (TPP, BANK, "/payments/transfers", "approve", ["history"])
    initiation = (TPP, None, "/open-banking/v3.1/pisp/domestic-payments", "approve", ["limits"])
    assert hops == [ledger_hop, initiation, ledger_hop, initiation]
    assert entries[0]["request_id"] == entries[1]["request_id"] != entries[2]["request_id"]
    assert (entries[0]["payer"], entries[0]["payee"]) == (DEBTOR, COFFEE)
    assert world.volume(TPP) == "18000.00"  # the TPP's limits count each payment once
    assert world.volume(BANK) == "0.00"  # the bank moved it on the TPP's behalf


def test_a_third_payment_is_flagged_once_with_one_alert(world: World) -> None:
    for n in (1, 2, 3):
        world.pay(n, "9000.00")
    [alert] = world.alerts()
    assert (alert["participant_id"], alert["decision"]) == (TPP, "review")
    assert [r["rule"] for r in alert["rules"]] == ["structuring", "round_amount"]
    assert "3 amounts just below" in alert["rules"][0]["reason"]
    third = world.money_entries()[-2:]  # the ledger hop, then the initiation
    assert [e["decision"] for e in third] == ["review", "review"]
    assert [e["alert_id"] for e in third] == [alert["id"], alert["id"]]


def test_a_restarted_gateway_rebuilds_each_payment_once(world: World) -> None:
    for n in (1, 2):
        world.pay(n, "9000.00")
    rebuilt = create_gateway_app(GatewaySettings(data_dir=world.gateway_dir)).state.gateway
    now = rebuilt.clock.now().timestamp()
    assert len(rebuilt.history.activity_of(DEBTOR, now)) == 2  # one entry per payment
    assert len(rebuilt.history.inflows_of(COFFEE, now)) == 2
    assert rebuilt.usage[TPP].day_volume == 1_800_000
    assert rebuilt.usage.get(BANK) is None or rebuilt.usage[BANK].day_volume == 0


def test_a_participant_reusing_a_request_id_is_counted_each_time(sandbox: Sandbox) -> None:
    """Only a service's hop inside a screened call to that service is a second hop: a firm
    cannot hide transfers behind one X-Request-ID."""
    for _ in range(2):
        response = sandbox.transfer(CREDIT_KEY, "9000.00", source=LENDER, target=ZHANG_MIN,
                                    **{"X-Request-ID": "same-id-again"})
        assert response.status_code == 201
    entries = sandbox.entries(participant_id="ptp_00000000000000000000000011")
    assert [e["counts_toward"] for e in entries] == [["limits", "history"]] * 2



def test_two_payments_in_flight_with_one_request_id_are_not_confused(sandbox) -> None:  # type: ignore[no-untyped-def]
    """The ledger hop is linked to its payment by the request id: while one payment with an id is
    on its way, a second screened request with the same id is refused (409), not mixed up."""
    from sandbox.gateway.proxy import Hop

    gateway = sandbox.client.app.state.gateway
    gateway.hops["req_shared"] = Hop("ptp_00000000000000000000000002", "open-banking", 2500, None, None, None)  # type: ignore[arg-type]
    initiation = {"InstructionIdentification": "I-1", "EndToEndIdentification": "E-1",
                  "InstructedAmount": {"Amount": "25.00", "Currency": "CNY"},
                  "CreditorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": COFFEE, "Name": "Hutong Coffee"}}
    response = sandbox.client.post("/open-banking/v3.1/pisp/domestic-payments", json={
        "Data": {"ConsentId": "sdp-1", "Initiation": initiation}, "Risk": {}}, headers={
        "X-API-Key": "sbx_demo_tpp_key", "X-Request-ID": "req_shared", "x-idempotency-key": "pay-1"})
    assert response.status_code == 409 and response.json()["type"].endswith(":request-id-in-flight")
    assert sandbox.entries(with_intents=True)[-1]["status"] == 409
