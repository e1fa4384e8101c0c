"""Monte Carlo projections: reproducible from a seed, with the fee drag shown."""

from __future__ import annotations

from decimal import Decimal

from fastapi.testclient import TestClient

REQUEST = {"risk_level": 11, "initial": {"amount": "10000.00", "currency": "CNY"}, "years": 30,
           "paths": 2000, "seed": 7}


def test_projections_are_reproducible_from_a_seed(advisor: TestClient) -> None:
    first = advisor.post("/projections", json=REQUEST).json()
    again = advisor.post("/projections", json=REQUEST).json()
    other = advisor.post("/projections", json={**REQUEST, "seed": 8}).json()
    assert first == again
    assert first["scenarios"] != other["scenarios"]


def test_percentiles_are_ordered_and_the_adviser_fee_costs_more(advisor: TestClient) -> None:
    body = advisor.post("/projections", json={**REQUEST, "monthly_contribution": {"amount": "500", "currency": "CNY"}}).json()
    robo, adviser = body["scenarios"]
    assert (robo["annual_fee"], adviser["annual_fee"]) == (0.0025, 0.015)
    for year in robo["years"][1:]:
        values = [Decimal(year[k]["amount"]) for k in ("p5", "p25", "p50", "p75", "p95")]
        assert values == sorted(values)
    final_robo, final_adviser = robo["years"][-1], adviser["years"][-1]
    assert final_robo["contributed"]["amount"] == "190000.00"
    for k in ("p5", "p50", "p95"):  # same draws for both fees: the gap is the fee alone
        assert Decimal(final_robo[k]["amount"]) > Decimal(final_adviser[k]["amount"])
    drag = Decimal(final_robo["p50"]["amount"]) - Decimal(final_adviser["p50"]["amount"])
    assert Decimal(body["median_fee_drag"]["amount"]) == drag > 0
