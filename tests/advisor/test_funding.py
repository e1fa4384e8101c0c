"""Funding an investor account by a real transfer in payments."""

from __future__ import annotations

from decimal import Decimal

from fastapi.testclient import TestClient

from tests.advisor.conftest import (
    CUSTODY,
    LI_WEI,
    advisor_app,
    deposit,
    funded_account,
    open_account,
)
from tests.support.servers import balance, payments_behind_gateway


def test_deposit_moves_money_from_the_wallet_to_custody_and_buys_units(advisor: TestClient, payments: str) -> None:
    account_id = open_account(advisor)
    response = deposit(advisor, account_id, "1000.00")
    body = response.json()
    assert response.status_code == 201, body
    assert body["status"] == "completed" and body["payments_journal_id"].startswith("pay_")
    assert balance(payments, LI_WEI) == "4000.00"
    assert balance(payments, CUSTODY) == "994.00"  # a merchant account: payments keeps its 0.6% fee
    assert body["merchant_fee"] == {"amount": "6.00", "currency": "CNY"}
    bought = sum(int(t["amount"]["amount"].replace(".", "")) for t in body["trades"])
    account = advisor.get(f"/accounts/{account_id}").json()
    assert account["status"] == "active" and account["deposited"]["amount"] == "1000.00"
    assert bought + int(account["cash"]["amount"].replace(".", "")) == 100000
    assert account["drift"] < 0.01


def test_first_deposit_below_the_minimum_is_refused_and_moves_nothing(advisor: TestClient, payments: str) -> None:
    account_id = open_account(advisor)
    response = deposit(advisor, account_id, "99.99")
    assert response.status_code == 409
    assert response.json()["type"].endswith("below-minimum-first-deposit")
    assert balance(payments, LI_WEI) == "5000.00"
    assert deposit(advisor, account_id, "100.00").status_code == 201
    assert deposit(advisor, account_id, "5.00").status_code == 201  # only the first deposit has a minimum


def test_a_refused_transfer_leaves_no_units_bought(advisor: TestClient, payments: str) -> None:
    account_id = open_account(advisor)
    response = deposit(advisor, account_id, "6000.00")  # Li Wei holds 5,000
    problem = response.json()
    assert response.status_code == 409 and problem["type"].endswith("funding-failed")
    assert problem["payments_problem"]["type"].endswith("insufficient-funds")
    assert advisor.get(f"/deposits/{problem['deposit_id']}").json()["status"] == "failed"
    account = advisor.get(f"/accounts/{account_id}").json()
    assert account["holdings"] == [] and account["cash"]["amount"] == "0.00"
    assert balance(payments, LI_WEI) == "5000.00"


def test_a_retried_deposit_request_pays_once(advisor: TestClient, payments: str) -> None:
    account_id = open_account(advisor)
    first = deposit(advisor, account_id, "500.00", **{"Idempotency-Key": "deposit-once"})
    again = deposit(advisor, account_id, "500.00", **{"Idempotency-Key": "deposit-once"})
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json() == first.json()
    assert balance(payments, LI_WEI) == "4500.00"


def test_a_deposit_left_pending_by_an_outage_completes_once_on_retry(tmp_path) -> None:
    with payments_behind_gateway(tmp_path) as payments:
        app = advisor_app(tmp_path)  # its payments client points at a closed port
        with TestClient(app) as advisor:
            account_id = open_account(advisor)
            pending = deposit(advisor, account_id, "800.00").json()
            assert pending["status"] == "pending" and pending["trades"] == []
            assert balance(payments, LI_WEI) == "5000.00"
            app.state.advisor.payments.http.base_url = payments  # payments is back
            done = advisor.post(f"/deposits/{pending['id']}/retry").json()
            again = advisor.post(f"/deposits/{pending['id']}/retry").json()
            assert done["status"] == again["status"] == "completed"
            assert done["payments_journal_id"] == again["payments_journal_id"]
            assert balance(payments, LI_WEI) == "4200.00"


def test_funding_works_on_every_database(tmp_path, database_url) -> None:
    with payments_behind_gateway(tmp_path) as payments:
        with TestClient(advisor_app(tmp_path, payments, database_url=database_url)) as advisor:
            account_id = funded_account(advisor, "2000.00")
            value = advisor.get(f"/accounts/{account_id}").json()["value"]["amount"]
            assert Decimal("1999.90") <= Decimal(value) <= Decimal("2000.00")  # units round down
            assert balance(payments, LI_WEI) == "3000.00"
