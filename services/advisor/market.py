"""A seeded market: correlated geometric Brownian motion from the capital-market assumptions.

Day d's NAVs depend only on the seed, d and the recorded shocks, so every scenario replays.
Each calendar day is one step. Fund f of class c moves with its class (the shared factor) plus
its own tracking noise, less its expense ratio: a primary and its substitute correlate ~0.99.
Daily shocks come in yearly blocks, block b drawn from `default_rng([seed, b])`, so a day's
price never depends on which days were asked for before.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from services.advisor.assumptions import Assumptions
from services.advisor.units import parse_nav

BLOCK_DAYS = 365


@dataclass(frozen=True)
class Shock:
    day: int
    asset_class: str
    pct: float  # e.g. -20.0: the class's funds fall 20% on that day


class MarketSimulator:
    def __init__(self, a: Assumptions, seed: int) -> None:
        self.seed = seed
        self.fund_codes = [f.code for f in a.funds]
        n_classes = len(a.classes)
        class_index = {c: i for i, c in enumerate(a.codes)}
        self._fund_class = np.array([class_index[f.asset_class] for f in a.funds])
        self.fund_class_codes = [f.asset_class for f in a.funds]
        dt = 1 / 365
        mu, vol = a.expected_returns, a.volatilities
        te = np.array([f.tracking_error for f in a.funds])
        er = np.array([f.expense_ratio for f in a.funds])
        self._class_drift = (mu - 0.5 * vol**2) * dt
        self._class_scale = np.linalg.cholesky(a.correlations).T * (vol * math.sqrt(dt))
        self._fund_drift = -(0.5 * te**2 + er) * dt
        self._fund_noise = te * math.sqrt(dt)
        self._n_classes = n_classes
        self.launch_nav_e4 = np.array([parse_nav(f.launch_nav) for f in a.funds])
        self._blocks: dict[int, np.ndarray] = {}  # block → cumulative log return at block end rows
        self._lock = threading.Lock()

    def _block_returns(self, block: int) -> np.ndarray:
        """Daily log returns of every fund for the 365 days of `block` (rows: day in block)."""
        rng = np.random.default_rng([self.seed, block])
        z = rng.standard_normal((BLOCK_DAYS, self._n_classes + len(self.fund_codes)))
        classes = self._class_drift + z[:, : self._n_classes] @ self._class_scale
        own = self._fund_drift + z[:, self._n_classes :] * self._fund_noise
        return classes[:, self._fund_class] + own

    def _cumulative(self, block: int) -> np.ndarray:
        """Cumulative log return through each day of `block`, from day 0 (built in order)."""
        with self._lock:
            for b in range(len(self._blocks), block + 1):
                start = self._blocks[b - 1][-1] if b else np.zeros(len(self.fund_codes))
                self._blocks[b] = start + np.cumsum(self._block_returns(b), axis=0)
            return self._blocks[block]

    def log_return_to(self, day: int) -> np.ndarray:
        if day <= 0:
            return np.zeros(len(self.fund_codes))
        block, offset = divmod(day - 1, BLOCK_DAYS)  # day 1 is row 0 of block 0
        return self._cumulative(block)[offset]

    def navs(self, day: int, shocks: list[Shock] = ()) -> dict[str, int]:
        """NAV of every fund on `day`, in 1/10,000 CNY."""
        log_r = self.log_return_to(day).copy()
        for shock in shocks:
            if shock.day <= day:
                hit = np.array([c == shock.asset_class for c in self.fund_class_codes])
                log_r[hit] += math.log1p(shock.pct / 100)
        navs = np.maximum(np.rint(self.launch_nav_e4 * np.exp(log_r)), 1).astype(np.int64)
        return dict(zip(self.fund_codes, (int(n) for n in navs), strict=True))
