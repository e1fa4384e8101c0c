"""Each participant keeps to its own customers' accounts.

Behind the gateway, payments learns the caller from `X-Sandbox-Participant` (the gateway sets it
after checking the key, and strips it from what participants send). A participant may pay any
account, but may only see, statement, top up, debit or refund from the accounts it opened; for
anything else the answer is the same 404 as for an account that does not exist. The sandbox's
own services are participants like any other here: they debit their own accounts, and another's
only under its owner's mandate (tests/payments/test_mandates.py). Direct callers on the
service's own port see and move everything; the gateway's screening look-ups read but never debit.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.common.demo import CREDIT_SERVICE, GATEWAY_LOOKUPS
from tests.payments.factories import CARD, MakeApp, as_, cny, open_funded

FIRM_A, FIRM_B = "ptp_firm_a", "ptp_firm_b"


@pytest.fixture
def payments(make_app: MakeApp) -> Iterator[TestClient]:
    with TestClient(make_app(seed_demo_data=False)) as client:
        yield client


def test_another_participant_cannot_see_or_debit_an_account_but_can_pay_it(payments: TestClient) -> None:
    alice = open_funded(payments, FIRM_A, "Alice")
    bob = open_funded(payments, FIRM_B, "Bob")
    journals_before = payments.get("/journals").json()["data"]

    for path in (f"/accounts/{alice}", f"/accounts/{alice}/balance", f"/accounts/{alice}/journals"):
        refused = payments.get(path, headers=as_(FIRM_B))
        assert refused.status_code == 404, path
        assert refused.json()["type"].endswith(":not-found")
    for path, body in (
        ("/transfers", {"from_account_id": alice, "to_account_id": bob, "amount": cny("1.00")}),
        ("/withdrawals", {"account_id": alice, "amount": cny("1.00")}),
        ("/deposits", {"account_id": alice, "amount": cny("1.00"), "card_number": CARD}),
    ):
        refused = payments.post(path, headers=as_(FIRM_B), json=body)
        assert refused.status_code == 404, (path, refused.text)
        assert alice in refused.json()["detail"]
    assert payments.get("/journals").json()["data"] == journals_before  # nothing was written

    paid = payments.post("/transfers", headers=as_(FIRM_B),
                         json={"from_account_id": bob, "to_account_id": alice, "amount": cny("5.00")})
    assert paid.status_code == 201
    assert payments.get(f"/accounts/{alice}/balance", headers=as_(FIRM_A)).json()["available"] == cny("105.00")
    # The payer sees the journal of its own payment; a third firm does not.
    assert payments.get(f"/journals/{paid.json()['id']}", headers=as_(FIRM_B)).status_code == 200
    assert payments.get(f"/journals/{paid.json()['id']}", headers=as_("ptp_firm_c")).status_code == 404


def test_lists_show_a_participant_only_its_own_accounts_and_their_journals(payments: TestClient) -> None:
    alice = open_funded(payments, FIRM_A, "Alice")
    bob = open_funded(payments, FIRM_B, "Bob")
    payments.post("/transfers", headers=as_(FIRM_A), json={"from_account_id": alice, "to_account_id": bob,
                                                           "amount": cny("7.00")})

    def ids(path: str, participant: str | None) -> set[str]:
        headers = as_(participant) if participant else {}
        return {item["id"] for item in payments.get(path, headers=headers, params={"limit": 100}).json()["data"]}

    assert ids("/accounts", FIRM_A) == {alice}
    assert ids("/accounts", FIRM_B) == {bob}
    assert {alice, bob} <= ids("/accounts", None)  # a direct caller sees the whole ledger
    a_journals, b_journals = ids("/journals", FIRM_A), ids("/journals", FIRM_B)
    assert len(a_journals) == 2 and len(b_journals) == 2  # each one's top-up, and the transfer both touched
    assert a_journals & b_journals == {j for j in a_journals if j.startswith("tr_")}
    assert ids("/journals", "ptp_firm_c") == set()


def test_only_the_payees_participant_may_refund(payments: TestClient) -> None:
    shopper = open_funded(payments, FIRM_A, "Shopper")
    shop = open_funded(payments, FIRM_B, "Shop", kind="merchant")
    paid = payments.post("/transfers", headers=as_(FIRM_A), json={
        "from_account_id": shopper, "to_account_id": shop, "amount": cny("10.00")}).json()
    # The shopper's firm cannot pull the money back out of the merchant's account.
    assert payments.post("/refunds", headers=as_(FIRM_A), json={"journal_id": paid["id"]}).status_code == 404
    refund = payments.post("/refunds", headers=as_(FIRM_B), json={"journal_id": paid["id"]})
    assert refund.status_code == 201 and refund.json()["amount"] == cny("10.00")


def test_a_service_debits_only_its_own_accounts_and_a_direct_caller_any(payments: TestClient) -> None:
    alice = open_funded(payments, FIRM_A, "Alice")
    float_ = open_funded(payments, CREDIT_SERVICE, "Lender float", kind="merchant")
    # No key is mandated for everything: without Firm A's mandate, the credit service cannot
    # collect from Firm A's customer (the same 404 as for a missing account).
    collect = {"from_account_id": alice, "to_account_id": float_, "amount": cny("20.00")}
    refused = payments.post("/transfers", headers=as_(CREDIT_SERVICE), json=collect)
    assert refused.status_code == 404 and alice in refused.json()["detail"]
    # Its own float it moves freely; a direct caller on the service's port moves anything.
    paid_out = payments.post("/transfers", headers=as_(CREDIT_SERVICE), json={
        "from_account_id": float_, "to_account_id": alice, "amount": cny("30.00")})
    assert paid_out.status_code == 201 and paid_out.json()["mandate_id"] is None
    assert payments.post("/transfers", json=collect).status_code == 201
    assert payments.get(f"/accounts/{alice}").json()["balance"] == cny("110.00")
    assert payments.get("/invariants").json()["ok"] is True


def test_the_gateways_look_ups_read_but_never_debit(payments: TestClient) -> None:
    alice = open_funded(payments, FIRM_A, "Alice")
    bob = open_funded(payments, FIRM_B, "Bob")
    assert payments.get(f"/accounts/{alice}", headers=as_(GATEWAY_LOOKUPS)).status_code == 200
    for path, body in (
        ("/transfers", {"from_account_id": alice, "to_account_id": bob, "amount": cny("1.00")}),
        ("/withdrawals", {"account_id": alice, "amount": cny("1.00")}),
    ):
        assert payments.post(path, headers=as_(GATEWAY_LOOKUPS), json=body).status_code == 404, path
    assert payments.get(f"/accounts/{alice}").json()["balance"] == cny("100.00")


def test_nobody_withdraws_from_an_internal_account(payments: TestClient) -> None:
    shopper = open_funded(payments, FIRM_A, "Shopper")
    shop = open_funded(payments, FIRM_B, "Shop", kind="merchant")
    paid = payments.post("/transfers", headers=as_(FIRM_A), json={
        "from_account_id": shopper, "to_account_id": shop, "amount": cny("100.00")}).json()
    # The fee account shows on the payment's postings; it has no owner, yet cannot be paid out.
    fees = next(p["account_id"] for p in paid["postings"] if p["account_id"] not in (shopper, shop))
    for headers in (as_(FIRM_A), {}):
        refused = payments.post("/withdrawals", headers=headers, json={"account_id": fees, "amount": cny("0.60")})
        assert refused.status_code == 409 and refused.json()["type"].endswith(":internal-account")


def _balances_shown(journal: dict) -> dict[str, str | None]:
    return {p["account_id"]: p["balance_after"] and p["balance_after"]["amount"] for p in journal["postings"]}


def test_a_firm_sees_its_own_customers_balances_only(payments: TestClient) -> None:
    """A payment between two firms' customers: each firm sees its own customer's balance after
    it, never the other firm's customer's nor the sandbox's own accounts'; a direct caller sees all."""
    alice = open_funded(payments, FIRM_A, "Alice")
    bob = open_funded(payments, FIRM_B, "Bob")
    paid = payments.post("/transfers", headers=as_(FIRM_A),
                         json={"from_account_id": alice, "to_account_id": bob, "amount": cny("5.00")})
    assert paid.status_code == 201, paid.text
    assert _balances_shown(paid.json()) == {alice: "95.00", bob: None}
    journal = paid.json()["id"]
    assert _balances_shown(payments.get(f"/journals/{journal}", headers=as_(FIRM_B)).json()) == {
        alice: None, bob: "105.00"}
    listed = payments.get("/journals", headers=as_(FIRM_B)).json()["data"]
    assert _balances_shown(next(j for j in listed if j["id"] == journal)) == {alice: None, bob: "105.00"}
    assert _balances_shown(payments.get(f"/journals/{journal}").json()) == {alice: "95.00", bob: "105.00"}
    # A top-up: the card funding account is the sandbox's own, its balance everyone's business but none.
    topped = payments.post("/deposits", headers=as_(FIRM_A),
                           json={"account_id": alice, "amount": cny("1.00"), "card_number": CARD}).json()
    shown = _balances_shown(topped)
    assert shown.pop(alice) == "96.00" and set(shown.values()) == {None}


def test_each_firms_event_shows_its_own_customers_balance_only(payments: TestClient) -> None:
    alice = open_funded(payments, FIRM_A, "Alice")
    bob = open_funded(payments, FIRM_B, "Bob")
    paid = payments.post("/transfers", headers=as_(FIRM_A),
                         json={"from_account_id": alice, "to_account_id": bob, "amount": cny("5.00")}).json()
    events = {e["type"]: e for e in payments.get("/_sandbox/events", params={"limit": 500}).json()["data"]
              if e["subject_id"] == paid["id"]}
    assert events["payments.transfer.completed"]["participant_id"] == FIRM_A
    assert _balances_shown(events["payments.transfer.completed"]["data"]) == {alice: "95.00", bob: None}
    assert events["payments.transfer.received"]["participant_id"] == FIRM_B
    assert _balances_shown(events["payments.transfer.received"]["data"]) == {alice: None, bob: "105.00"}
