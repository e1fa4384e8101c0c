"""Model portfolios: efficient, within bounds, stated return and risk, and a glide path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.advisor.assumptions import PORTFOLIOS_FILE, load_assumptions
from services.advisor.frontier import build_model_portfolios, portfolio_stats


@pytest.fixture
def models(advisor: TestClient) -> list[dict]:
    return advisor.get("/model-portfolios").json()


def test_weights_sum_to_one_and_respect_bounds(models: list[dict]) -> None:
    caps = {c.code: c.max_weight for c in load_assumptions().classes}
    assert len(models) == 21
    for portfolio in models:
        weights = {line["asset_class"]: line["weight"] for line in portfolio["allocations"]}
        assert sum(weights.values()) == pytest.approx(1, abs=1e-9)
        assert all(0 <= w <= caps[c] + 1e-9 for c, w in weights.items())


def test_each_allocation_states_its_expected_return_and_volatility(models: list[dict]) -> None:
    a = load_assumptions()
    for portfolio in models:
        weights = np.array([line["weight"] for line in portfolio["allocations"]])
        er, vol = portfolio_stats(a, weights)
        assert portfolio["expected_return"] == pytest.approx(er, abs=1e-6)
        assert portfolio["volatility"] == pytest.approx(vol, abs=1e-6)


def test_higher_levels_take_more_risk_for_more_return(models: list[dict]) -> None:
    vols = [p["volatility"] for p in models]
    returns = [p["expected_return"] for p in models]
    assert vols == sorted(vols) and returns == sorted(returns)
    assert models[0]["equity_share"] < 0.1 and models[-1]["equity_share"] > 0.9


def test_the_shipped_artifact_matches_a_fresh_pyportfolioopt_computation() -> None:
    pytest.importorskip("pypfopt")
    fresh = build_model_portfolios(load_assumptions())
    shipped = json.loads(PORTFOLIOS_FILE.read_text(encoding="utf-8"))
    for new, old in zip(fresh["portfolios"], shipped["portfolios"], strict=True):
        assert new["weights"] == pytest.approx(old["weights"], abs=2e-4), f"level {old['level']}"
        assert new["volatility"] == pytest.approx(old["volatility"], abs=1e-4)


def test_the_glide_path_steps_down_to_cash_like_bonds_for_an_education_goal(advisor: TestClient) -> None:
    path = advisor.get("/glide-path", params={"goal": "education", "level": 16, "horizon_years": 25}).json()
    shares = [p["equity_share"] for p in path["points"]]
    assert path["points"][0]["years_left"] == 25 and path["points"][-1]["years_left"] == 0
    assert shares == sorted(shares, reverse=True)
    assert shares[0] == pytest.approx(0.80, abs=0.01) and shares[-1] < 0.1


def test_assumptions_are_published_with_their_disclaimer(advisor: TestClient) -> None:
    body = advisor.get("/assumptions").json()
    assert "synthetic" in body["disclaimer"].lower() and "not investment advice" in body["disclaimer"]
    corr = np.array(body["correlations"])
    assert corr.shape == (7, 7) and np.allclose(corr, corr.T) and np.all(np.diag(corr) == 1)
