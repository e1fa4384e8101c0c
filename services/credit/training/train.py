"""Train the credit scorecard offline and write its versioned JSON artifact.

    python -m services.credit.training.train            # writes services/credit/artifacts/
    python -m services.credit.training.train --check    # fails if the committed artifact differs

Steps: generate the seeded synthetic population (population.py); split 70/30 into training and
hold-out; coarse-class each characteristic from fixed candidate edges, merging neighbours until
the weight of evidence (WoE) is monotone in the expected direction and each bin holds >= 5%;
fit a logistic regression on the WoE values; scale to points with PDO (points to double the
odds) so that every possible total lies in 350-950 (Zhima's range); evaluate discrimination (AUC,
KS) and fairness (fairlearn) on the hold-out; record the score distribution the population
stability index is measured against. The service needs nothing but the JSON this writes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from services.credit.training.population import SEED, SIZE, Population, generate

MODEL_VERSION = "sc-2026.1"
ARTIFACT = Path(__file__).resolve().parent.parent / "artifacts" / f"scorecard-{MODEL_VERSION}.json"

# Scaling: 720 points at odds of 30 good : 1 bad; 48 more points double the odds.
BASE_SCORE = 720
BASE_ODDS = 30
PDO = 48
SCORE_MIN, SCORE_MAX = 350, 950

# Decision policy, by score. Set from the hold-out: about 2/3 approved, 1/8 referred.
DECLINE_BELOW = 600
APPROVE_FROM = 640
TIERS = [  # limit = multiple x monthly inflow, capped per applicant type; APR in basis points
    {"tier": "A", "min_score": 720, "apr_bps": 720, "inflow_multiple": 3.0,
     "cap": {"business": "300000.00", "individual": "50000.00"}},
    {"tier": "B", "min_score": 680, "apr_bps": 1080, "inflow_multiple": 2.0,
     "cap": {"business": "150000.00", "individual": "30000.00"}},
    {"tier": "C", "min_score": 640, "apr_bps": 1540, "inflow_multiple": 1.0,
     "cap": {"business": "50000.00", "individual": "10000.00"}},
]
BANDS = [  # Zhima-style score bands
    {"band": "poor", "min_score": 350}, {"band": "fair", "min_score": 550},
    {"band": "good", "min_score": 600}, {"band": "very good", "min_score": 650},
    {"band": "excellent", "min_score": 700},
]
PSI_EDGES = [350, 500, 550, 600, 650, 700, 750, 800, 951]
MIN_BIN_SHARE = 0.05

# name: (unit, candidate edges, direction of safety, plain-words reason, reason when missing)
CHARACTERISTICS: dict[str, dict[str, Any]] = {
    "monthly_inflow": dict(
        unit="CNY", edges=[5_000, 10_000, 20_000, 40_000, 80_000], direction="increasing",
        code="LOW_TRANSACTION_FLOW", description="Average monthly transaction inflow, last 12 months",
        reason="Monthly transaction flow is low", missing_reason=None),
    "inflow_volatility_pct": dict(
        unit="%", edges=[15, 25, 40, 60], direction="decreasing",
        code="VOLATILE_TRANSACTION_FLOW",
        description="Month-to-month variation of the inflow (coefficient of variation)",
        reason="Monthly takings vary a lot from month to month", missing_reason=None),
    "months_in_business": dict(
        unit="months", edges=[6, 12, 24, 48, 96], direction="increasing",
        code="SHORT_HISTORY", description="Months trading (individuals: months of wallet history)",
        reason="Time in business (or account history) is short", missing_reason=None),
    "tax_filings_on_time_pct": dict(
        unit="%", edges=[60, 80, 90, 97], direction="increasing", code="TAX_FILINGS",
        description="Share of tax filings made on time, last 24 months",
        reason="Some tax filings were late", missing_reason="No tax filing record"),
    "utility_bills_on_time_pct": dict(
        unit="%", edges=[70, 85, 95], direction="increasing", code="UTILITY_PAYMENTS",
        description="Share of water, electricity and phone bills paid on time, last 24 months",
        reason="Some utility bills were paid late", missing_reason="No utility payment record"),
    "customer_rating": dict(
        unit="stars", edges=[3.5, 4.0, 4.5], direction="increasing", code="CUSTOMER_RATINGS",
        description="Average customer rating, 1 to 5 stars",
        reason="Customer ratings are below the best", missing_reason="No customer ratings"),
    "debt_service_ratio_pct": dict(
        unit="%", edges=[1, 20, 35, 50], direction="decreasing", code="EXISTING_DEBT",
        description="Existing monthly debt repayments as a share of monthly inflow",
        reason="Existing debt repayments are high for the monthly flow", missing_reason=None),
}


def _woe(good: np.ndarray, bad: np.ndarray, total_good: int, total_bad: int) -> np.ndarray:
    # +0.5 smoothing keeps an empty cell finite.
    return np.log(((good + 0.5) / total_good) / ((bad + 0.5) / total_bad))


def coarse_class(values: np.ndarray, bad: np.ndarray, edges: list[float], direction: str):
    """Merge neighbouring bins until WoE is monotone and every bin holds MIN_BIN_SHARE."""
    present = ~np.isnan(values)
    v, y = values[present], bad[present]
    total_good, total_bad = int((bad == 0).sum()), int(bad.sum())
    edges = list(edges)
    while True:
        idx = np.searchsorted(np.array(edges), v, side="right")
        counts = np.bincount(idx, minlength=len(edges) + 1)
        bads = np.bincount(idx, weights=y, minlength=len(edges) + 1)
        goods = counts - bads
        woe = _woe(goods, bads, total_good, total_bad)
        sign = 1 if direction == "increasing" else -1
        small = [i for i in range(len(counts)) if counts[i] < MIN_BIN_SHARE * len(values)]
        wrong = [i for i in range(len(woe) - 1) if sign * (woe[i + 1] - woe[i]) <= 0]
        if not small and not wrong:
            return edges, woe
        i = (small or wrong)[0]
        # Drop the edge between bin i and a neighbour (bin i+1, or i-1 for the last bin).
        del edges[min(i, len(edges) - 1)]


def missing_woe(values: np.ndarray, bad: np.ndarray) -> float | None:
    missing = np.isnan(values)
    if not missing.any():
        return None
    total_good, total_bad = int((bad == 0).sum()), int(bad.sum())
    g, b = int((bad[missing] == 0).sum()), int(bad[missing].sum())
    return float(_woe(np.array(g), np.array(b), total_good, total_bad))


def woe_column(values: np.ndarray, edges: list[float], woe: np.ndarray, woe_missing: float | None):
    idx = np.searchsorted(np.array(edges), np.nan_to_num(values, nan=0), side="right")
    column = woe[idx]
    if woe_missing is not None:
        column = np.where(np.isnan(values), woe_missing, column)
    return column


def _label(lower: float | None, upper: float | None, unit: str) -> str:
    def fmt(x: float) -> str:
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"

    if lower is None:
        return f"below {fmt(upper)} {unit}"
    if upper is None:
        return f"{fmt(lower)} {unit} or more"
    return f"{fmt(lower)} to under {fmt(upper)} {unit}"


def _split(pop: Population) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(SEED + 1).permutation(len(pop))
    cut = int(0.7 * len(pop))
    return order[:cut], order[cut:]


def _ks(scores: np.ndarray, bad: np.ndarray) -> float:
    order = np.argsort(scores)
    b = np.cumsum(bad[order]) / bad.sum()
    g = np.cumsum(1 - bad[order]) / (1 - bad).sum()
    return float(np.max(np.abs(b - g)))


def _fairness(approved: np.ndarray, good: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    frame = MetricFrame(
        metrics={"approval_rate": selection_rate, "true_positive_rate": true_positive_rate,
                 "false_positive_rate": false_positive_rate},
        y_true=good, y_pred=approved, sensitive_features=groups,
    )
    by_group = frame.by_group
    ratio = float(demographic_parity_ratio(good, approved, sensitive_features=groups))
    return {
        "demographic_parity_ratio": round(ratio, 4),
        "equalized_odds_difference": round(
            float(equalized_odds_difference(good, approved, sensitive_features=groups)), 4),
        "flagged": ratio < 0.8,
        "groups": [
            {"group": str(g), "count": int((groups == g).sum()),
             "approval_rate": round(float(by_group.loc[g, "approval_rate"]), 4),
             "true_positive_rate": round(float(by_group.loc[g, "true_positive_rate"]), 4),
             "false_positive_rate": round(float(by_group.loc[g, "false_positive_rate"]), 4)}
            for g in sorted(set(groups.tolist()))
        ],
    }


def train() -> dict[str, Any]:
    pop = generate()
    train_idx, hold_idx = _split(pop)
    y = pop.bad[train_idx]
    cards, columns = [], []
    for name, spec in CHARACTERISTICS.items():
        values = pop.characteristics[name][train_idx]
        edges, woe = coarse_class(values, y, spec["edges"], spec["direction"])
        w_missing = missing_woe(values, y)
        columns.append(woe_column(values, edges, woe, w_missing))
        cards.append((name, spec, edges, woe, w_missing, values))
    x = np.column_stack(columns)
    model = LogisticRegression(C=1e6, max_iter=1000).fit(x, y)  # y = 1 is a default
    beta, alpha = model.coef_[0], float(model.intercept_[0])
    if (beta >= 0).any():
        raise SystemExit(f"a characteristic lost its sign in the regression: {beta}")

    factor = PDO / math.log(2)
    offset = BASE_SCORE - factor * math.log(BASE_ODDS)
    n = len(cards)

    def points(b: float, w: float) -> int:
        # ln(odds good:bad) = -(alpha + sum(beta * woe)); spread alpha and offset evenly.
        return round(-(b * w + alpha / n) * factor + offset / n)

    characteristics = []
    for (name, spec, edges, woe, w_missing, values), b in zip(cards, beta, strict=True):
        bounds = [None, *edges, None]
        idx = np.searchsorted(np.array(edges), values[~np.isnan(values)], side="right")
        shares = np.bincount(idx, minlength=len(edges) + 1) / len(values)
        bins = [
            {"lower": bounds[i], "upper": bounds[i + 1], "label": _label(bounds[i], bounds[i + 1], spec["unit"]),
             "woe": round(float(woe[i]), 4), "points": points(b, float(woe[i])),
             "training_share": round(float(shares[i]), 4)}
            for i in range(len(woe))
        ]
        if w_missing is not None:
            bins.append({"missing": True, "label": "no record", "woe": round(w_missing, 4),
                         "points": points(b, w_missing),
                         "training_share": round(float(np.isnan(values).mean()), 4)})
        characteristics.append({
            "name": name, "description": spec["description"], "unit": spec["unit"],
            "reason_code": spec["code"], "reason": spec["reason"], "missing_reason": spec["missing_reason"],
            "coefficient": round(float(b), 6), "bins": bins,
            "max_points": max(bin_["points"] for bin_ in bins),
            "min_points": min(bin_["points"] for bin_ in bins),
        })
    lowest = sum(c["min_points"] for c in characteristics)
    highest = sum(c["max_points"] for c in characteristics)
    if lowest < SCORE_MIN or highest > SCORE_MAX:
        raise SystemExit(f"possible scores {lowest}-{highest} leave {SCORE_MIN}-{SCORE_MAX}")

    def score_rows(rows: np.ndarray) -> np.ndarray:
        total = np.zeros(len(rows))
        for c in characteristics:
            values = pop.characteristics[c["name"]][rows]
            for bin_ in c["bins"]:
                if bin_.get("missing"):
                    hit = np.isnan(values)
                else:
                    lo = -np.inf if bin_["lower"] is None else bin_["lower"]
                    hi = np.inf if bin_["upper"] is None else bin_["upper"]
                    hit = ~np.isnan(values) & (values >= lo) & (values < hi)
                total += np.where(hit, bin_["points"], 0)
        return total

    hold_scores, hold_bad = score_rows(hold_idx), pop.bad[hold_idx]
    train_scores = score_rows(train_idx)
    approved = (hold_scores >= APPROVE_FROM).astype(int)
    good = 1 - hold_bad
    psi_counts = np.histogram(train_scores, bins=PSI_EDGES)[0]
    return {
        "model_version": MODEL_VERSION,
        "kind": "points scorecard: coarse-classed WoE + logistic regression, PDO scaling",
        "trained_with": "services/credit/training/train.py (scikit-learn LogisticRegression, fairlearn)",
        "population": {"generator": "services/credit/training/population.py", "seed": SEED,
                       "size": SIZE, "training_rows": len(train_idx), "holdout_rows": len(hold_idx),
                       "default_rate": round(float(pop.bad.mean()), 4),
                       "protected_attributes": ["sex", "age_band"],
                       "note": "protected attributes are generated for fairness evaluation and are "
                               "never model inputs"},
        "scaling": {"base_score": BASE_SCORE, "base_odds": BASE_ODDS, "pdo": PDO,
                    "factor": round(factor, 6), "offset": round(offset, 6),
                    "intercept": round(alpha, 6), "score_min": SCORE_MIN, "score_max": SCORE_MAX,
                    "possible_min": lowest, "possible_max": highest},
        "policy": {"decline_below": DECLINE_BELOW, "approve_from": APPROVE_FROM, "tiers": TIERS,
                   "bands": BANDS, "currency": "CNY"},
        "characteristics": characteristics,
        "validation": {
            "holdout_auc": round(float(roc_auc_score(hold_bad, -hold_scores)), 4),
            "holdout_gini": round(2 * float(roc_auc_score(hold_bad, -hold_scores)) - 1, 4),
            "holdout_ks": round(_ks(hold_scores, hold_bad), 4),
            "holdout_approval_rate": round(float(approved.mean()), 4),
            "holdout_default_rate_approved": round(float(hold_bad[approved == 1].mean()), 4),
            "holdout_default_rate_declined": round(float(hold_bad[approved == 0].mean()), 4),
        },
        "fairness": {
            "population": "hold-out",
            "decision": f"approve = score >= {APPROVE_FROM}; favourable outcome = repaid",
            "threshold": 0.8,
            "by_attribute": {
                "sex": _fairness(approved, good, pop.sex[hold_idx]),
                "age_band": _fairness(approved, good, pop.age_band[hold_idx]),
            },
        },
        "psi_baseline": {"edges": PSI_EDGES,
                         "shares": [round(float(c) / len(train_idx), 6) for c in psi_counts]},
    }


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed artifact")
    parser.add_argument("--out", type=Path, default=ARTIFACT)
    args = parser.parse_args(argv)
    text = render(train())
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print("artifact is up to date" if same else f"{args.out} differs from a fresh training run")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
