"""The ledger rules as a user of the payments API sees them: accounts and cursor pagination,
top-ups (with the documented test cards), withdrawals, P2P transfers, merchant payments and their
0.6% fee, partial and full refunds. After every step each journal's postings sum to zero and
GET /invariants is ok."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.payments.factories import MakeApp
from tests.support.ledger import snapshot, walk

PAYS = "4242424242424242"
PROBLEM = "urn:fintech-sandbox:problem:"
# The test cards the service documents (its OpenAPI description and the README).
DECLINE_CARDS = {
    "4000000000000002": ("card_declined", "The card was declined."),
    "4000000000009995": ("insufficient_funds", "The card has insufficient funds."),
    "4000000000009987": ("lost_card", "The card was reported lost."),
    "4000000000009979": ("stolen_card", "The card was reported stolen."),
    "4000000000000069": ("expired_card", "The card has expired."),
    "4000000000000119": ("processing_error", "The card issuer could not process it."),
    "4242424242424241": ("incorrect_number", "The card number fails the Luhn check."),
}


@pytest.fixture
def client(make_app: MakeApp) -> Iterator[TestClient]:
    """An empty ledger (no demo data), with a clock that stands still."""
    with TestClient(make_app(seed_demo_data=False)) as c:
        yield c


def money(amount: str, currency: str = "CNY") -> dict[str, str]:
    return {"amount": amount, "currency": currency}


def open_account(client: TestClient, owner: str, kind: str = "personal", currency: str = "CNY") -> str:
    r = client.post("/accounts", json={"kind": kind, "owner_name": owner, "currency": currency})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def top_up(client: TestClient, account: str, amount: str, currency: str = "CNY") -> dict[str, Any]:
    r = client.post("/deposits", json={"account_id": account, "amount": money(amount, currency), "card_number": PAYS})
    assert r.status_code == 201, r.text
    return r.json()


def pay(client: TestClient, payer: str, payee: str, amount: str, currency: str = "CNY") -> dict[str, Any]:
    r = client.post("/transfers", json={"from_account_id": payer, "to_account_id": payee,
                                        "amount": money(amount, currency)})
    assert r.status_code == 201, r.text
    return r.json()


def balance(client: TestClient, account: str) -> str:
    return client.get(f"/accounts/{account}").json()["balance"]["amount"]


def postings(journal: dict[str, Any]) -> dict[str, str]:
    return {p["account_id"]: p["amount"]["amount"] for p in journal["postings"]}


def fee_account(client: TestClient, currency: str = "CNY") -> dict[str, Any]:
    (account,) = [a for a in walk(client, "/accounts", kind="internal", currency=currency)
                  if a["owner_name"] == "merchant fees"]
    return account


def assert_ledger_ok(client: TestClient) -> list[dict[str, Any]]:
    """Every journal's postings sum to zero, and the service's own checks pass."""
    journals = walk(client, "/journals")
    for journal in journals:
        assert sum(Decimal(p["amount"]["amount"]) for p in journal["postings"]) == 0, journal
        assert {p["amount"]["currency"] for p in journal["postings"]} == {journal["amount"]["currency"]}
    report = client.get("/invariants").json()
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    assert report["journals"] == len(journals)
    assert report["postings"] == sum(len(j["postings"]) for j in journals)
    return journals


# --- accounts -----------------------------------------------------------------------------------


def test_open_get_and_balance_of_an_account(client: TestClient) -> None:
    r = client.post("/accounts", json={"kind": "personal", "owner_name": "Li Wei"})
    assert r.status_code == 201
    account = r.json()
    assert account["id"].startswith("acc_")
    assert account["currency"] == "CNY"  # the default
    assert account["balance"] == money("0.00")
    assert account["allow_overdraft"] is False
    assert account["created_at"] == "2026-01-05T09:00:00Z"
    assert client.get(f"/accounts/{account['id']}").json() == account

    shop = open_account(client, "Ramen Ya", "merchant", "JPY")
    assert client.get(f"/accounts/{shop}").json()["kind"] == "merchant"
    top_up(client, account["id"], "88.80")
    b = client.get(f"/accounts/{account['id']}/balance").json()
    assert b == {"account_id": account["id"], "available": money("88.80"), "as_of": "2026-01-05T09:00:00Z"}
    assert client.get(f"/accounts/{shop}/balance").json()["available"] == money("0", "JPY")

    # Customers cannot open the system's internal accounts.
    r = client.post("/accounts", json={"kind": "internal", "owner_name": "Me", "currency": "CNY"})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["body.kind"]
    assert_ledger_ok(client)


def test_cursor_pagination_walks_every_account_once_in_order(client: TestClient) -> None:
    created = [open_account(client, f"Person {i}") for i in range(8)]
    created += [open_account(client, f"Shop {i}", "merchant", "USD") for i in range(3)]
    first = client.get("/accounts", params={"limit": 3}).json()
    assert len(first["data"]) == 3 and first["has_more"] is True

    for limit in (1, 3, 4, 11, 100):
        ids = [a["id"] for a in walk(client, "/accounts", limit=limit)]
        assert ids == sorted(created), limit  # every account, once, oldest first
    last = client.get("/accounts", params={"limit": 11}).json()
    assert last["has_more"] is False and last["next_cursor"] is None

    merchants = walk(client, "/accounts", limit=2, kind="merchant")
    assert [a["id"] for a in merchants] == created[8:]
    assert all(a["currency"] == "USD" for a in merchants)
    assert [a["id"] for a in walk(client, "/accounts", limit=2, currency="CNY")] == created[:8]
    for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "not a cursor!"}):
        r = client.get("/accounts", params=bad)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_cursor_pagination_of_journals_and_statements(client: TestClient) -> None:
    a, b = open_account(client, "A"), open_account(client, "B")
    for i in range(5):
        top_up(client, a, f"{10 + i}.00")
    pay(client, a, b, "1.00")
    top_up(client, b, "2.00")
    everything = [j["id"] for j in walk(client, "/journals")]
    assert len(everything) == len(set(everything)) == 7
    for limit in (1, 2, 3, 7):
        assert [j["id"] for j in walk(client, "/journals", limit=limit)] == everything
    statement_a = walk(client, f"/accounts/{a}/journals", limit=2)
    assert len(statement_a) == 6
    assert all(a in postings(j) for j in statement_a)
    statement_b = walk(client, f"/accounts/{b}/journals", limit=1)
    assert sorted(j["kind"] for j in statement_b) == ["deposit", "transfer"]


def test_journals_and_statements_are_oldest_first(client: TestClient) -> None:
    a, shop = open_account(client, "A"), open_account(client, "Shop", "merchant")
    order = [
        top_up(client, a, "50.00")["id"],
        client.post("/withdrawals", json={"account_id": a, "amount": money("1.00")}).json()["id"],
        pay(client, a, shop, "10.00")["id"],
    ]
    order.append(client.post("/refunds", json={"journal_id": order[-1], "amount": money("1.00")}).json()["id"])
    order.append(top_up(client, a, "5.00")["id"])
    assert [j["id"] for j in walk(client, "/journals")] == order
    assert [j["id"] for j in walk(client, f"/accounts/{a}/journals")] == order


# --- top-ups and test cards ---------------------------------------------------------------------


def test_a_top_up_credits_the_wallet_from_card_funding(client: TestClient) -> None:
    wallet = open_account(client, "Li Wei")
    journal = top_up(client, wallet, "100.00")
    assert journal["kind"] == "deposit"
    assert journal["card_last4"] == "4242"
    assert journal["amount"] == money("100.00") and journal["fee"] == money("0.00")
    assert journal["to_account_id"] == wallet
    funding = journal["from_account_id"]
    assert postings(journal) == {funding: "-100.00", wallet: "100.00"}
    assert client.get(f"/accounts/{funding}").json()["kind"] == "internal"
    assert balance(client, wallet) == "100.00"
    assert client.get(f"/journals/{journal['id']}").json() == journal
    assert_ledger_ok(client)


@pytest.mark.parametrize(("card", "code", "message"), [(c, *v) for c, v in DECLINE_CARDS.items()])
def test_each_documented_decline_card_is_a_402_and_writes_nothing(
    client: TestClient, card: str, code: str, message: str
) -> None:
    wallet = open_account(client, "Li Wei")
    top_up(client, wallet, "10.00")
    before = snapshot(client)
    r = client.post("/deposits", json={"account_id": wallet, "amount": money("50.00"), "card_number": card})
    assert r.status_code == 402
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == PROBLEM + "card-declined"
    assert problem["title"] == "The card was declined"
    assert problem["decline_code"] == code
    assert problem["detail"] == message
    assert snapshot(client) == before
    assert balance(client, wallet) == "10.00"
    assert_ledger_ok(client)


# --- withdrawals ----------------------------------------------------------------------------------


def test_withdrawing_more_than_the_balance_is_refused_and_the_exact_balance_is_not(client: TestClient) -> None:
    wallet = open_account(client, "Zhang Min")
    top_up(client, wallet, "30.00")
    before = snapshot(client)
    r = client.post("/withdrawals", json={"account_id": wallet, "amount": money("30.01")})
    assert r.status_code == 409
    assert r.json()["type"] == PROBLEM + "insufficient-funds"
    assert r.json()["title"] == "Insufficient funds"
    assert r.json()["account_id"] == wallet
    assert snapshot(client) == before

    r = client.post("/withdrawals", json={"account_id": wallet, "amount": money("30.00")})
    assert r.status_code == 201
    journal = r.json()
    assert journal["kind"] == "withdrawal"
    assert postings(journal) == {wallet: "-30.00", journal["to_account_id"]: "30.00"}
    assert balance(client, wallet) == "0.00"
    assert client.post("/withdrawals", json={"account_id": wallet, "amount": money("0.01")}).status_code == 409
    assert_ledger_ok(client)


# --- P2P transfers --------------------------------------------------------------------------------


def test_p2p_transfer_moves_the_amount_without_a_fee(client: TestClient) -> None:
    li, zhang = open_account(client, "Li Wei"), open_account(client, "Zhang Min")
    top_up(client, li, "100.00")
    r = client.post("/transfers", json={"from_account_id": li, "to_account_id": zhang,
                                        "amount": money("66.66"), "description": "red packet"})
    assert r.status_code == 201
    journal = r.json()
    assert journal["kind"] == "transfer" and journal["id"].startswith("tr_")
    assert journal["fee"] == money("0.00")
    assert journal["description"] == "red packet"
    assert postings(journal) == {li: "-66.66", zhang: "66.66"}
    after = {p["account_id"]: p["balance_after"]["amount"] for p in journal["postings"]}
    assert after == {li: "33.34", zhang: "66.66"}
    assert (balance(client, li), balance(client, zhang)) == ("33.34", "66.66")

    before = snapshot(client)
    too_much = client.post("/transfers", json={"from_account_id": li, "to_account_id": zhang, "amount": money("33.35")})
    assert too_much.status_code == 409 and too_much.json()["type"] == PROBLEM + "insufficient-funds"
    same = client.post("/transfers", json={"from_account_id": li, "to_account_id": li, "amount": money("1.00")})
    assert same.status_code == 409 and same.json()["type"] == PROBLEM + "same-account"
    assert snapshot(client) == before
    internal = top_up(client, li, "1.00")["from_account_id"]  # the card-funding account
    before = snapshot(client)
    r = client.post("/transfers", json={"from_account_id": internal, "to_account_id": li, "amount": money("1.00")})
    assert r.status_code == 409 and r.json()["type"] == PROBLEM + "internal-account"
    assert snapshot(client) == before
    assert_ledger_ok(client)


# --- merchant payments and the 0.6% fee --------------------------------------------------------

# 0.6% in minor units, rounded half up (services/payments/ledger.py: merchant_fee).
FEES = [
    ("100.00", "CNY", "0.60"),
    ("0.83", "CNY", "0.00"),  # 0.498 fen rounds down
    ("0.84", "CNY", "0.01"),  # 0.504 fen rounds up
    ("2.50", "CNY", "0.02"),  # exactly 1.5 fen: half rounds up
    ("2.49", "CNY", "0.01"),  # 1.494 fen
    ("1234.56", "CNY", "7.41"),  # 740.736 fen
    ("0.01", "CNY", "0.00"),
    ("1000", "JPY", "6"),
    ("250", "JPY", "2"),  # exactly 1.5 yen
    ("83", "JPY", "0"),
    ("10.000", "KWD", "0.060"),
    ("0.250", "KWD", "0.002"),  # exactly 1.5 fils
]


@pytest.mark.parametrize(("amount", "currency", "fee"), FEES)
def test_a_merchant_payment_posts_a_0_6_percent_fee_to_the_fee_account(
    client: TestClient, amount: str, currency: str, fee: str
) -> None:
    payer = open_account(client, "Li Wei", currency=currency)
    shop = open_account(client, "Noodles", "merchant", currency)
    top_up(client, payer, amount, currency)
    journal = pay(client, payer, shop, amount, currency)
    assert journal["kind"] == "payment" and journal["id"].startswith("pay_")
    assert journal["amount"] == money(amount, currency)
    assert journal["fee"] == money(fee, currency)
    fees = fee_account(client, currency)
    net = Decimal(amount) - Decimal(fee)
    exponent = -Decimal(amount).as_tuple().exponent if "." in amount else 0
    assert postings(journal) == {payer: f"-{amount}", shop: f"{net:.{exponent}f}", fees["id"]: fee}
    assert balance(client, shop) == f"{net:.{exponent}f}"
    assert fees["balance"] == money(fee, currency)
    assert fees["kind"] == "internal"
    assert_ledger_ok(client)


def test_fees_accumulate_on_one_fee_account_per_currency(client: TestClient) -> None:
    payer, shop = open_account(client, "Li Wei"), open_account(client, "Tea Stall", "merchant")
    top_up(client, payer, "500.00")
    for amount in ("100.00", "2.50", "0.84", "0.83"):
        pay(client, payer, shop, amount)
    assert fee_account(client)["balance"] == money("0.63")  # 0.60 + 0.02 + 0.01 + 0.00
    assert balance(client, shop) == "103.54"  # 104.17 paid, less the fees
    assert balance(client, payer) == "395.83"
    # Paying a person is not a merchant payment: no fee.
    friend = open_account(client, "Friend")
    assert pay(client, payer, friend, "100.00")["fee"] == money("0.00")
    assert fee_account(client)["balance"] == money("0.63")
    assert_ledger_ok(client)


# --- refunds ------------------------------------------------------------------------------------


def test_partial_refunds_then_one_past_the_remainder_is_refused(client: TestClient) -> None:
    payer, shop = open_account(client, "Li Wei"), open_account(client, "Noodles", "merchant")
    top_up(client, payer, "100.00")
    original = pay(client, payer, shop, "100.00")  # fee 0.60: the shop gets 99.40
    fees_id = fee_account(client)["id"]
    assert_ledger_ok(client)

    def refund(amount: str | None) -> Any:
        body: dict[str, Any] = {"journal_id": original["id"], "reason": "cold noodles"}
        if amount is not None:
            body["amount"] = money(amount)
        return client.post("/refunds", json=body)

    first = refund("30.00")
    assert first.status_code == 201, first.text
    r1 = first.json()
    assert r1["id"].startswith("re_") and r1["id"] != original["id"]
    assert r1["kind"] == "refund" and r1["refund_of"] == original["id"]
    assert r1["amount"] == money("30.00")
    assert r1["fee"] == money("0.18")  # the proportional share of the fee goes back too
    assert r1["description"] == "cold noodles"
    assert postings(r1) == {payer: "30.00", shop: "-29.82", fees_id: "-0.18"}
    assert_ledger_ok(client)

    # The original is never edited: same postings and amount, only its refunded total moves.
    again = client.get(f"/journals/{original['id']}").json()
    assert again["postings"] == original["postings"]
    assert {k: v for k, v in again.items() if k != "refunded"} == {k: v for k, v in original.items() if k != "refunded"}
    assert again["refunded"] == money("30.00")

    second = refund("50.00").json()
    assert second["fee"] == money("0.30")
    assert_ledger_ok(client)

    before = snapshot(client)
    for amount in ("20.01", "100.00"):
        r = refund(amount)
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == PROBLEM + "refund-exceeds-payment"
        assert r.json()["title"] == "Refund exceeds what is left to refund"
        assert r.json()["refundable"] == money("20.00")
    assert snapshot(client) == before

    last = refund(None)  # no amount: whatever is left
    assert last.status_code == 201
    assert last.json()["amount"] == money("20.00")
    assert last.json()["fee"] == money("0.12")  # the last refund takes the rest of the fee exactly
    assert balance(client, payer) == "100.00"
    assert balance(client, shop) == "0.00"
    assert fee_account(client)["balance"] == money("0.00")
    assert client.get(f"/journals/{original['id']}").json()["refunded"] == money("100.00")

    done = refund(None)
    assert done.status_code == 409 and done.json()["refundable"] == money("0.00")
    assert refund("0.01").status_code == 409
    refunds = [j for j in assert_ledger_ok(client) if j["refund_of"] == original["id"]]
    assert sorted(j["amount"]["amount"] for j in refunds) == ["20.00", "30.00", "50.00"]


def test_a_p2p_refund_has_no_fee_and_only_transfers_and_payments_are_refundable(client: TestClient) -> None:
    li, zhang = open_account(client, "Li Wei"), open_account(client, "Zhang Min")
    deposit = top_up(client, li, "50.00")
    transfer = pay(client, li, zhang, "20.00")
    r = client.post("/refunds", json={"journal_id": transfer["id"], "amount": money("5.00")})
    assert r.status_code == 201
    assert r.json()["fee"] == money("0.00")
    assert postings(r.json()) == {li: "5.00", zhang: "-5.00"}
    assert (balance(client, li), balance(client, zhang)) == ("35.00", "15.00")

    before = snapshot(client)
    for journal_id in (deposit["id"], r.json()["id"]):  # a top-up, a refund
        refused = client.post("/refunds", json={"journal_id": journal_id})
        assert refused.status_code == 422
        assert [e["field"] for e in refused.json()["errors"]] == ["body.journal_id"]
    assert snapshot(client) == before
    assert_ledger_ok(client)


def test_a_refund_the_merchant_cannot_cover_is_refused_and_writes_nothing(client: TestClient) -> None:
    payer, shop = open_account(client, "Li Wei"), open_account(client, "Noodles", "merchant")
    top_up(client, payer, "10.00")
    payment = pay(client, payer, shop, "10.00")
    assert client.post("/withdrawals", json={"account_id": shop, "amount": money("9.94")}).status_code == 201
    before = snapshot(client)
    r = client.post("/refunds", json={"journal_id": payment["id"]})
    assert r.status_code == 409
    assert r.json()["type"] == PROBLEM + "insufficient-funds"
    assert r.json()["account_id"] == shop
    assert snapshot(client) == before
    assert client.get(f"/journals/{payment['id']}").json()["refunded"] == money("0.00")
    assert_ledger_ok(client)
