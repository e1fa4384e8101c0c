"""End to end through the real gateway: a robo app's call funds an account from a wallet, and the
regulator's log shows both hops under one request id."""

from __future__ import annotations

import httpx
import pytest

from services.advisor.main import AdvisorSettings
from services.advisor.main import create_app as create_advisor_app
from services.advisor.payments_client import PaymentsClient
from services.common.clock import frozen_clock
from services.common.demo import DEMO_REGULATOR_KEY
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.advisor.conftest import ADVISOR_KEY, CUSTODY, LI_WEI, answers
from tests.support.servers import serve

gateway_main = pytest.importorskip("sandbox.gateway.main")

ROBO = {"X-API-Key": "sbx_demo_robo_key"}
WALLET = {"X-API-Key": "sbx_demo_wallet_key"}


def test_a_deposit_through_the_gateway_is_a_real_wallet_transfer_logged_end_to_end(tmp_path) -> None:
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    client = PaymentsClient("http://127.0.0.1:9", ADVISOR_KEY)  # pointed at the gateway once it listens
    advisor = create_advisor_app(AdvisorSettings(data_dir=tmp_path / "advisor"), clock=frozen_clock(),
                                 payments_client=client)
    gateway = gateway_main.create_app(
        gateway_main.GatewaySettings(data_dir=tmp_path / "gateway"),
        transports={"payments": httpx.ASGITransport(app=payments), "advisor": httpx.ASGITransport(app=advisor)},
    )
    with serve(gateway) as base:
        client.base_url = base
        with httpx.Client(base_url=base, timeout=30) as http:
            profile = http.post("/advisor/risk-profiles", json=answers(), headers=ROBO).json()
            account = http.post("/advisor/accounts", headers=ROBO, json={
                "owner_name": "Li Wei", "wallet_account_id": LI_WEI, "risk_profile_id": profile["id"]}).json()
            response = http.post(f"/advisor/accounts/{account['id']}/deposits", headers={**ROBO, "X-Request-ID": "req-robo-1"},
                                 json={"amount": {"amount": "1000.00", "currency": "CNY"}})
            assert response.status_code == 201, response.text
            deposit = response.json()
            assert deposit["status"] == "completed" and deposit["trades"]

            def balance(account_id: str, key: str) -> str:
                response = http.get(f"/payments/accounts/{account_id}/balance", headers={"X-API-Key": key})
                return response.json()["available"]["amount"]

            # The wallet firm sees its customer Li Wei's wallet but not the advisor's custody account.
            assert balance(LI_WEI, WALLET["X-API-Key"]) == "4000.00"
            assert balance(CUSTODY, ADVISOR_KEY) == "994.00"
            assert http.get(f"/payments/accounts/{CUSTODY}/balance", headers=WALLET).status_code == 404
            log = http.get("/sandbox/audit/entries", params={"limit": 100},
                           headers={"X-API-Key": DEMO_REGULATOR_KEY}).json()["data"]
            hops = [(e["service"], e["method"], e["path"]) for e in log if e["request_id"] == "req-robo-1"]
            assert ("payments", "POST", "/payments/transfers") in {(s.strip("/"), m, p) for s, m, p in hops}
            assert any(p.endswith("/deposits") for _, _, p in hops)
