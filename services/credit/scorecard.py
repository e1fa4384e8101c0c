"""The points scorecard, applied in pure Python from its JSON artifact (no numpy, no sklearn).

score = sum of each characteristic's points; ln(odds good:bad) = (score - offset) / factor,
so every `pdo` points double the odds. Reason codes rank characteristics by the points lost
against that characteristic's maximum, as adverse-action notices do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "scorecard-sc-2026.1.json"
REASONS_GIVEN = 4


@dataclass(frozen=True)
class Bin:
    label: str
    points: int
    lower: Decimal | None = None
    upper: Decimal | None = None
    missing: bool = False

    def holds(self, value: Decimal | None) -> bool:
        if value is None or self.missing:
            return value is None and self.missing
        return (self.lower is None or value >= self.lower) and (self.upper is None or value < self.upper)


@dataclass(frozen=True)
class Characteristic:
    name: str
    description: str
    unit: str
    reason_code: str
    reason: str
    missing_reason: str | None
    bins: tuple[Bin, ...]

    @property
    def max_points(self) -> int:
        return max(b.points for b in self.bins)

    @property
    def best_bin(self) -> Bin:
        return max(self.bins, key=lambda b: b.points)

    def bin_for(self, value: Decimal | None) -> Bin:
        for candidate in self.bins:
            if candidate.holds(value):
                return candidate
        # A missing value for a characteristic trained without gaps earns its lowest points.
        return min(self.bins, key=lambda b: b.points)


@dataclass(frozen=True)
class Line:
    """What one characteristic contributed to a score."""

    characteristic: Characteristic
    value: Decimal | None
    bin: Bin

    @property
    def points(self) -> int:
        return self.bin.points

    @property
    def points_lost(self) -> int:
        return self.characteristic.max_points - self.bin.points


@dataclass(frozen=True)
class Reason:
    code: str
    characteristic: str
    text: str
    points: int
    max_points: int
    points_lost: int


@dataclass(frozen=True)
class Scored:
    score: int
    probability_of_default: float
    band: str
    lines: tuple[Line, ...]

    def reasons(self, limit: int = REASONS_GIVEN) -> list[Reason]:
        """The characteristics that cost the most points, largest shortfall first."""
        ranked = sorted(
            (line for line in self.lines if line.points_lost > 0),
            key=lambda line: (-line.points_lost, line.characteristic.name),
        )
        return [_reason(line) for line in ranked[:limit]]


def _fmt(value: Decimal, unit: str) -> str:
    if unit == "CNY":
        return f"CNY {value:,.2f}"
    text = f"{value.normalize():f}" if value != value.to_integral_value() else f"{value:.0f}"
    return f"{text} {unit}"


def _reason(line: Line) -> Reason:
    c = line.characteristic
    if line.value is None:
        text = c.missing_reason or f"{c.reason}: no record given"
    else:
        text = f"{c.reason}: {_fmt(line.value, c.unit)}; full points need {c.best_bin.label}"
    return Reason(c.reason_code, c.name, text, line.points, c.max_points, line.points_lost)


class Scorecard:
    """A trained scorecard: its bins and points, its scaling and the lending policy."""

    def __init__(self, artifact: Mapping[str, Any]) -> None:
        self.artifact = artifact
        self.version: str = artifact["model_version"]
        scaling = artifact["scaling"]
        self.pdo: float = scaling["pdo"]
        self.factor: float = scaling["factor"]
        self.offset: float = scaling["offset"]
        self.score_min: int = scaling["score_min"]
        self.score_max: int = scaling["score_max"]
        self.policy: Mapping[str, Any] = artifact["policy"]
        self.characteristics = tuple(
            Characteristic(
                name=c["name"],
                description=c["description"],
                unit=c["unit"],
                reason_code=c["reason_code"],
                reason=c["reason"],
                missing_reason=c["missing_reason"],
                bins=tuple(
                    Bin(
                        label=b["label"],
                        points=b["points"],
                        lower=None if b.get("lower") is None else Decimal(str(b["lower"])),
                        upper=None if b.get("upper") is None else Decimal(str(b["upper"])),
                        missing=bool(b.get("missing")),
                    )
                    for b in c["bins"]
                ),
            )
            for c in artifact["characteristics"]
        )

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.characteristics)

    def odds_at(self, score: float) -> float:
        """Odds of good to bad at a score."""
        return math.exp((score - self.offset) / self.factor)

    def probability_of_default(self, score: float) -> float:
        return 1 / (1 + self.odds_at(score))

    def band(self, score: int) -> str:
        band = self.policy["bands"][0]["band"]
        for candidate in self.policy["bands"]:
            if score >= candidate["min_score"]:
                band = candidate["band"]
        return band

    def score(self, inputs: Mapping[str, Decimal | None]) -> Scored:
        """Score the scorecard's own inputs; anything else in `inputs` is ignored by design."""
        lines = tuple(Line(c, inputs.get(c.name), c.bin_for(inputs.get(c.name))) for c in self.characteristics)
        total = sum(line.points for line in lines)
        return Scored(
            score=total,
            probability_of_default=self.probability_of_default(total),
            band=self.band(total),
            lines=lines,
        )


@lru_cache(maxsize=4)
def load_scorecard(path: Path = DEFAULT_ARTIFACT) -> Scorecard:
    return Scorecard(json.loads(Path(path).read_text(encoding="utf-8")))
