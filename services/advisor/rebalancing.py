"""Drift and rebalancing trades over asset-class values, as Betterment describes them.

drift = ½ Σ|w − w*| with cash as a class whose target is 0. Cash flows come first: cash on hand
buys underweight classes before anything is sold. Past the threshold, the plan moves money from
the fewest overweight classes to the fewest underweight ones that bring drift under it (largest
deviations first, which is optimal for each side), so a rebalance makes as few trades as it can.
All amounts are integer fen.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    trades: dict[str, int]  # class → signed fen: + buy, − sell
    drift_before: float
    drift_after: float


def drift(values: dict[str, int], cash: int, targets: dict[str, float]) -> float:
    total = sum(values.values()) + cash
    if total <= 0:
        return 0.0
    off = sum(abs(values.get(c, 0) / total - targets.get(c, 0.0)) for c in set(values) | set(targets))
    return 0.5 * (off + cash / total)


def _apply(values: dict[str, int], cash: int, trades: dict[str, int]) -> tuple[dict[str, int], int]:
    after = dict(values)
    for c, amount in trades.items():
        after[c] = after.get(c, 0) + amount
    return after, cash - sum(trades.values())


def _split(amount: int, weights: dict[str, float]) -> dict[str, int]:
    """Split integer fen in proportion to weights, by largest remainder (sums exactly)."""
    total = sum(weights.values())
    if amount <= 0 or total <= 0:
        return {}
    raw = {c: amount * w / total for c, w in weights.items()}
    out = {c: int(v) for c, v in raw.items()}
    for c in sorted(raw, key=lambda c: out[c] - raw[c])[: amount - sum(out.values())]:
        out[c] += 1
    return out


def invest_cash(values: dict[str, int], cash: int, targets: dict[str, float], min_trade: int) -> dict[str, int]:
    """Buys that spend the cash on underweight classes, in proportion to how short each is.

    The signed shortfalls sum to the cash itself, so the positive ones always absorb it all."""
    total = sum(values.values()) + cash
    short = {c: t * total - values.get(c, 0) for c, t in targets.items() if t * total - values.get(c, 0) > 0}
    buys = _split(cash, short)
    return {c: a for c, a in buys.items() if a >= min_trade}


def _fill(amount: int, gaps: list[tuple[str, int]]) -> dict[str, int]:
    """Spend `amount` over gaps in the given order, filling each before the next."""
    out: dict[str, int] = {}
    for c, gap in gaps:
        if amount <= 0:
            break
        take = min(gap, amount)
        out[c] = take
        amount -= take
    return out


def plan_rebalance(
    values: dict[str, int], cash: int, targets: dict[str, float], threshold: float, min_trade: int
) -> Plan:
    before = drift(values, cash, targets)
    total = sum(values.values()) + cash
    if total <= 0:
        return Plan({}, 0.0, 0.0)
    if before <= threshold:
        trades = invest_cash(values, cash, targets, min_trade)
    else:
        excess = {c: values.get(c, 0) - round(t * total) for c, t in targets.items()}
        for c, v in values.items():
            excess.setdefault(c, v)  # a class no longer in the target: all of it is excess
        # Fen that must move to bring drift under the threshold (+1 fen so it lands strictly under).
        need = (before - threshold) * total + 1
        over = sorted(((c, e) for c, e in excess.items() if e > 0), key=lambda x: -x[1])
        under = sorted(((c, -e) for c, e in excess.items() if e < 0), key=lambda x: -x[1])
        sellers, buyers = _fewest(over, need, start=cash), _fewest(under, need, start=0)
        moved = min(cash + sum(e for _, e in sellers), sum(g for _, g in buyers))
        sells = _fill(moved - min(cash, moved), sellers)
        buys = _fill(moved, buyers)
        trades = {c: -a for c, a in sells.items()}
        for c, a in buys.items():
            trades[c] = trades.get(c, 0) + a
        trades = {c: a for c, a in trades.items() if abs(a) >= min_trade}
    after_values, after_cash = _apply(values, cash, trades)
    return Plan(trades, before, drift(after_values, after_cash, targets))


def _fewest(candidates: list[tuple[str, int]], need: float, start: int) -> list[tuple[str, int]]:
    """The shortest prefix (largest first) whose total, plus `start`, reaches `need`."""
    chosen, got = [], start
    for c, amount in candidates:
        if got >= need:
            break
        chosen.append((c, amount))
        got += amount
    return chosen
