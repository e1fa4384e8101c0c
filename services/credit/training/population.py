"""The synthetic applicant population the scorecard is trained on: a documented, seeded process.

Nobody here is real. Each applicant is drawn independently, in this order, from one
`numpy.random.default_rng(seed)`:

1. `applicant_type`: business with probability 0.6, else individual.
2. Protected attributes, for fairness evaluation only (never model inputs):
   `sex` F/M with probability 0.5 each; `age_band` 18-29 / 30-44 / 45-59 / 60+ with
   probabilities 0.22 / 0.38 / 0.28 / 0.12.
3. `months_in_business` (months trading; for an individual, months of wallet history):
   lognormal whose median grows with age band (18 / 48 / 84 / 110 months; individuals half
   that), sigma 0.8, capped at 480. Age reaches the outcome only through this path, which is
   how a proxy variable carries bias into a model that never sees age.
4. `monthly_inflow` (CNY, average monthly transaction inflow): lognormal, median 25,000 for a
   business and 7,000 for an individual, sigma 0.9 / 0.6, nudged up by time in business.
5. `inflow_volatility_pct` (coefficient of variation of the monthly inflow, %): gamma(3, 12)
   for a business, gamma(3, 8) for an individual, capped at 300.
6. `tax_filings_on_time_pct`: missing (no tax record) with probability 0.15 for a business and
   0.5 for an individual, else 100 x beta(6, 1.2).
7. `utility_bills_on_time_pct`: missing with probability 0.05, else 100 x beta(8, 1).
8. `customer_rating` (1.0-5.0 stars): missing with probability 0.2 for a business and 0.85 for
   an individual, else normal(4.3, 0.45) clipped to 1-5, one decimal.
9. `debt_service_ratio_pct` (existing monthly debt repayments / monthly inflow, %): 0 with
   probability 0.4, else 100 x beta(2, 6), capped at 150.
10. The outcome `bad` (default within 12 months) is Bernoulli(sigmoid(z)) with
    z = -2.75 - 0.55 ln(inflow/15000) + 0.022 (volatility - 35) - 0.45 ln((months+1)/37)
        - 0.025 (tax - 85) [missing: +0.35] - 0.03 (utility - 88) [missing: +0.30]
        - 0.6 (rating - 4.2) [missing: +0.20] + 0.025 (debt ratio - 20) + normal(0, 0.5).
    Sex and age band do not appear in z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 20260105
SIZE = 20_000
AGE_BANDS = ("18-29", "30-44", "45-59", "60+")
AGE_PROBS = (0.22, 0.38, 0.28, 0.12)
AGE_MEDIAN_MONTHS = (18.0, 48.0, 84.0, 110.0)


@dataclass(frozen=True)
class Population:
    applicant_type: np.ndarray  # "business" | "individual"
    sex: np.ndarray  # "F" | "M" (protected: evaluation only)
    age_band: np.ndarray  # protected: evaluation only
    characteristics: dict[str, np.ndarray]  # NaN marks a missing record
    bad: np.ndarray  # 1 = defaulted

    def __len__(self) -> int:
        return len(self.bad)


def _missing(rng: np.random.Generator, values: np.ndarray, p_missing: np.ndarray) -> np.ndarray:
    return np.where(rng.random(len(values)) < p_missing, np.nan, values)


def generate(size: int = SIZE, seed: int = SEED) -> Population:
    rng = np.random.default_rng(seed)
    business = rng.random(size) < 0.6
    sex = np.where(rng.random(size) < 0.5, "F", "M")
    age_idx = rng.choice(len(AGE_BANDS), size=size, p=AGE_PROBS)
    age_band = np.array(AGE_BANDS)[age_idx]

    median_months = np.array(AGE_MEDIAN_MONTHS)[age_idx] * np.where(business, 1.0, 0.5)
    months = np.minimum(np.floor(median_months * np.exp(rng.normal(0, 0.8, size))), 480)

    inflow_median = np.where(business, 25_000.0, 7_000.0)
    inflow_sigma = np.where(business, 0.9, 0.6)
    inflow = inflow_median * np.exp(rng.normal(0, 1, size) * inflow_sigma + 0.08 * np.log1p(months / 36))
    inflow = np.round(inflow, 2)

    volatility = np.minimum(np.round(rng.gamma(3.0, np.where(business, 12.0, 8.0))), 300)
    tax = _missing(rng, np.round(100 * rng.beta(6, 1.2, size)), np.where(business, 0.15, 0.5))
    utility = _missing(rng, np.round(100 * rng.beta(8, 1.0, size)), np.full(size, 0.05))
    rating = _missing(
        rng, np.round(np.clip(rng.normal(4.3, 0.45, size), 1, 5), 1), np.where(business, 0.2, 0.85)
    )
    debt = np.where(rng.random(size) < 0.4, 0.0, np.minimum(np.round(100 * rng.beta(2, 6, size)), 150))

    z = (
        -2.75
        - 0.55 * np.log(inflow / 15_000)
        + 0.022 * (volatility - 35)
        - 0.45 * np.log((months + 1) / 37)
        + np.where(np.isnan(tax), 0.35, -0.025 * (np.nan_to_num(tax) - 85))
        + np.where(np.isnan(utility), 0.30, -0.03 * (np.nan_to_num(utility) - 88))
        + np.where(np.isnan(rating), 0.20, -0.6 * (np.nan_to_num(rating) - 4.2))
        + 0.025 * (debt - 20)
        + rng.normal(0, 0.5, size)
    )
    bad = (rng.random(size) < 1 / (1 + np.exp(-z))).astype(int)
    return Population(
        applicant_type=np.where(business, "business", "individual"),
        sex=sex,
        age_band=age_band,
        characteristics={
            "monthly_inflow": inflow,
            "inflow_volatility_pct": volatility,
            "months_in_business": months,
            "tax_filings_on_time_pct": tax,
            "utility_bills_on_time_pct": utility,
            "customer_rating": rating,
            "debt_service_ratio_pct": debt,
        },
        bad=bad,
    )
