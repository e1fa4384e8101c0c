"""From application to money in the wallet, with the real payments ledger over real HTTP."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from tests.credit.conftest import (
    CHEN_WALLET,
    LENDER_FLOAT,
    ZHANG_MIN,
    amount,
    application,
    credit_app,
)
from tests.support.servers import balance, payments_behind_gateway


def test_chen_applies_and_the_loan_lands_in_the_wallet(tmp_path: Path, database_url: str | None) -> None:
    with payments_behind_gateway(tmp_path) as base, TestClient(
        credit_app(tmp_path, httpx.Client(base_url=base), database_url)
    ) as credit:
        decided = credit.post("/applications", json=application()).json()
        loan = credit.post(f"/loans/{decided['loan_id']}/disbursement").json()
        assert loan["status"] == "disbursed"
        assert loan["disbursement"]["amount"] == {"amount": "20000.00", "currency": "CNY"}
        journal = httpx.get(f"{base}/payments/journals/{loan['disbursement']['journal_id']}").json()
        assert (journal["from_account_id"], journal["to_account_id"]) == (LENDER_FLOAT, CHEN_WALLET)
        # Lender float and Chen's stall are both merchant accounts: a fee-free business transfer,
        # so the whole loan lands.
        assert loan["disbursement"]["fee_charged_by_payments"] == {"amount": "0.00", "currency": "CNY"}
        assert balance(base, CHEN_WALLET) == "20800.00"
        assert balance(base, LENDER_FLOAT) == "9980000.00"
        assert len(loan["schedule"]) == 12 and loan["outstanding"]["amount"] == "20788.54"
        assert credit.get(f"/applications/{decided['id']}").json()["timings"]["disbursed_at"]
        assert httpx.get(f"{base}/payments/invariants").json()["ok"]


def test_disbursing_twice_pays_once(tmp_path: Path) -> None:
    with payments_behind_gateway(tmp_path) as base, TestClient(
        credit_app(tmp_path, httpx.Client(base_url=base))
    ) as credit:
        loan_id = credit.post("/applications", json=application()).json()["loan_id"]
        first = credit.post(f"/loans/{loan_id}/disbursement").json()
        second = credit.post(f"/loans/{loan_id}/disbursement").json()
        assert first == second
        assert balance(base, LENDER_FLOAT) == "9980000.00"


def test_a_refused_payout_leaves_the_loan_undisbursed_and_moves_no_money(tmp_path: Path) -> None:
    # The lender's float is a wallet holding CNY 1,200: payments refuses for insufficient funds.
    with payments_behind_gateway(tmp_path) as base, TestClient(
        credit_app(tmp_path, httpx.Client(base_url=base), lender_account_id=ZHANG_MIN)
    ) as credit:
        loan_id = credit.post("/applications", json=application()).json()["loan_id"]
        response = credit.post(f"/loans/{loan_id}/disbursement")
        assert response.status_code == 409
        assert response.json()["type"].endswith("payout-refused")
        assert response.json()["payments_problem"]["type"].endswith("insufficient-funds")
        loan = credit.get(f"/loans/{loan_id}").json()
        assert (loan["status"], loan["disbursement"], loan["schedule"]) == ("approved", None, [])
        assert loan["last_payout_error"]["status"] == 409
        assert (balance(base, ZHANG_MIN), balance(base, CHEN_WALLET)) == ("1200.00", "800.00")


def test_payments_down_leaves_the_loan_undisbursed_and_a_retry_pays_once(tmp_path: Path) -> None:
    app = credit_app(tmp_path)  # its gateway address has nothing listening
    with TestClient(app) as credit:
        loan_id = credit.post("/applications", json=application()).json()["loan_id"]
        response = credit.post(f"/loans/{loan_id}/disbursement")
        assert response.status_code == 503
        assert credit.get(f"/loans/{loan_id}").json()["status"] == "approved"
        with payments_behind_gateway(tmp_path) as base:
            assert balance(base, CHEN_WALLET) == "800.00"
            app.state.payments.http = httpx.Client(base_url=base)  # payments is back
            assert credit.post(f"/loans/{loan_id}/disbursement").json()["status"] == "disbursed"
            assert credit.post(f"/loans/{loan_id}/disbursement").json()["status"] == "disbursed"
            assert balance(base, LENDER_FLOAT) == "9980000.00"


def test_a_payout_retried_after_a_lost_answer_is_not_paid_twice(tmp_path: Path) -> None:
    # Payments applied the transfer but the answer never arrived: the retry reuses the key.
    with payments_behind_gateway(tmp_path) as base, TestClient(
        credit_app(tmp_path, httpx.Client(base_url=base))
    ) as credit:
        loan_id = credit.post("/applications", json=application()).json()["loan_id"]
        httpx.post(f"{base}/payments/transfers", headers={"Idempotency-Key": f"{loan_id}-payout-0"}, json={
            "from_account_id": LENDER_FLOAT, "to_account_id": CHEN_WALLET,
            "amount": {"amount": "20000.00", "currency": "CNY"}, "description": f"Loan {loan_id} disbursement",
        }).raise_for_status()
        loan = credit.post(f"/loans/{loan_id}/disbursement").json()
        assert loan["status"] == "disbursed"
        assert balance(base, LENDER_FLOAT) == "9980000.00"


def test_repayments_go_back_to_the_lender_and_clear_the_schedule(tmp_path: Path) -> None:
    with payments_behind_gateway(tmp_path) as base, TestClient(
        credit_app(tmp_path, httpx.Client(base_url=base))
    ) as credit:
        body = application(requested_amount={"amount": "600.00", "currency": "CNY"}, term_months=2)
        loan_id = credit.post("/applications", json=body).json()["loan_id"]
        loan = credit.post(f"/loans/{loan_id}/disbursement").json()
        first = loan["schedule"][0]["total"]
        rep = credit.post(f"/loans/{loan_id}/repayments", json={"amount": first}, headers={"Idempotency-Key": "k1"})
        assert rep.status_code == 201
        again = credit.post(f"/loans/{loan_id}/repayments", json={"amount": first}, headers={"Idempotency-Key": "k1"})
        assert again.json() == rep.json()
        loan = credit.get(f"/loans/{loan_id}").json()
        assert [i["status"] for i in loan["schedule"]] == ["paid", "scheduled"]  # the second is not due yet
        too_much = credit.post(f"/loans/{loan_id}/repayments", json={"amount": {"amount": "9999.00", "currency": "CNY"}})
        assert too_much.status_code == 409
        credit.post(f"/loans/{loan_id}/repayments", json={"amount": loan["outstanding"]}).raise_for_status()
        loan = credit.get(f"/loans/{loan_id}").json()
        assert (loan["status"], loan["outstanding"]["amount"]) == ("repaid", "0.00")
        journals = httpx.get(f"{base}/payments/accounts/{LENDER_FLOAT}/journals").json()["data"]
        repayments = [j for j in journals if j["to_account_id"] == LENDER_FLOAT and j["kind"] != "opening"]
        assert [j["from_account_id"] for j in repayments] == [CHEN_WALLET, CHEN_WALLET]
        assert httpx.get(f"{base}/payments/invariants").json()["ok"]


def test_a_repayment_the_wallet_cannot_cover_is_refused(tmp_path: Path) -> None:
    with payments_behind_gateway(tmp_path) as base, TestClient(
        credit_app(tmp_path, httpx.Client(base_url=base))
    ) as credit:
        loan_id = credit.post("/applications", json=application(term_months=24)).json()["loan_id"]
        credit.post(f"/loans/{loan_id}/disbursement").raise_for_status()
        # Chen now holds at most CNY 20,800 (the payout is a fee-free business transfer); the whole loan
        # with 24 months of interest is more than that.
        outstanding = credit.get(f"/loans/{loan_id}").json()["outstanding"]
        assert amount(outstanding) > Decimal(balance(base, CHEN_WALLET))
        response = credit.post(f"/loans/{loan_id}/repayments", json={"amount": outstanding})
        assert response.status_code == 409
        assert response.json()["type"].endswith("repayment-refused")
        assert credit.get(f"/loans/{loan_id}").json()["repaid"]["amount"] == "0.00"
