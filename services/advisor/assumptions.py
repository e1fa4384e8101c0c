"""The capital-market assumptions and the fund list shipped in `data/assumptions.json`.

Synthetic, educational figures (see the file's `disclaimer`); every other module reads them here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
ASSUMPTIONS_FILE = DATA_DIR / "assumptions.json"
PORTFOLIOS_FILE = DATA_DIR / "model_portfolios.json"


@dataclass(frozen=True)
class AssetClass:
    code: str
    name: str
    kind: str  # equity | bond
    expected_return: float
    volatility: float
    max_weight: float


@dataclass(frozen=True)
class Fund:
    code: str
    name: str
    asset_class: str
    index: str  # funds on the same index are substantially identical (wash-sale rule)
    role: str  # primary | substitute
    launch_nav: str  # decimal string, 4 dp as Chinese fund NAVs are quoted
    expense_ratio: float
    tracking_error: float


@dataclass(frozen=True)
class Assumptions:
    title: str
    disclaimer: str
    as_of: str
    currency: str
    risk_free_rate: float
    classes: tuple[AssetClass, ...]
    correlations: np.ndarray
    funds: tuple[Fund, ...]
    level_count: int
    max_volatility: float
    levels_note: str

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.classes]

    @property
    def expected_returns(self) -> np.ndarray:
        return np.array([c.expected_return for c in self.classes])

    @property
    def volatilities(self) -> np.ndarray:
        return np.array([c.volatility for c in self.classes])

    @property
    def covariance(self) -> np.ndarray:
        vol = self.volatilities
        return self.correlations * np.outer(vol, vol)

    def asset_class(self, code: str) -> AssetClass:
        return next(c for c in self.classes if c.code == code)

    def fund(self, code: str) -> Fund | None:
        return next((f for f in self.funds if f.code == code), None)

    def funds_of(self, class_code: str) -> tuple[Fund, Fund]:
        """(primary, substitute) of an asset class."""
        funds = [f for f in self.funds if f.asset_class == class_code]
        primary = next(f for f in funds if f.role == "primary")
        substitute = next(f for f in funds if f.role == "substitute")
        return primary, substitute

    def alternate_of(self, fund_code: str) -> Fund:
        """The other fund of the same class: highly correlated, on a different index."""
        fund = self.fund(fund_code)
        assert fund is not None
        primary, substitute = self.funds_of(fund.asset_class)
        return substitute if fund.code == primary.code else primary


def load_assumptions(path: Path = ASSUMPTIONS_FILE) -> Assumptions:
    raw = json.loads(path.read_text(encoding="utf-8"))
    classes = tuple(AssetClass(**c) for c in raw["asset_classes"])
    corr = np.array(raw["correlations"], dtype=float)
    if corr.shape != (len(classes), len(classes)) or not np.allclose(corr, corr.T):
        raise ValueError("correlations must be a symmetric matrix, one row per asset class")
    if np.linalg.eigvalsh(corr).min() <= 0:
        raise ValueError("correlations must be positive definite")
    levels = raw["risk_levels"]
    return Assumptions(
        title=raw["title"],
        disclaimer=raw["disclaimer"],
        as_of=raw["as_of"],
        currency=raw["currency"],
        risk_free_rate=raw["risk_free_rate"],
        classes=classes,
        correlations=corr,
        funds=tuple(Fund(**f) for f in raw["funds"]),
        level_count=levels["count"],
        max_volatility=levels["max_volatility"],
        levels_note=levels["note"],
    )


@lru_cache(maxsize=1)
def assumptions() -> Assumptions:
    return load_assumptions()
