"""Credit's domain events (GET /_sandbox/events): each commits with its change, a refusal leaves
none, a retried call records no second one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.credit.conftest import application, credit_app
from tests.support.servers import payments_behind_gateway


def events(credit: TestClient) -> list[dict[str, Any]]:
    return credit.get("/_sandbox/events").json()["data"]


def test_a_decision_is_an_event_with_the_application_as_the_api_shows_it(credit: TestClient) -> None:
    approved = credit.post("/applications", json=application()).json()
    declined = credit.post("/applications", json=application(applicant_name="Test Decline")).json()
    recorded = events(credit)
    assert [(e["type"], e["subject_id"]) for e in recorded] == [
        ("credit.application.decided", approved["id"]), ("credit.application.decided", declined["id"])]
    assert recorded[0]["data"] == credit.get(f"/applications/{approved['id']}").json()
    assert recorded[1]["data"]["decision"]["outcome"] == "decline"


def test_a_refused_application_records_no_event(credit: TestClient) -> None:
    refused = credit.post("/applications", json=application(requested_amount={"amount": "10.00", "currency": "USD"}))
    assert refused.status_code == 409
    assert events(credit) == []


def test_a_disbursal_is_an_event_once_payments_has_paid(tmp_path: Path, database_url: str | None) -> None:
    with payments_behind_gateway(tmp_path) as base, TestClient(
        credit_app(tmp_path, httpx.Client(base_url=base), database_url)
    ) as credit:
        loan_id = credit.post("/applications", json=application()).json()["loan_id"]
        first = credit.post(f"/loans/{loan_id}/disbursement").json()
        credit.post(f"/loans/{loan_id}/disbursement").raise_for_status()  # already paid: no second event
        disbursed = [e for e in events(credit) if e["type"] == "credit.loan.disbursed"]
    assert [e["subject_id"] for e in disbursed] == [loan_id]
    assert disbursed[0]["data"] == first and disbursed[0]["data"]["status"] == "disbursed"


def test_a_refused_payout_records_no_disbursal(tmp_path: Path) -> None:
    app = credit_app(tmp_path)  # nothing listens where payments would be
    with TestClient(app) as credit:
        loan_id = credit.post("/applications", json=application()).json()["loan_id"]
        assert credit.post(f"/loans/{loan_id}/disbursement").status_code == 503
        assert [e["type"] for e in events(credit)] == ["credit.application.decided"]


def test_a_repayment_retried_with_its_key_pays_the_instalment_once(tmp_path: Path) -> None:
    with payments_behind_gateway(tmp_path) as base, TestClient(
        credit_app(tmp_path, httpx.Client(base_url=base))
    ) as credit:
        loan_id = credit.post("/applications", json=application()).json()["loan_id"]
        first = credit.post(f"/loans/{loan_id}/disbursement").json()["schedule"][0]["total"]
        for _ in range(2):
            credit.post(f"/loans/{loan_id}/repayments", json={"amount": first},
                        headers={"Idempotency-Key": "k1"}).raise_for_status()
        paid = [e for e in events(credit) if e["type"] == "credit.instalment.paid"]
    assert [(e["subject_id"], e["data"]["loan_id"], e["data"]["number"], e["data"]["status"]) for e in paid] == [
        (loan_id, loan_id, 1, "paid")]
