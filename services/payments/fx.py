"""Foreign-exchange quotes for cross-border payments: a reference rate table and two rails.

Plain functions over plain data (no HTTP, no database), so every figure can be checked by hand.

The rules, and why (the seed's claim: a US bank paying a Japanese bank through correspondent
banks takes 1-3 days with high fees; Ripple settles in seconds for about 1/10 of the fee):

- `correspondent`: the customer rate is the mid rate less a 1.00% FX margin, plus a flat wire
  fee of 25.00 USD (charged in the currency sold, at the mid rate); settles in 1-3 business days.
- `ripple`: a tenth of both, 0.10% margin and a 2.50 USD fee; settles in 3-5 seconds.

These figures are illustrative (typical of published bank wire tariffs and of the seed's
"about 1/10"), not any provider's price list.

Arithmetic is `decimal.Decimal` at 50 digits of precision, rounded only where a figure is
published, each with its own explicit rule:

- rate: mid x (1 - margin), to 8 significant digits, half-even;
- fee: converted at the mid rate to the sold currency's ISO 4217 exponent, half-up;
- amount bought (when the amount sold is fixed): (sold - fee) x rate, rounded DOWN to the bought
  currency's exponent (the payee never receives money nobody paid for);
- amount sold (when the amount bought is fixed): bought / rate rounded UP to the sold currency's
  exponent, plus the fee (the payer always covers what the payee receives).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Context, Decimal, localcontext
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml

from services.common.money import MAX_MINOR_DIGITS, exponent_of, format_minor
from services.common.problems import Problem

RATES_FILE = Path(__file__).with_name("rates.yaml")
QUOTE_TTL = timedelta(seconds=30)  # a quote can be paid for 30 s, by the service clock
RATE_SIGNIFICANT_DIGITS = 8
FEE_CURRENCY = "USD"  # flat fees are set in US dollars and charged in the currency sold

Rail = Literal["ripple", "correspondent"]
Side = Literal["sell", "buy"]


@dataclass(frozen=True)
class RailRule:
    name: str
    margin_bps: int  # taken off the mid rate
    flat_fee: Decimal  # in FEE_CURRENCY
    settlement: str  # shown to the customer
    settles_in: timedelta | None = None  # wall-clock rails
    settles_in_business_days: int | None = None  # rails that only move on weekdays

    def settles_by(self, when: datetime) -> datetime:
        """When money sent at `when` has arrived at the latest."""
        if self.settles_in is not None:
            return when + self.settles_in
        assert self.settles_in_business_days is not None
        return add_business_days(when, self.settles_in_business_days)


RAILS: dict[str, RailRule] = {
    "correspondent": RailRule(
        "correspondent", margin_bps=100, flat_fee=Decimal("25.00"),
        settlement="1-3 business days", settles_in_business_days=3,
    ),
    "ripple": RailRule(
        "ripple", margin_bps=10, flat_fee=Decimal("2.50"),
        settlement="3-5 seconds", settles_in=timedelta(seconds=5),
    ),
}


def add_business_days(when: datetime, days: int) -> datetime:
    """`days` weekdays later, same time of day (weekends skipped; no holiday calendar)."""
    moment = when
    while days > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            days -= 1
    return moment


@dataclass(frozen=True)
class RateTable:
    source: str
    as_of: str
    base: str
    per_base: dict[str, Decimal]  # units of each currency one unit of `base` buys

    def mid(self, sell: str, buy: str) -> Decimal:
        """Units of `buy` one unit of `sell` buys at mid-market, unrounded."""
        with localcontext(_CONTEXT):
            return self.per_base[buy] / self.per_base[sell]


_CONTEXT = Context(prec=50)


@lru_cache(maxsize=1)
def rate_table() -> RateTable:
    raw = yaml.safe_load(RATES_FILE.read_text(encoding="utf-8"))
    per_base = {code: Decimal(str(value)) for code, value in raw["per_base"].items()}
    for code, value in per_base.items():
        exponent_of(code)  # every code must be an ISO 4217 currency with minor units
        if value <= 0:
            raise ValueError(f"{RATES_FILE}: {code} rate must be positive")
    if per_base.get(raw["base"]) != 1:
        raise ValueError(f"{RATES_FILE}: the base currency must be worth 1")
    return RateTable(source=raw["source"], as_of=str(raw["as_of"]), base=raw["base"], per_base=per_base)


def quoted_currencies() -> list[str]:
    return list(rate_table().per_base)


def round_significant(value: Decimal, digits: int = RATE_SIGNIFICANT_DIGITS) -> Decimal:
    """7.120000049 → 7.1200000 (8 significant digits, half-even)."""
    with localcontext(_CONTEXT):
        exponent = value.adjusted() - digits + 1
        return value.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_EVEN)


def rate_string(value: Decimal) -> str:
    """A rate as a plain decimal string without trailing zeros: '0.14044944', '150'."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class QuoteFigures:
    rail: str
    sell_currency: str
    buy_currency: str
    fixed_side: str
    mid_rate: Decimal
    rate: Decimal
    sell_minor: int  # what the payer pays, fee included
    fee_minor: int  # in the sell currency
    buy_minor: int  # what the payee receives


def _minor(value: Decimal, currency: str, rounding: str) -> int:
    with localcontext(_CONTEXT):
        return int(value.scaleb(exponent_of(currency)).quantize(Decimal(1), rounding=rounding))


def _major(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent_of(currency))


def fee_in(currency: str, rule: RailRule) -> int:
    """The rail's flat fee in `currency`'s minor units: converted at mid, half-up."""
    with localcontext(_CONTEXT):
        value = rule.flat_fee * rate_table().mid(FEE_CURRENCY, currency)
    return _minor(value, currency, ROUND_HALF_UP)


def quote(rail: str, sell_currency: str, buy_currency: str, side: str, amount_minor: int) -> QuoteFigures:
    """Price a conversion; `amount_minor` is on the `side` that is fixed ("sell" or "buy")."""
    table = rate_table()
    if sell_currency == buy_currency:
        raise Problem(409, "same-currency", "Nothing to exchange",
                      f"Both sides are {sell_currency}; use POST /transfers for a payment in one currency.")
    rule = RAILS[rail]
    mid = table.mid(sell_currency, buy_currency)
    with localcontext(_CONTEXT):
        rate = round_significant(mid * (1 - Decimal(rule.margin_bps) / 10_000))
        fee = fee_in(sell_currency, rule)
        if side == "sell":
            sell = amount_minor
            principal = _major(sell - fee, sell_currency)
            buy = _minor(principal * rate, buy_currency, ROUND_DOWN) if sell > fee else 0
        else:
            buy = amount_minor
            sell = _minor(_major(buy, buy_currency) / rate, sell_currency, ROUND_UP) + fee
    if buy <= 0:
        raise Problem(
            409, "amount-too-small", "Amount too small to send",
            f"After the {rule.name} fee of {format_minor(fee, sell_currency)} {sell_currency}, nothing "
            f"would arrive in {buy_currency}; send more than the fee.",
            fee={"amount": format_minor(fee, sell_currency), "currency": sell_currency},
        )
    for minor, currency in ((sell, sell_currency), (buy, buy_currency)):
        if minor >= 10**MAX_MINOR_DIGITS:
            raise Problem(409, "amount-too-large", "Amount too large",
                          f"The {currency} side would exceed {MAX_MINOR_DIGITS} digits in minor units.")
    return QuoteFigures(
        rail=rail, sell_currency=sell_currency, buy_currency=buy_currency, fixed_side=side,
        mid_rate=round_significant(mid), rate=rate, sell_minor=sell, fee_minor=fee, buy_minor=buy,
    )
