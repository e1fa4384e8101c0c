"""Tax-loss harvesting over tax lots, with the wash-sale rule on both sides.

A lot whose value has fallen more than the threshold below its cost is sold and the money
buys the class's other fund: highly correlated, but tracking a different index, so not
"substantially identical". A loss is a wash sale (disallowed) when a substantially identical
fund is bought within 30 days before or after the sale, so:

- before: a fund is not harvested while it has lots bought in the last 30 days that the
  harvest would not sell (they would be the replacement shares);
- after: a fund sold at a loss is not bought again for 30 days: deposits and rebalances buy
  its alternate, and a harvest whose replacement was itself sold at a loss in the window is
  skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

WASH_SALE_DAYS = 30


@dataclass(frozen=True)
class LotView:
    id: str
    fund: str
    units_micro: int
    cost_minor: int
    value_minor: int
    acquired_at: datetime


@dataclass(frozen=True)
class LossSale:
    fund: str
    sold_at: datetime


@dataclass
class FundHarvest:
    fund: str
    replacement: str
    lots: list[LotView] = field(default_factory=list)

    @property
    def loss_minor(self) -> int:
        return sum(lot.cost_minor - lot.value_minor for lot in self.lots)


@dataclass(frozen=True)
class Skipped:
    fund: str
    reason: str  # wash-sale-lookback | replacement-in-wash-window
    detail: str


def in_window(when: datetime, now: datetime) -> bool:
    return now - timedelta(days=WASH_SALE_DAYS) <= when <= now


def restricted_funds(loss_sales: list[LossSale], now: datetime, identical: dict[str, str]) -> set[str]:
    """Funds (by index) that may not be bought now: sold at a loss in the last 30 days."""
    return {identical[s.fund] for s in loss_sales if in_window(s.sold_at, now)}


def plan_harvest(
    lots: list[LotView],
    loss_sales: list[LossSale],
    alternate: dict[str, str],
    identical: dict[str, str],  # fund → its index: the same index means substantially identical
    now: datetime,
    threshold: float,
    min_loss_minor: int,
) -> tuple[list[FundHarvest], list[Skipped]]:
    harvests: dict[str, FundHarvest] = {}
    for lot in lots:
        loss = lot.cost_minor - lot.value_minor
        if lot.units_micro > 0 and loss >= min_loss_minor and loss > threshold * lot.cost_minor:
            harvests.setdefault(lot.fund, FundHarvest(lot.fund, alternate[lot.fund])).lots.append(lot)
    blocked = restricted_funds(loss_sales, now, identical)
    planned, skipped = [], []
    for fund, harvest in sorted(harvests.items()):
        selling = {lot.id for lot in harvest.lots}
        recent = [
            lot for lot in lots
            if identical[lot.fund] == identical[fund] and lot.id not in selling
            and lot.units_micro > 0 and in_window(lot.acquired_at, now)
        ]
        if recent:
            skipped.append(Skipped(fund, "wash-sale-lookback",
                                   f"{fund} was bought on {recent[0].acquired_at.date()}, within "
                                   f"{WASH_SALE_DAYS} days before this sale; the loss would be disallowed."))
        elif identical[harvest.replacement] in blocked:
            skipped.append(Skipped(fund, "replacement-in-wash-window",
                                   f"The replacement {harvest.replacement} was sold at a loss in the last "
                                   f"{WASH_SALE_DAYS} days; buying it back now would wash that loss."))
        else:
            planned.append(harvest)
    return planned, skipped
