"""Trust through the gateway: a robo firm sees and moves only its own advisor accounts, funds
them from a wallet only under the wallet owner's mandate, within its own sandbox limits, and
only the regulator moves the market everyone shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.demo import ADVISOR_SERVICE, DEMO_ROBO
from tests.advisor.conftest import (
    CUSTODY,
    LI_WEI,
    LI_WEI_TO_DEMO_ROBO,
    REGULATOR,
    ROBO,
    WALLET,
    ZHANG_MIN,
    GatewayStack,
    deposit,
    gateway_stack,
    open_account,
)

A = "/advisor"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[GatewayStack]:
    with gateway_stack(tmp_path) as built:
        yield built


def robo_account(stack: GatewayStack, wallet: str = LI_WEI, mandate: str | None = LI_WEI_TO_DEMO_ROBO,
                 headers: dict[str, str] = ROBO) -> str:
    return open_account(stack.http, wallet, mandate, prefix=A, headers=headers)


def robo_deposit(stack: GatewayStack, account_id: str, amount: str, headers: dict[str, str] = ROBO, **extra: str):
    return deposit(stack.http, account_id, amount, prefix=A, **headers, **extra)


def test_a_robo_firm_cannot_drain_a_wallet_it_holds_no_mandate_for(stack: GatewayStack) -> None:
    # The attack: Zhang Min's wallet (a Demo Wallet Co customer), no mandate to Demo Robo.
    account_id = robo_account(stack, ZHANG_MIN, mandate=None)
    response = robo_deposit(stack, account_id, "1195.00")
    problem = response.json()
    assert response.status_code == 403, problem
    assert problem["type"].endswith(":funding-not-authorised")
    assert ZHANG_MIN in problem["detail"] and "No money moved" in problem["detail"]
    assert stack.balance(ZHANG_MIN) == "1200.00"
    assert stack.http.get(f"{A}/deposits/{problem['deposit_id']}", headers=ROBO).json()["status"] == "failed"
    account = stack.http.get(f"{A}/accounts/{account_id}", headers=ROBO).json()
    assert account["holdings"] == [] and account["deposited"]["amount"] == "0.00"


def test_another_wallets_mandate_does_not_open_zhang_mins_wallet(stack: GatewayStack) -> None:
    account_id = robo_account(stack, ZHANG_MIN, mandate=LI_WEI_TO_DEMO_ROBO)
    response = robo_deposit(stack, account_id, "1195.00")
    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith(":funding-mandate-mismatch")
    assert stack.balance(ZHANG_MIN) == "1200.00"


def test_demo_robo_funds_li_weis_account_under_the_demo_mandate_as_itself(stack: GatewayStack) -> None:
    account_id = robo_account(stack)
    assert stack.http.get(f"{A}/accounts/{account_id}", headers=ROBO).json()["funding_mandate_id"] == LI_WEI_TO_DEMO_ROBO
    response = robo_deposit(stack, account_id, "1000.00", **{"X-Request-ID": "req-li-wei-funds"})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "completed" and response.json()["trades"]
    assert (stack.balance(LI_WEI), stack.balance(CUSTODY)) == ("4000.00", "994.00")
    journal = stack.payments.get(f"/journals/{response.json()['payments_journal_id']}").json()
    assert journal["mandate_id"] == LI_WEI_TO_DEMO_ROBO
    # The wallet debit is Demo Robo's in the regulator's log, sent by the advisor service.
    transfer = next(e for e in stack.audit("req-li-wei-funds") if e["path"] == "/payments/transfers")
    assert (transfer["participant_id"], transfer["via"], transfer["status"]) == (DEMO_ROBO, ADVISOR_SERVICE, 201)


def test_a_deposit_retried_later_is_still_the_robo_firms_debit(stack: GatewayStack) -> None:
    account_id = robo_account(stack)
    gateway = stack.advisors_payments.http.base_url
    stack.advisors_payments.http.base_url = "http://127.0.0.1:9"  # the gateway unreachable: left pending
    pending = robo_deposit(stack, account_id, "800.00").json()
    assert pending["status"] == "pending" and stack.balance(LI_WEI) == "5000.00"
    stack.advisors_payments.http.base_url = gateway
    retried = stack.http.post(f"{A}/deposits/{pending['id']}/retry", headers={**ROBO, "X-Request-ID": "req-retry"})
    assert retried.status_code == 200 and retried.json()["status"] == "completed", retried.text
    assert stack.balance(LI_WEI) == "4200.00"
    transfer = next(e for e in stack.audit("req-retry") if e["path"] == "/payments/transfers")
    assert (transfer["participant_id"], transfer["via"], transfer["status"]) == (DEMO_ROBO, ADVISOR_SERVICE, 201)


def test_the_mandates_caps_hold_through_the_advisor(stack: GatewayStack) -> None:
    account_id = robo_account(stack)
    response = robo_deposit(stack, account_id, "5000.01")  # the demo mandate allows 5,000.00 a debit
    assert response.status_code == 403, response.text
    assert response.json()["type"].endswith(":funding-mandate-limit")
    assert stack.balance(LI_WEI) == "5000.00"


def test_a_revoked_mandate_funds_nothing_until_the_account_names_a_new_one(stack: GatewayStack) -> None:
    account_id = robo_account(stack)
    revoked = stack.http.post(f"/payments/mandates/{LI_WEI_TO_DEMO_ROBO}/revoke", headers=WALLET)
    assert revoked.status_code == 200, revoked.text
    response = robo_deposit(stack, account_id, "1000.00")
    assert response.status_code == 403, response.text
    assert response.json()["type"].endswith(":funding-mandate-inactive")
    assert stack.balance(LI_WEI) == "5000.00"
    renewed = stack.grant_mandate(LI_WEI, DEMO_ROBO, max_per_debit="2000.00", max_per_period="2000.00")
    updated = stack.http.patch(f"{A}/accounts/{account_id}", json={"funding_mandate_id": renewed}, headers=ROBO)
    assert updated.status_code == 200 and updated.json()["funding_mandate_id"] == renewed, updated.text
    assert robo_deposit(stack, account_id, "1000.00").status_code == 201
    assert stack.balance(LI_WEI) == "4000.00"


def test_another_robo_firm_finds_none_of_demo_robos_resources(stack: GatewayStack) -> None:
    account_id = robo_account(stack)
    funded = robo_deposit(stack, account_id, "3000.00").json()
    mine = stack.http.get(f"{A}/accounts/{account_id}", headers=ROBO).json()
    _, other = stack.admit("Second Robo", ["advisor"])
    profile_id = mine["risk_profile_id"]
    reads = [f"{A}/risk-profiles/{profile_id}", f"{A}/accounts/{account_id}", f"{A}/accounts/{account_id}/trades",
             f"{A}/accounts/{account_id}/tax-report", f"{A}/deposits/{funded['id']}"]
    for path in reads:
        response = stack.http.get(path, headers=other)
        assert response.status_code == 404 and response.json()["type"].endswith(":not-found"), path
    moves = [(f"{A}/accounts/{account_id}/deposits", {"amount": {"amount": "500.00", "currency": "CNY"}}),
             (f"{A}/accounts/{account_id}/rebalance", {"threshold": 0.005}),
             (f"{A}/accounts/{account_id}/harvest", {"loss_threshold": 0.01}),
             (f"{A}/deposits/{funded['id']}/retry", None),
             (f"{A}/accounts", {"owner_name": "Li Wei", "wallet_account_id": LI_WEI,
                                "funding_mandate_id": LI_WEI_TO_DEMO_ROBO, "risk_profile_id": profile_id})]
    for path, body in moves:
        response = stack.http.post(path, json=body, headers=other)
        assert response.status_code == 404, (path, response.text)
    patched = stack.http.patch(f"{A}/accounts/{account_id}", json={"funding_mandate_id": None}, headers=other)
    assert patched.status_code == 404, patched.text
    assert stack.http.get(f"{A}/accounts", headers=other).json()["data"] == []
    assert stack.http.get(f"{A}/risk-profiles", headers=other).json()["data"] == []
    assert [a["id"] for a in stack.http.get(f"{A}/accounts", headers=ROBO).json()["data"]] == [account_id]
    assert stack.http.get(f"{A}/accounts/{account_id}", headers=ROBO).json() == mine
    assert stack.balance(LI_WEI) == "2000.00"


def test_only_the_regulator_moves_the_shared_market(stack: GatewayStack) -> None:
    shock = {"days": 20, "shocks": [{"asset_class": "cn_equity", "pct": -30}]}
    refused = stack.http.post(f"{A}/_sandbox/market/advance", json=shock, headers=ROBO)
    assert refused.status_code == 403 and refused.json()["type"].endswith(":sandbox-controls-regulator-only")
    assert stack.http.post(f"{A}/market/advance", json=shock, headers=ROBO).status_code in (404, 405)
    assert stack.http.get(f"{A}/market", headers=ROBO).json()["day"] == 0
    moved = stack.http.post(f"{A}/_sandbox/market/advance", json=shock, headers=REGULATOR)
    assert moved.status_code == 200, moved.text
    market = stack.http.get(f"{A}/market", headers=ROBO).json()
    assert (market["day"], market["date"], market["shocks"][0]["asset_class"]) == (20, "2026-01-25", "cn_equity")


def _over_limit(response: httpx.Response, limit: str) -> None:
    """The gateway refused the advisor's debit as the robo firm's, over one of the firm's limits."""
    problem = response.json()
    assert response.status_code == 403 and problem["type"].endswith(":funding-over-sandbox-limit"), problem
    assert problem["payments_problem"]["type"].endswith(":sandbox-limit") and limit in problem["detail"], problem


def test_demo_robo_cannot_move_more_than_its_single_cap_through_the_advisor(stack: GatewayStack) -> None:
    wallet, mandate = stack.wallet_with_mandate("80000.00", DEMO_ROBO)
    account_id = robo_account(stack, wallet, mandate)
    response = robo_deposit(stack, account_id, "60000.00", **{"X-Request-ID": "req-over-cap"})  # cap 50,000.00
    _over_limit(response, "50000.00")
    assert stack.balance(wallet) == "80000.00"
    refusal = next(e for e in stack.audit("req-over-cap") if e["path"] == "/payments/transfers")
    assert (refusal["participant_id"], refusal["via"], refusal["status"]) == (DEMO_ROBO, ADVISOR_SERVICE, 403)


def test_a_robo_firms_daily_volume_counts_what_the_advisor_moves_for_it(stack: GatewayStack) -> None:
    robo_id, robo = stack.admit("Small Robo", ["advisor"], {"max_single_transaction": "2000.00",
                                                            "daily_volume": "2500.00"})
    wallet, mandate = stack.wallet_with_mandate("10000.00", robo_id)
    account_id = robo_account(stack, wallet, mandate, headers=robo)
    assert robo_deposit(stack, account_id, "2000.00", headers=robo).status_code == 201
    over_day = robo_deposit(stack, account_id, "1000.00", headers=robo)
    _over_limit(over_day, "2500.00")
    assert stack.balance(wallet) == "8000.00"
