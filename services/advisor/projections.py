"""Monte Carlo projection of a portfolio's value: vectorised over paths, seeded, monthly steps.

Log-normal monthly returns from the allocation's expected return and volatility; each fee is a
monthly haircut of (1 − fee)^(1/12). Every fee level sees the same random draws (common random
numbers), so the gap between them is the fee's drag alone, not noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class Projection:
    years: int
    paths: int
    seed: int
    fees: tuple[float, ...]
    # [year][fee][percentile] in fen, year 0..years
    values: np.ndarray
    contributed: list[int]  # fen put in by the end of each year


def project(
    initial_minor: int,
    monthly_minor: int,
    years: int,
    expected_return: float,
    volatility: float,
    fees: tuple[float, ...],
    paths: int,
    seed: int,
) -> Projection:
    rng = np.random.default_rng(seed)
    drift = (expected_return - 0.5 * volatility**2) / 12
    scale = volatility / np.sqrt(12)
    fee_factor = np.array([(1 - f) ** (1 / 12) for f in fees])[:, None]
    value = np.full((len(fees), paths), float(initial_minor))
    out = np.empty((years + 1, len(fees), len(PERCENTILES)))
    out[0] = initial_minor
    for year in range(1, years + 1):
        growth = np.exp(drift + scale * rng.standard_normal((12, paths)))
        for month in range(12):
            value += monthly_minor
            value *= growth[month]
            value *= fee_factor
        out[year] = np.percentile(value, PERCENTILES, axis=1).T
    contributed = [initial_minor + 12 * y * monthly_minor for y in range(years + 1)]
    return Projection(years, paths, seed, fees, np.floor(out).astype(np.int64), contributed)
