"""Build the model portfolios from the capital-market assumptions with PyPortfolioOpt.

Run offline: `python -m services.advisor.frontier` rewrites `data/model_portfolios.json`. The
service reads that artifact and imports only numpy, so PyPortfolioOpt (cvxpy, pandas, scipy) is
a development dependency, and a test checks the artifact still equals a fresh computation.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from services.advisor.assumptions import PORTFOLIOS_FILE, Assumptions, load_assumptions

WEIGHT_DECIMALS = 4  # weights are published to 0.01%, summing to exactly 1


def round_weights(weights: np.ndarray) -> list[float]:
    """Round to 4 dp by largest remainder, so the published weights sum to exactly 1."""
    scale = 10**WEIGHT_DECIMALS
    raw = np.clip(weights, 0, None) * scale / max(weights.clip(0).sum(), 1e-12)
    floors = np.floor(raw).astype(int)
    short = scale - floors.sum()
    for i in np.argsort(-(raw - floors), kind="stable")[:short]:
        floors[i] += 1
    return [int(f) / scale for f in floors]


def portfolio_stats(a: Assumptions, weights: np.ndarray) -> tuple[float, float]:
    w = np.asarray(weights, dtype=float)
    return float(w @ a.expected_returns), float(np.sqrt(w @ a.covariance @ w))


def efficient_weights(a: Assumptions) -> list[np.ndarray]:
    """One efficient portfolio per risk level: min volatility, then rising target volatility."""
    from pypfopt import EfficientFrontier

    mu, cov = a.expected_returns, a.covariance
    bounds = [(0.0, c.max_weight) for c in a.classes]

    def frontier() -> EfficientFrontier:
        return EfficientFrontier(mu, cov, weight_bounds=bounds, solver="CLARABEL")

    ef = frontier()
    min_vol = np.array(list(ef.min_volatility().values()))
    _, sigma_min = portfolio_stats(a, min_vol)
    out = [min_vol]
    for level in range(1, a.level_count):
        target = sigma_min + (a.max_volatility - sigma_min) * level / (a.level_count - 1)
        ef = frontier()
        out.append(np.array(list(ef.efficient_risk(target_volatility=target).values())))
    return out


def build_model_portfolios(a: Assumptions) -> dict[str, Any]:
    portfolios = []
    for level, weights in enumerate(efficient_weights(a)):
        rounded = round_weights(weights)
        er, vol = portfolio_stats(a, np.array(rounded))
        equity = sum(w for w, c in zip(rounded, a.classes, strict=True) if c.kind == "equity")
        portfolios.append(
            {
                "level": level,
                "risk_score": level / 2,
                "weights": dict(zip(a.codes, rounded, strict=True)),
                "equity_share": round(equity, 4),
                "expected_return": round(er, 6),
                "volatility": round(vol, 6),
            }
        )
    return {
        "generated_by": "python -m services.advisor.frontier (PyPortfolioOpt EfficientFrontier, "
        "solver CLARABEL)",
        "assumptions_as_of": a.as_of,
        "portfolios": portfolios,
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    document = build_model_portfolios(load_assumptions())
    PORTFOLIOS_FILE.write_text(render(document), encoding="utf-8")
    for p in document["portfolios"]:
        print(f"level {p['level']:2d} score {p['risk_score']:4.1f}  equity {p['equity_share']:.0%}  "
              f"E[r] {p['expected_return']:.2%}  vol {p['volatility']:.2%}")
    print(f"wrote {PORTFOLIOS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
