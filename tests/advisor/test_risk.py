"""The risk questionnaire: a published 0-10 scale, explained, lowered by inconsistency."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.advisor.conftest import answers


def test_a_30_year_old_with_medium_risk_lands_near_60_40(advisor: TestClient) -> None:
    profile = advisor.post("/risk-profiles", json=answers()).json()
    recommended = profile["recommended"]
    assert 0.55 <= recommended["equity_share"] <= 0.65
    assert recommended["bond_share"] == pytest.approx(1 - recommended["equity_share"])
    assert 0 <= profile["score"] <= 10 and profile["score"] * 2 == profile["level"]


def test_each_answer_s_contribution_adds_up_to_the_score(advisor: TestClient) -> None:
    profile = advisor.post("/risk-profiles", json=answers()).json()
    parts = {c["question"]: c for c in profile["contributions"]}
    assert {"Age", "Investment horizon (years)", "Annual income (CNY)", "Liquid net worth (CNY)",
            "Investing experience", "Consistency of your answers"} <= set(parts)
    assert all(c["explanation"] for c in profile["contributions"])
    total = sum(c["score_contribution"] for c in profile["contributions"])
    assert total == pytest.approx(profile["raw_score"], abs=1e-3)
    assert profile["score"] == int(profile["raw_score"] * 2) / 2  # rounded down to the 0.5 step


def test_every_answer_has_a_row_and_the_goal_explains_its_glide_path(advisor: TestClient) -> None:
    body = answers()
    profile = advisor.post("/risk-profiles", json={**body, "goal": "education", "horizon_years": 10}).json()
    answered = {c["answer"] for c in profile["contributions"]}
    assert {"education", "hold", "balanced"} <= answered
    goal = next(c for c in profile["contributions"] if c["part"] == "goal")
    assert (goal["question"], goal["points"], goal["score_contribution"]) == ("Goal", 0.0, 0.0)
    # Education glides from 90% equities 20 years out to 0% at the date: 45% with 10 years left.
    assert "45% equities" in goal["explanation"]
    assert profile["recommended"]["equity_share"] <= 0.45 + 1e-9


def test_inconsistent_answers_lower_the_score(advisor: TestClient) -> None:
    consistent = advisor.post("/risk-profiles", json=answers(loss_reaction="buy_more", priority="maximise_gains")).json()
    contradictory = advisor.post("/risk-profiles", json=answers(loss_reaction="sell_all", priority="maximise_gains")).json()
    cautious = advisor.post("/risk-profiles", json=answers(loss_reaction="sell_all", priority="minimise_losses")).json()
    assert contradictory["consistency"] < 0.5 <= consistent["consistency"] == 1
    # Claiming to chase gains while planning to sell everything scores no higher than plain caution.
    assert contradictory["score"] <= cautious["score"] + 0.5
    assert contradictory["score"] < consistent["score"]


def test_less_capacity_means_a_lower_score(advisor: TestClient) -> None:
    young = advisor.post("/risk-profiles", json=answers()).json()
    near_retirement = advisor.post("/risk-profiles", json=answers(age=64, horizon_years=3)).json()
    assert near_retirement["capacity"] < young["capacity"]
    assert near_retirement["score"] < young["score"]
    assert near_retirement["recommended"]["equity_share"] < young["recommended"]["equity_share"]


def test_a_profile_can_be_read_back(advisor: TestClient) -> None:
    created = advisor.post("/risk-profiles", json=answers()).json()
    assert advisor.get(f"/risk-profiles/{created['id']}").json() == created
