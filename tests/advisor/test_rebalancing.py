"""Rebalancing: drift as half the absolute weight gaps, cash first, fewest trades past a threshold."""

from __future__ import annotations

import itertools
import random

import pytest
from fastapi.testclient import TestClient

from services.advisor.rebalancing import drift, invest_cash, plan_rebalance
from tests.advisor.conftest import advance, deposit, funded_account

TARGET = {"eq_a": 0.3, "eq_b": 0.3, "bond_a": 0.25, "bond_b": 0.15}


def test_drift_is_half_the_sum_of_absolute_weight_differences() -> None:
    values = {"eq_a": 4000, "eq_b": 3000, "bond_a": 2000, "bond_b": 1000}
    # weights 0.4/0.3/0.2/0.1 against 0.3/0.3/0.25/0.15: gaps 0.1 + 0 + 0.05 + 0.05
    assert drift(values, 0, TARGET) == pytest.approx(0.1)
    assert drift({"eq_a": 3000, "eq_b": 3000, "bond_a": 2500, "bond_b": 1500}, 0, TARGET) == pytest.approx(0)
    assert drift({"eq_a": 2700, "eq_b": 2700, "bond_a": 2250, "bond_b": 1350}, 1000, TARGET) == pytest.approx(0.1)


def test_cash_flows_come_first_and_sell_nothing() -> None:
    values = {"eq_a": 3000, "eq_b": 3000, "bond_a": 1500, "bond_b": 1500}
    buys = invest_cash(values, 1000, TARGET, min_trade=1)
    assert all(amount > 0 for amount in buys.values()) and sum(buys.values()) == 1000
    plan = plan_rebalance(values, 1000, TARGET, threshold=0.03, min_trade=1)
    assert all(amount > 0 for amount in plan.trades.values())  # the cash closed the gap: no sale
    assert plan.drift_after < 0.03


def _fewest_possible(values: dict[str, int], cash: int, threshold: float) -> int:
    """Brute force: the smallest set of classes whose trades can bring drift under the threshold."""
    total = sum(values.values()) + cash
    for k in range(len(TARGET) + 1):
        for chosen in itertools.combinations(TARGET, k):
            moved_out = cash + sum(max(0, values[c] - TARGET[c] * total) for c in chosen)
            moved_in = sum(max(0, TARGET[c] * total - values[c]) for c in chosen)
            if drift(values, cash, TARGET) - min(moved_out, moved_in) / total < threshold:
                return k
    raise AssertionError("unreachable")


def test_rebalancing_brings_drift_under_the_threshold_with_the_fewest_trades() -> None:
    rng = random.Random(6)
    for _ in range(300):
        values = {c: rng.randint(0, 100_000) for c in TARGET}
        cash = rng.choice([0, 0, rng.randint(0, 20_000)])
        threshold = rng.choice([0.02, 0.03, 0.05])
        plan = plan_rebalance(values, cash, TARGET, threshold, min_trade=1)
        if plan.drift_before <= threshold:
            continue
        assert plan.drift_after < threshold
        assert len(plan.trades) == _fewest_possible(values, cash, threshold), (values, cash, plan)


def test_a_full_rebalance_would_trade_more_than_the_plan_does() -> None:
    values = {"eq_a": 4000, "eq_b": 3000, "bond_a": 2000, "bond_b": 1000}
    plan = plan_rebalance(values, 0, TARGET, threshold=0.06, min_trade=1)
    assert len(plan.trades) == 2 and plan.trades["eq_a"] < 0 and plan.drift_after < 0.06
    assert sum(plan.trades.values()) == 0


def test_a_dry_run_lists_the_trades_and_changes_nothing(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 20, cn_equity=-30, dev_equity=-20)
    before = advisor.get(f"/accounts/{account_id}").json()
    assert before["drift"] > 0.03
    dry = advisor.post(f"/accounts/{account_id}/rebalance", json={"dry_run": True}).json()
    assert dry["trades"] and all(t["id"] is None for t in dry["trades"])
    assert advisor.get(f"/accounts/{account_id}").json() == before
    assert advisor.get(f"/accounts/{account_id}/trades").json()["data"][-1]["reason"] == "deposit"

    done = advisor.post(f"/accounts/{account_id}/rebalance", json={}).json()
    assert [(t["side"], t["fund"], t["amount"]) for t in done["trades"]] == [
        (t["side"], t["fund"], t["amount"]) for t in dry["trades"]]
    after = advisor.get(f"/accounts/{account_id}").json()
    assert after["drift"] == pytest.approx(done["drift_after"]) and after["drift"] < 0.03
    assert {t["side"] for t in done["trades"]} == {"buy", "sell"}


def test_below_the_threshold_only_idle_cash_is_invested(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 5)
    result = advisor.post(f"/accounts/{account_id}/rebalance", json={"threshold": 0.05}).json()
    assert result["drift_before"] < 0.05
    assert all(t["side"] == "buy" for t in result["trades"])


def test_a_deposit_buys_the_underweight_classes(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 10, cn_equity=-30)
    drift_before = advisor.get(f"/accounts/{account_id}").json()["drift"]
    trades = deposit(advisor, account_id, "500.00").json()["trades"]
    assert {t["side"] for t in trades} == {"buy"}
    assert max(trades, key=lambda t: float(t["amount"]["amount"]))["asset_class"] == "cn_equity"
    assert advisor.get(f"/accounts/{account_id}").json()["drift"] < drift_before
