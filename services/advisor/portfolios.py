"""The model portfolios (read from the precomputed artifact) and the glide path by horizon."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from services.advisor.assumptions import PORTFOLIOS_FILE

# Max equity share by goal and years left (after Betterment's published glide paths):
# education and major purchases glide to no equities at the date; general investing to 56%;
# retirement stays more aggressive because spending is spread over decades.
GLIDE_RULES = {
    "retirement": "100% equities allowed from 15 years out, then down to 40% at the date",
    "major_purchase": "90% from 20 years out, then down to 0% at the date",
    "education": "90% from 20 years out, then down to 0% at the date",
    "general_investing": "90% from 20 years out, then down to 56% at the date",
    "emergency_fund": "at most 20% equities whatever the horizon",
}


@dataclass(frozen=True)
class ModelPortfolio:
    level: int
    risk_score: float
    weights: dict[str, float]  # asset class code → weight, summing to 1
    equity_share: float
    expected_return: float
    volatility: float


@lru_cache(maxsize=1)
def model_portfolios() -> tuple[ModelPortfolio, ...]:
    raw = json.loads(PORTFOLIOS_FILE.read_text(encoding="utf-8"))
    return tuple(ModelPortfolio(**p) for p in raw["portfolios"])


def portfolio(level: int) -> ModelPortfolio:
    return model_portfolios()[level]


def max_equity_share(goal: str, years_left: float) -> float:
    y = max(0.0, years_left)
    if goal == "retirement":
        return 1.0 if y >= 15 else 0.40 + 0.60 * y / 15
    if goal in ("major_purchase", "education"):
        return 0.90 * min(y, 20) / 20
    if goal == "general_investing":
        return 0.56 + 0.34 * min(y, 20) / 20
    return 0.20  # emergency_fund


def glide_level(profile_level: int, goal: str, years_left: float) -> int:
    """The riskiest portfolio up to the profile's level that the glide path allows now."""
    cap = max_equity_share(goal, years_left) + 1e-9
    allowed = [p.level for p in model_portfolios()[: profile_level + 1] if p.equity_share <= cap]
    return max(allowed, default=0)
