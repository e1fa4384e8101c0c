"""The whole TPP journey through the real gateway: the bank's payment is screened and logged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

from services.common.demo import DEMO_PARTICIPANTS, DEMO_REGULATOR_KEY, SERVICE_PARTICIPANT_KEYS
from tests.openbanking.factories import COFFEE, VERIFIER, WALLET, bank_behind_gateway, s256

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sandbox.gateway") is None, reason="gateway not built")

TPP_KEY = {"X-API-Key": "sbx_demo_tpp_key"}
BANK_PARTICIPANT = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == SERVICE_PARTICIPANT_KEYS["openbanking"])
TPP_PARTICIPANT = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == TPP_KEY["X-API-Key"])


def test_a_tpp_journey_through_the_gateway_ends_in_the_ledger_and_the_audit_log(tmp_path: Path) -> None:
    with bank_behind_gateway(tmp_path) as base:
        tpp = httpx.Client(base_url=base + "/open-banking", headers=TPP_KEY, timeout=30)
        token = tpp.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": "tpp_demo",
                                                "client_secret": "sbx_demo_tpp_secret"})
        assert token.status_code == 200, token.text
        tpp_auth = {"Authorization": f"Bearer {token.json()['access_token']}"}

        consent = tpp.post("/v3.1/pisp/domestic-payment-consents", headers={**tpp_auth, "x-idempotency-key": "gw-1"},
                           json={"Data": {"Initiation": {
                               "InstructionIdentification": "GW-1", "EndToEndIdentification": "GW-E2E-1",
                               "InstructedAmount": {"Amount": "42.00", "Currency": "CNY"},
                               "CreditorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": COFFEE,
                                                   "Name": "Hutong Coffee"}}}, "Risk": {}})
        assert consent.status_code == 201, consent.text
        data = consent.json()["Data"]
        # The link names the gateway the TPP called (forwarded host and prefix), not the bank's own port.
        assert consent.json()["Links"]["Self"] == (
            f"{base}/open-banking/v3.1/pisp/domestic-payment-consents/{data['ConsentId']}")
        code = tpp.post("/authorize", json={"consent_id": data["ConsentId"], "client_id": "tpp_demo",
                                            "code_challenge": s256(VERIFIER), "code_challenge_method": "S256",
                                            "psu_id": "wangfang", "otp": "123456"}).json()["code"]
        psu = tpp.post("/oauth2/token", data={"grant_type": "authorization_code", "code": code,
                                              "code_verifier": VERIFIER},
                       auth=("tpp_demo", "sbx_demo_tpp_secret")).json()["access_token"]
        paid = tpp.post("/v3.1/pisp/domestic-payments",
                        headers={"Authorization": f"Bearer {psu}", "x-idempotency-key": "gw-pay-1"},
                        json={"Data": {"ConsentId": data["ConsentId"], "Initiation": data["Initiation"]}, "Risk": {}})
        assert paid.status_code == 201, paid.text
        assert paid.json()["Data"]["Status"] == "AcceptedCreditSettlementCompleted"

        regulator = httpx.Client(base_url=base, headers={"X-API-Key": DEMO_REGULATOR_KEY}, timeout=30)
        # The bank's ledger hop is logged as the TPP's payment, made via the bank's own key.
        entries = regulator.get("/sandbox/audit/entries", params={"service": "payments", "limit": 100}).json()["data"]
        transfers = [e for e in entries if e["path"] == "/payments/transfers" and e["status"] == 201]
        assert any(e["payer"] == WALLET and e["payee"] == COFFEE and e["amount"]["amount"] == "42.00"
                   and (e["participant_id"], e["via"]) == (TPP_PARTICIPANT, BANK_PARTICIPANT)
                   for e in transfers), entries
        ledger = regulator.get("/sandbox/audit/entries", params={"service": "open-banking", "limit": 100}).json()
        assert any(e["path"] == "/open-banking/v3.1/pisp/domestic-payments" for e in ledger["data"])
