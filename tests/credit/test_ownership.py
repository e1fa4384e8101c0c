"""Each lender reaches only its own applications, loans and bank consents, and credit collects a
repayment only under the mandate the borrower's account's owner gave that lender."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.demo import DEMO_LENDER
from services.credit.schemas import CHEN_REPAYMENT_MANDATE
from tests.credit.conftest import (
    CHEN_WALLET,
    CREDIT_PARTICIPANT,
    LENDER_KEY,
    ZHANG_MIN,
    Sandbox,
    application,
    sandbox_through_gateway,
)

WALLET_KEY = "sbx_demo_wallet_key"  # Demo Wallet Co: Chen's Tea Stall's account is its customer's


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox_through_gateway(tmp_path) as running:
        yield running


@pytest.fixture
def lender(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with sandbox.client(LENDER_KEY, "/credit") as client:
        yield client


@pytest.fixture
def other_lender(sandbox: Sandbox) -> Iterator[httpx.Client]:
    _, key = sandbox.admit("Second Lender", ["credit"])
    with sandbox.client(key, "/credit") as client:
        yield client


def chen_balance(sandbox: Sandbox) -> str:
    with sandbox.client(WALLET_KEY, "/payments") as wallet:
        return wallet.get(f"/accounts/{CHEN_WALLET}/balance").json()["available"]["amount"]


def disbursed_loan(lender: httpx.Client, **overrides: Any) -> dict[str, Any]:
    """Chen's loan from Demo Lender, paid out (20,000.00 over 12 months unless overridden)."""
    decided = lender.post("/applications", json=application(**overrides))
    assert decided.status_code == 201, decided.text
    paid = lender.post(f"/loans/{decided.json()['loan_id']}/disbursement")
    assert paid.status_code == 200, paid.text
    return paid.json()


def first_instalment(loan: dict[str, Any]) -> dict[str, str]:
    return loan["schedule"][0]["total"]


def test_another_lender_gets_404_for_the_first_lenders_application_and_loan(
    sandbox: Sandbox, lender: httpx.Client, other_lender: httpx.Client
) -> None:
    decided = lender.post("/applications", json=application(repayment_mandate_id=CHEN_REPAYMENT_MANDATE)).json()
    assert decided["participant_id"] == DEMO_LENDER
    app_id, loan_id = decided["id"], decided["loan_id"]

    for response in (other_lender.get(f"/applications/{app_id}"), other_lender.get(f"/loans/{loan_id}"),
                     other_lender.post(f"/loans/{loan_id}/disbursement"),
                     other_lender.post(f"/loans/{loan_id}/repayments",
                                       json={"amount": {"amount": "100.00", "currency": "CNY"}})):
        assert response.status_code == 404, response.text
        assert response.json()["type"].endswith(":not-found")
    assert other_lender.get("/applications").json()["data"] == []
    assert other_lender.get("/fairness").json()["stability"]["recent_applications"] == 0

    assert chen_balance(sandbox) == "800.00"  # the other lender's disbursal moved nothing
    assert [a["id"] for a in lender.get("/applications").json()["data"]] == [app_id]
    assert lender.get(f"/loans/{loan_id}").json()["status"] == "approved"


def test_another_lender_cannot_read_or_apply_with_the_first_lenders_bank_consent(
    lender: httpx.Client, other_lender: httpx.Client
) -> None:
    consent = lender.post("/open-banking/consents")
    assert consent.status_code == 201, consent.text
    consent_id = consent.json()["consent_id"]
    assert lender.get(f"/open-banking/consents/{consent_id}").status_code == 200

    assert other_lender.get(f"/open-banking/consents/{consent_id}").status_code == 404
    decided = other_lender.post(f"/open-banking/consents/{consent_id}/authorisation",
                                json={"psu_id": "wangfang", "otp": "123456"})
    assert decided.status_code == 404
    assert lender.get(f"/open-banking/consents/{consent_id}").json()["status"] == "AwaitingAuthorisation"
    applied = other_lender.post("/applications", json=application(cash_flow={
        "source": "open_banking", "consent_id": consent_id, "authorization_code": "any-code",
        "account_id": "acc_00000000000000000000000008"}))
    assert applied.status_code == 409
    assert applied.json()["type"].endswith(":consent-not-found")
    assert other_lender.get("/applications").json()["data"] == []


def test_the_lender_collects_a_repayment_under_the_borrowers_mandate(sandbox: Sandbox, lender: httpx.Client) -> None:
    loan = disbursed_loan(lender, repayment_mandate_id=CHEN_REPAYMENT_MANDATE)
    assert (loan["participant_id"], loan["repayment_mandate_id"]) == (DEMO_LENDER, CHEN_REPAYMENT_MANDATE)
    assert chen_balance(sandbox) == "20800.00"

    repaid = lender.post(f"/loans/{loan['id']}/repayments", json={"amount": first_instalment(loan)},
                         headers={"Idempotency-Key": "chen-first"})
    assert repaid.status_code == 201, repaid.text
    assert chen_balance(sandbox) == "19067.62"  # 20,800.00 - 1,732.38
    assert lender.get(f"/loans/{loan['id']}").json()["schedule"][0]["status"] == "paid"

    # Both movements are the lender's at the gateway: counted against it, sent by credit's key.
    moved = {e["idempotency_key"]: e for e in sandbox.audit(service="payments")
             if e["path"] == "/payments/transfers" and e["status"] == 201}
    for key in (f"{loan['id']}-payout-0", repaid.json()["id"]):
        assert (moved[key]["participant_id"], moved[key]["via"]) == (DEMO_LENDER, CREDIT_PARTICIPANT)


def test_a_repayment_without_a_mandate_is_refused_and_debits_nothing(sandbox: Sandbox, lender: httpx.Client) -> None:
    loan = disbursed_loan(lender)  # the application named no repayment mandate
    assert loan["repayment_mandate_id"] is None

    refused = lender.post(f"/loans/{loan['id']}/repayments", json={"amount": first_instalment(loan)},
                          headers={"Idempotency-Key": "chen-first"})
    assert refused.status_code == 403, refused.text
    problem = refused.json()
    assert problem["type"].endswith(":repayment-not-authorised")
    assert CHEN_WALLET in problem["detail"] and "names no repayment mandate" in problem["detail"]
    assert chen_balance(sandbox) == "20800.00"
    assert lender.get(f"/loans/{loan['id']}").json()["repaid"]["amount"] == "0.00"
    # Final: the same request gets the same answer, and still nothing moves.
    again = lender.post(f"/loans/{loan['id']}/repayments", json={"amount": first_instalment(loan)},
                        headers={"Idempotency-Key": "chen-first"})
    assert (again.status_code, again.json()["type"]) == (403, problem["type"])
    assert chen_balance(sandbox) == "20800.00"


def grant_mandate(sandbox: Sandbox, account_id: str, max_per_debit: str) -> str:
    """Demo Wallet Co lets Demo Lender debit its customer's account, for a month: the mandate id."""
    with sandbox.client(WALLET_KEY, "/payments") as wallet:
        granted = wallet.post("/mandates", json={
            "debtor_account_id": account_id, "grantee_participant_id": DEMO_LENDER,
            "max_per_debit": {"amount": max_per_debit, "currency": "CNY"},
            "max_per_period": {"amount": "100000.00", "currency": "CNY"}, "period": "month",
            "expires_at": (sandbox.clock.now() + timedelta(days=30)).isoformat(), "purpose": "Loan repayments"})
        assert granted.status_code == 201, granted.text
        return granted.json()["id"]


def revoked_demo_mandate(sandbox: Sandbox) -> str:
    with sandbox.client(WALLET_KEY, "/payments") as wallet:
        wallet.post(f"/mandates/{CHEN_REPAYMENT_MANDATE}/revoke").raise_for_status()
    return CHEN_REPAYMENT_MANDATE


@pytest.mark.parametrize(("mandate", "status", "slug"), [
    (revoked_demo_mandate, 403, "repayment-mandate-inactive"),
    (lambda sandbox: grant_mandate(sandbox, CHEN_WALLET, "100.00"), 403, "repayment-mandate-limit"),
    (lambda sandbox: grant_mandate(sandbox, ZHANG_MIN, "5000.00"), 409, "repayment-mandate-mismatch"),
], ids=["revoked", "above-its-cap", "for-another-account"])
def test_a_repayment_under_a_mandate_payments_will_not_honour_is_refused_and_debits_nothing(
    sandbox: Sandbox, lender: httpx.Client, mandate: Callable[[Sandbox], str], status: int, slug: str
) -> None:
    mandate_id = mandate(sandbox)
    loan = disbursed_loan(lender, repayment_mandate_id=mandate_id)

    refused = lender.post(f"/loans/{loan['id']}/repayments", json={"amount": first_instalment(loan)})
    assert refused.status_code == status, refused.text
    assert refused.json()["type"].endswith(f":{slug}")
    assert refused.json()["repayment_mandate_id"] == mandate_id
    assert chen_balance(sandbox) == "20800.00"
    assert lender.get(f"/loans/{loan['id']}").json()["repaid"]["amount"] == "0.00"
