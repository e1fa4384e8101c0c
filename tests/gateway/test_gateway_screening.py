"""Screening through the gateway: approve forwards, review forwards and opens an alert, block
refuses and names the rules, and a screening failure refuses (fail closed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi.testclient import TestClient

from services.common.clock import frozen_clock
from tests.gateway.conftest import LENDER, LI_WEI, REGULATOR, WALLET_KEY, ZHANG_MIN, Sandbox, build_gateway
from tests.support.servers import serve


def test_clean_transfer_is_approved_and_forwarded(sandbox: Sandbox) -> None:
    response = sandbox.transfer(WALLET_KEY, "66.66", source=LI_WEI, target=ZHANG_MIN)
    assert response.status_code == 201
    assert response.headers["x-sandbox-decision"].startswith("approve; score=0")
    assert "aml-2026" in response.headers["x-sandbox-decision"]
    assert sandbox.balance(LI_WEI) == "4933.34"


def test_structuring_pattern_is_flagged_for_review_and_still_forwarded(sandbox: Sandbox) -> None:
    customer = sandbox.funded_account(WALLET_KEY, "30000.00", owner="A Wallet Customer")
    outcomes = [sandbox.transfer(WALLET_KEY, amount, source=customer, target=ZHANG_MIN)
                for amount in ("9500.00", "9400.00", "9600.00")]
    assert [r.status_code for r in outcomes] == [201, 201, 201]
    assert outcomes[2].headers["x-sandbox-decision"].startswith("review")
    alerts = sandbox.client.get("/sandbox/alerts", headers=REGULATOR).json()["data"]
    assert [a["rules"][0]["rule"] for a in alerts] == ["structuring"]
    assert alerts[0]["status"] == "open"


def test_sanctioned_name_is_blocked_and_nothing_moves(sandbox: Sandbox) -> None:
    target = sandbox.open_account(WALLET_KEY, "Borys Wexlanow")
    response = sandbox.transfer(WALLET_KEY, "50.00", source=LI_WEI, target=target)
    assert response.status_code == 403
    problem = response.json()
    assert problem["type"].endswith("transaction-blocked")
    assert problem["rules"][0]["rule"] == "sanctions"
    assert "SBX-SYN-0001" in problem["rules"][0]["reason"]
    assert problem["alert_id"].startswith("alt_")
    assert "x-sandbox-receipt" in response.headers
    assert sandbox.balance(target) == "0.00"
    assert sandbox.balance(LI_WEI) == "5000.00"


def test_a_block_opens_an_alert_the_regulator_sees(sandbox: Sandbox) -> None:
    target = sandbox.open_account(WALLET_KEY, "Blue Lantern Phantom Trading FZE")
    alert_id = sandbox.transfer(WALLET_KEY, "1.00", source=LI_WEI, target=target).json()["alert_id"]
    alert = sandbox.client.get(f"/sandbox/alerts/{alert_id}", headers=REGULATOR).json()
    assert (alert["decision"], alert["payee"]) == ("block", target)


def test_credit_disbursal_is_screened_as_a_payments_transfer(sandbox: Sandbox) -> None:
    response = sandbox.transfer("sbx_svc_credit_key", "12000.00", source=LENDER, target=ZHANG_MIN)
    assert response.status_code == 201
    assert "large_value" in response.headers["x-sandbox-decision"]


def test_deposit_keeps_only_the_last_four_card_digits(sandbox: Sandbox) -> None:
    response = sandbox.client.post("/payments/deposits", headers={"X-API-Key": WALLET_KEY}, json={
        "account_id": LI_WEI, "amount": {"amount": "10.00", "currency": "CNY"}, "card_number": "4242424242424242"})
    assert response.status_code == 201
    [entry] = sandbox.entries(decision="approve")
    assert entry["card_last4"] == "4242"
    stored = b"".join(p.read_bytes() for p in Path(sandbox.data_dir).glob("gateway.sqlite3*"))
    assert stored and b"4242424242424242" not in stored
    assert WALLET_KEY.encode() not in stored


def test_unreadable_amount_is_refused_before_forwarding(sandbox: Sandbox) -> None:
    response = sandbox.client.post("/payments/transfers", headers={"X-API-Key": WALLET_KEY},
                                   json={"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": 5})
    assert response.status_code == 422
    assert response.json()["type"].endswith("unscreenable-request")


def _payments_with_slow_lookups(payments_app, calls: list[str]):  # type: ignore[no-untyped-def]
    """The real payments app, except that account look-ups hang (a stuck read replica)."""
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            calls.append(f"{scope['method']} {scope['path']}")
            if scope["method"] == "GET" and scope["path"].startswith("/accounts/"):
                await asyncio.sleep(2)
        await payments_app(scope, receive, send)
    return app


def test_screening_failure_fails_closed(tmp_path: Path, payments_app) -> None:
    """Fail closed: when names cannot be looked up, the money does not move (a sanctioned
    payee must never slip through because a dependency was slow); the client may retry."""
    calls: list[str] = []
    with serve(_payments_with_slow_lookups(payments_app, calls)) as url:
        app = build_gateway(tmp_path, frozen_clock(), upstream_payments=url, read_timeout=0.3)
        with TestClient(app) as client:
            response = client.post("/payments/transfers", headers={"X-API-Key": WALLET_KEY}, json={
                "from_account_id": LI_WEI, "to_account_id": ZHANG_MIN,
                "amount": {"amount": "1.00", "currency": "CNY"}})
            assert response.status_code == 503
            assert response.json()["type"].endswith("screening-unavailable")
            assert "POST /transfers" not in calls
            entry = client.get("/sandbox/audit/entries", headers=REGULATOR).json()["data"][0]
            assert (entry["status"], entry["error"]) == (503, "screening-failed")
