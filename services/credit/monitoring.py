"""Population stability: how far recent applicants' scores have drifted from training."""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_APPLICATIONS = 20
FLOOR = 1e-4  # an empty bin would make ln(actual/expected) infinite


def shares(scores: Sequence[int], edges: Sequence[int]) -> list[float]:
    counts = [0] * (len(edges) - 1)
    for score in scores:
        for i in range(len(edges) - 1):
            if edges[i] <= score < edges[i + 1]:
                counts[i] += 1
                break
    total = max(len(scores), 1)
    return [c / total for c in counts]


def population_stability_index(expected: Sequence[float], actual: Sequence[float]) -> float:
    return sum(
        (max(a, FLOOR) - max(e, FLOOR)) * math.log(max(a, FLOOR) / max(e, FLOOR))
        for e, a in zip(expected, actual, strict=True)
    )


def psi_status(psi: float | None) -> str:
    if psi is None:
        return "insufficient-data"
    if psi < 0.1:
        return "stable"
    return "moderate-shift" if psi < 0.25 else "significant-shift"
