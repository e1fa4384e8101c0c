"""Every payments operation that moves money passes the gateway's limits, screening and
write-ahead log: transfers, deposits and withdrawals, and QR, cross-border payments and refunds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandbox.gateway.screening import RuleSet
from tests.gateway.conftest import LI_WEI, REGULATOR, WALLET_KEY, Sandbox

ROOT = Path(__file__).resolve().parents[2]
WALLET = "ptp_00000000000000000000000001"
NOODLES = "acc_00000000000000000000000003"
ALICE_USD = "acc_00000000000000000000000007"
# POSTs that open, price or authorise but move no money (a quote only prices; a mandate only permits).
MOVES_NO_MONEY = {"/accounts", "/fx/quotes", "/mandates", "/mandates/{mandate_id}/revoke"}


def _volume(sandbox: Sandbox, pid: str) -> str:
    return sandbox.client.get(f"/sandbox/participants/{pid}/activity", headers=REGULATOR).json()["volume"]["amount"]


def test_every_payments_post_that_moves_money_is_screened() -> None:
    spec = json.loads((ROOT / "openapi" / "payments.json").read_text(encoding="utf-8"))
    posts = {path for path, ops in spec["paths"].items() if "post" in ops and not path.startswith("/_sandbox/")}
    rules = RuleSet.load()
    unscreened = {path for path in posts - MOVES_NO_MONEY if rules.screened_operation("payments", "POST", path) is None}
    assert unscreened == set(), f"money-moving payments operations the gateway does not screen: {unscreened}"


def test_a_qr_payment_is_held_to_the_participant_s_limits(sandbox: Sandbox) -> None:
    """The review's case: a participant capped at 10.00 paid a 1,000.00 QR and nothing counted."""
    pid, key = sandbox.admit(limits={"max_single_transaction": "10.00", "daily_volume": "10.00"})
    payer = sandbox.funded_account(key, "5000.00")
    qr = sandbox.payments.get(f"/accounts/{NOODLES}/qr", params={"amount": "1000.00"}).json()
    body = {"payload": qr["payload"], "from_account_id": payer, "amount": {"amount": "1000.00", "currency": "CNY"}}
    refused = sandbox.client.post("/payments/qr-payments", json=body, headers={"X-API-Key": key})
    assert refused.status_code == 403 and refused.json()["limit"] == "max_single_transaction"
    assert sandbox.balance(payer) == "5000.00"
    small = sandbox.payments.get(f"/accounts/{NOODLES}/qr", params={"amount": "8.00"}).json()
    paid = sandbox.client.post("/payments/qr-payments", headers={"X-API-Key": key}, json={
        "payload": small["payload"], "from_account_id": payer, "amount": {"amount": "8.00", "currency": "CNY"}})
    assert paid.status_code == 201, paid.text
    assert paid.headers["x-sandbox-decision"].startswith("approve")
    assert _volume(sandbox, pid) == "8.00"
    # Through the gateway the amount is stated: a dynamic QR without it cannot be screened.
    unstated = sandbox.client.post("/payments/qr-payments", headers={"X-API-Key": key},
                                   json={"payload": small["payload"], "from_account_id": payer})
    assert unstated.status_code == 422 and unstated.json()["type"].endswith(":unscreenable-request")


def test_a_cross_border_payment_counts_what_the_payer_sells(sandbox: Sandbox) -> None:
    quote = sandbox.client.post("/payments/fx/quotes", headers={"X-API-Key": WALLET_KEY}, json={
        "sell": {"amount": "1000.00", "currency": "CNY"}, "buy_currency": "USD", "rail": "ripple"}).json()
    paid = sandbox.client.post("/payments/cross-border-payments", headers={"X-API-Key": WALLET_KEY}, json={
        "quote_id": quote["id"], "from_account_id": LI_WEI, "to_account_id": ALICE_USD})
    assert paid.status_code == 201, paid.text
    intent, outcome = [e for e in sandbox.entries(with_intents=True) if e["operation"] == "payments POST /cross-border-payments"]
    assert intent["phase"] == "intent" and outcome["status"] == 201
    assert (outcome["amount"], outcome["payer"], outcome["payee"]) == (
        {"amount": "1000.00", "currency": "CNY"}, LI_WEI, ALICE_USD)
    assert _volume(sandbox, WALLET) == "1000.00"


def test_a_refund_is_the_payee_paying_back(sandbox: Sandbox) -> None:
    pid, key = sandbox.admit()
    merchant = sandbox.open_account(key, "Test Merchant")
    customer = sandbox.funded_account(key, "300.00", owner="Test Customer")
    paid = sandbox.transfer(key, "100.00", source=customer, target=merchant)
    assert paid.status_code == 201
    refund = sandbox.client.post("/payments/refunds", json={"journal_id": paid.json()["id"]}, headers={"X-API-Key": key})
    assert refund.status_code == 201, refund.text
    entry: dict[str, Any] = sandbox.entries(phase="outcome")[-1]
    assert (entry["operation"], entry["payer"], entry["payee"]) == ("payments POST /refunds", merchant, customer)
    assert entry["amount"] == {"amount": "100.00", "currency": "CNY"}
    assert _volume(sandbox, pid) == "200.00"
    # A refund of a journal that does not exist moves nothing and is the service's 404.
    missing = sandbox.client.post("/payments/refunds", json={"journal_id": "tr_00000000000000000000000000"},
                                  headers={"X-API-Key": key})
    assert missing.status_code == 404
