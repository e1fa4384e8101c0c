"""The credit API as a lender's front end sees it (the service alone, no payments needed)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.credit.conftest import application


def test_chen_is_approved_with_score_reasons_terms_and_timings(credit: TestClient) -> None:
    response = credit.post("/applications", json=application())
    assert response.status_code == 201
    body = response.json()
    assert body["score"]["score"] == sum(p["points"] for p in body["score"]["points"])
    assert body["score"]["band"] == "excellent"
    assert body["decision"] | {"limit": None} == {
        "outcome": "approve", "rule": "score", "risk_tier": "A", "apr_percent": "7.20",
        "limit": None, "amount_offered": {"amount": "20000.00", "currency": "CNY"},
    }
    assert [r["code"] for r in body["score"]["reasons"]][:2] == ["LOW_TRANSACTION_FLOW", "SHORT_HISTORY"]
    assert body["loan_id"].startswith("loan_")
    assert body["timings"]["received_at"] and body["timings"]["decided_at"]
    assert body["timings"]["disbursed_at"] is None
    assert credit.get(f"/applications/{body['id']}").json() == body


def test_the_limit_is_a_line_across_loans_not_a_cap_per_loan(credit: TestClient) -> None:
    """Chen's line is 55,800.00: 20,000 and 20,000 leave 15,800 to offer, then nothing."""
    offered = []
    for _ in range(4):
        body = credit.post("/applications", json=application()).json()
        offered.append((body["decision"]["outcome"], body["decision"]["rule"],
                        (body["decision"]["amount_offered"] or {}).get("amount"), body["loan_id"] is not None))
    assert offered == [("approve", "score", "20000.00", True), ("approve", "score", "20000.00", True),
                       ("approve", "score", "15800.00", True), ("decline", "credit-line-used", None, False)]
    assert body["decision"]["limit"] == {"amount": "55800.00", "currency": "CNY"}
    # Another borrower's line is their own.
    other = credit.post("/applications", json=application(account_id="acc_00000000000000000000000002")).json()
    assert other["decision"]["amount_offered"] == {"amount": "20000.00", "currency": "CNY"}


def test_a_weak_applicant_is_declined_with_four_reasons_and_no_loan(credit: TestClient) -> None:
    body = credit.post("/applications", json=application(
        monthly_inflow={"amount": "1500.00", "currency": "CNY"}, inflow_volatility_pct=85,
        months_in_business=2, utility_bills_on_time_pct=None,
    )).json()
    assert body["decision"]["outcome"] == "decline"
    assert body["loan_id"] is None and body["decision"]["amount_offered"] is None
    assert len(body["score"]["reasons"]) == 4


def test_magic_applicants_force_decline_and_refer(credit: TestClient) -> None:
    declined = credit.post("/applications", json=application(applicant_name="Test Decline")).json()
    referred = credit.post("/applications", json=application(applicant_name="Test Refer")).json()
    assert (declined["decision"]["outcome"], declined["decision"]["rule"]) == ("decline", "magic-applicant")
    assert (referred["decision"]["outcome"], referred["loan_id"]) == ("refer", None)


def test_monitoring_data_is_stored_but_never_changes_the_score(credit: TestClient) -> None:
    scores = {
        credit.post("/applications", json=application(monitoring=m)).json()["score"]["score"]
        for m in (None, {"sex": "F", "age_band": "18-29"}, {"sex": "M", "age_band": "60+"})
    }
    assert len(scores) == 1


def test_another_currency_is_refused_as_a_business_rule(credit: TestClient) -> None:
    response = credit.post("/applications", json=application(requested_amount={"amount": "100.00", "currency": "USD"}))
    assert response.status_code == 409
    assert response.json()["type"].endswith("currency-not-supported")


def test_an_unknown_field_is_a_validation_error(credit: TestClient) -> None:
    response = credit.post("/applications", json=application(age=30))
    assert response.status_code == 422


def test_open_banking_source_without_a_reachable_bank_is_a_503(credit: TestClient) -> None:
    body = application(cash_flow={"source": "open_banking", "consent_id": "aac_" + "0" * 26,
                                  "account_id": "acc_" + "0" * 26, "authorization_code": "sbx_code_x"})
    response = credit.post("/applications", json=body)
    assert response.status_code == 503
    assert response.json()["type"].endswith(":open-banking-unavailable")
    assert credit.post("/open-banking/consents").status_code == 503
    assert credit.get("/applications").json()["data"] == []


def test_the_scorecard_table_and_model_version_are_published(credit: TestClient) -> None:
    table = credit.get("/scorecard").json()
    model = credit.get("/model").json()
    assert table["model_version"] == model["model_version"] == "sc-2026.1"
    assert table["scaling"]["pdo"] == 48
    assert {c["name"] for c in table["characteristics"]} == set(model["inputs"])
    assert "sex" not in model["inputs"] and "age_band" not in model["inputs"]


def test_what_if_scoring_stores_nothing(credit: TestClient) -> None:
    body = application()
    score = credit.post("/scores", json={"cash_flow": body["cash_flow"], "records": body["records"]}).json()
    assert score["score"] == credit.post("/applications", json=body).json()["score"]["score"]
    assert len(credit.get("/applications").json()["data"]) == 1


def test_fairness_report_flags_the_age_proxy_on_the_holdout(credit: TestClient) -> None:
    report = credit.get("/fairness").json()
    assert report["holdout"]["sex"]["flagged"] is False
    assert report["holdout"]["age_band"]["demographic_parity_ratio"] < 0.8
    assert report["holdout"]["age_band"]["flagged"] is True
    assert any("age_band" in flag for flag in report["flags"])
    assert report["stability"]["status"] == "insufficient-data"


def test_population_stability_flags_a_shift_in_recent_applicants(credit: TestClient) -> None:
    for i in range(20):  # twenty strong applicants (twenty borrowers): nothing like the training population
        credit.post("/applications", json=application(account_id=f"acc_{i:026d}",
                                                      monitoring={"sex": "F", "age_band": "30-44"}))
    report = credit.get("/fairness").json()
    assert report["stability"]["recent_applications"] == 20
    assert report["stability"]["psi"] > 0.25
    assert report["stability"]["status"] == "significant-shift"
    assert report["recent_applicants"]["sex"]["groups"] == [{"group": "F", "count": 20, "approval_rate": 1.0,
                                                              "true_positive_rate": None, "false_positive_rate": None}]


def test_an_unknown_loan_is_404(credit: TestClient) -> None:
    assert credit.get("/loans/loan_00000000000000000000000000").status_code == 404
    assert credit.post("/loans/loan_00000000000000000000000000/disbursement").status_code == 404
