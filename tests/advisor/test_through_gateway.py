"""End to end through the real gateway: a robo app's call funds an account from a wallet, and the
regulator's log shows both hops under one request id."""

from __future__ import annotations

import pytest

from tests.advisor.conftest import ADVISOR_KEY, CUSTODY, LI_WEI, LI_WEI_TO_DEMO_ROBO, ROBO, WALLET, answers, gateway_stack

pytest.importorskip("sandbox.gateway.main")


def test_a_deposit_through_the_gateway_is_a_real_wallet_transfer_logged_end_to_end(tmp_path) -> None:
    with gateway_stack(tmp_path) as stack:
        http = stack.http
        profile = http.post("/advisor/risk-profiles", json=answers(), headers=ROBO).json()
        account = http.post("/advisor/accounts", headers=ROBO, json={
            "owner_name": "Li Wei", "wallet_account_id": LI_WEI, "funding_mandate_id": LI_WEI_TO_DEMO_ROBO,
            "risk_profile_id": profile["id"]}).json()
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
        hops = [(e["service"], e["method"], e["path"]) for e in stack.audit("req-robo-1")]
        assert ("payments", "POST", "/payments/transfers") in {(s.strip("/"), m, p) for s, m, p in hops}
        assert any(p.endswith("/deposits") for _, _, p in hops)
