"""Fixed-point quantities: fund units in micro-units (6 dp), NAVs in 1/10,000 CNY (4 dp, as
Chinese fund NAVs are quoted), cash in fen. Integers in storage, decimal strings on the wire."""

from __future__ import annotations

from decimal import Decimal

UNIT_DP = 6
NAV_DP = 4
_VALUE_DIVISOR = 10 ** (UNIT_DP + NAV_DP - 2)  # micro-units x NAV(e4) → fen


def units_for(amount_minor: int, nav_e4: int) -> int:
    """Units a cash amount buys, rounded down to the micro-unit (the fund keeps the crumb)."""
    return amount_minor * _VALUE_DIVISOR // nav_e4


def value_of(units_micro: int, nav_e4: int) -> int:
    """Fen a holding is worth (or a sale pays), rounded down."""
    return units_micro * nav_e4 // _VALUE_DIVISOR


def format_units(units_micro: int) -> str:
    return f"{Decimal(units_micro).scaleb(-UNIT_DP):.{UNIT_DP}f}"


def format_nav(nav_e4: int) -> str:
    return f"{Decimal(nav_e4).scaleb(-NAV_DP):.{NAV_DP}f}"


def parse_nav(text: str) -> int:
    return int(Decimal(text).scaleb(NAV_DP))
