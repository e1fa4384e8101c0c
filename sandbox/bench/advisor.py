"""Robo-advisor speed and footprint: the time of an allocation (questionnaire → portfolio) and of
a 10,000-path, 30-year Monthly Monte Carlo projection (target < 200 ms), each beside a baseline
measured in the same run, plus the service's idle memory (RSS) as a separate process."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from sandbox.bench.load import free_port, rss_mb, start, stop, time_ms, wait_ready

TARGET_PROJECTION_MS = 200.0


def _median_ms(call: Callable[[], object], n: int, warmup: int = 2) -> float:
    return statistics.median(time_ms(call, n, warmup))


def _loop_projection(paths: int, months: int, mu: float, sigma: float, seed: int) -> list[float]:
    """The baseline: one path at a time in pure Python."""
    import random

    rng = random.Random(seed)
    drift, scale = (mu - 0.5 * sigma**2) / 12, sigma / math.sqrt(12)
    finals = []
    for _ in range(paths):
        value = 1_000_000.0
        for _ in range(months):
            value *= math.exp(drift + scale * rng.gauss(0, 1)) * (1 - 0.0025) ** (1 / 12)
        finals.append(value)
    return finals


def _idle_rss_mb() -> float | None:
    """Start the advisor alone as the launcher would (uvicorn, SQLite) and read its RSS at rest."""
    if not Path("/proc/self/status").exists():
        return None
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        proc = start("services.advisor.main:create_app", port,
                     {"ADVISOR_DATA_DIR": tmp, "ADVISOR_LOG_LEVEL": "WARNING"}, Path(tmp) / "advisor.log")
        try:
            wait_ready(base, proc)
            # One allocation and one projection first, so the figure is a warmed-up idle service.
            httpx.get(f"{base}/model-portfolios", timeout=10)
            httpx.post(f"{base}/projections", timeout=30,
                       json={"risk_level": 11, "initial": {"amount": "10000", "currency": "CNY"}})
            time.sleep(1)
            return rss_mb(proc.pid)
        finally:
            stop([proc], timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fintech-sandbox bench advisor", description=__doc__)
    parser.add_argument("-n", type=int, default=15, help="repetitions per figure")
    parser.add_argument("--no-rss", action="store_true", help="skip the idle-memory measurement")
    args = parser.parse_args(argv)

    from services.advisor import portfolios, risk
    from services.advisor.projections import project

    answers = risk.Answers(age=30, horizon_years=30, annual_income_minor=150_000_00,
                           liquid_net_worth_minor=100_000_00, goal="retirement", loss_reaction="hold",
                           priority="balanced", experience="some")

    def allocate() -> portfolios.ModelPortfolio:
        scored = risk.score_answers(answers)
        return portfolios.portfolio(portfolios.glide_level(scored.level, answers.goal, answers.horizon_years))

    chosen = allocate()
    lookup_ms = _median_ms(allocate, args.n * 20)
    print(f"allocation (questionnaire → precomputed portfolio)   {lookup_ms * 1000:9.1f} µs   "
          f"level {chosen.level}, {chosen.equity_share:.0%} equities, E[r] {chosen.expected_return:.2%}, "
          f"vol {chosen.volatility:.2%}")
    with tempfile.TemporaryDirectory() as tmp:
        from fastapi.testclient import TestClient

        from services.advisor.main import AdvisorSettings, create_app

        with TestClient(create_app(AdvisorSettings(data_dir=tmp, seed_demo_data=False))) as client:
            body = {"age": 30, "horizon_years": 30, "annual_income": {"amount": "150000", "currency": "CNY"},
                    "liquid_net_worth": {"amount": "100000", "currency": "CNY"}, "goal": "retirement",
                    "loss_reaction": "hold", "priority": "balanced", "experience": "some"}
            http_ms = _median_ms(lambda: client.post("/risk-profiles", json=body), args.n * 4)
        print(f"allocation over HTTP in-process (POST /risk-profiles)  {http_ms:9.2f} ms   "
              "(scores, stores the profile, returns the portfolio)")
    try:
        from services.advisor.assumptions import load_assumptions
        from services.advisor.frontier import efficient_weights

        a = load_assumptions()
        start = time.perf_counter()
        efficient_weights(a)  # imports PyPortfolioOpt (cvxpy) and solves all 21 levels
        frontier_ms = (time.perf_counter() - start) * 1000
        print(f"baseline: solve the 21-level frontier live (PyPortfolioOpt) {frontier_ms:9.1f} ms   "
              f"({frontier_ms / lookup_ms:,.0f}x the lookup)")
    except ImportError:
        print("baseline: PyPortfolioOpt not installed (pip install -e '.[dev]')")

    p = portfolios.portfolio(11)
    run = lambda: project(1_000_000, 0, 30, p.expected_return, p.volatility, (0.0025, 0.015), 10_000, 42)  # noqa: E731
    projection_ms = _median_ms(run, args.n)
    verdict = "meets" if projection_ms < TARGET_PROJECTION_MS else "MISSES"
    print(f"projection: 10,000 paths × 360 months × 2 fee levels  {projection_ms:9.1f} ms   "
          f"({verdict} the {TARGET_PROJECTION_MS:.0f} ms target)")
    loop_paths = 200
    start = time.perf_counter()
    _loop_projection(loop_paths, 360, p.expected_return, p.volatility, 42)
    loop_ms = (time.perf_counter() - start) * 1000 * (10_000 / loop_paths) * 2
    print(f"baseline: pure-Python loop, extrapolated from {loop_paths} paths {loop_ms:9.1f} ms   "
          f"({loop_ms / projection_ms:,.0f}x slower than numpy)")

    if not args.no_rss:
        rss = _idle_rss_mb()
        if rss is not None:
            print(f"advisor service idle RSS (uvicorn, warmed up)         {rss:9.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
