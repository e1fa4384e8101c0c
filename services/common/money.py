"""Money on the wire is a decimal string and an ISO 4217 code; in storage, integer minor units.

The exponent comes from ISO 4217 itself (the `iso4217` package): CNY 2, JPY 0, KWD 3.
An amount with more decimals than its currency has is refused, never rounded.
"""

from __future__ import annotations

from collections.abc import Iterable

import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

from iso4217 import Currency
from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, field_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# An amount in a request has at most 15 digits in minor units (under 10^15: 10 trillion CNY,
# 1 trillion KWD), so one amount, and the sum of thousands of them, fits a signed 64-bit
# integer (9.2 x 10^18) in every database, whatever the currency's exponent.
MAX_MINOR_DIGITS = 15


@lru_cache(maxsize=1)
def currency_exponents() -> dict[str, int]:
    """Every active ISO 4217 currency with a minor unit (funds and metals have none)."""
    return {c.code: c.exponent for c in Currency if c.exponent is not None and c.exponent <= 4}


# The sandbox's scenarios use these most; they come first in enums, so examples and fuzzers
# that favour early values start with the currencies the demo world holds.
FEATURED_CURRENCIES = ("CNY", "USD", "EUR", "GBP", "HKD", "SGD", "JPY", "KWD")


def currency_codes() -> list[str]:
    """Every supported code, featured ones first, then alphabetical."""
    featured = [c for c in FEATURED_CURRENCIES if c in currency_exponents()]
    return featured + sorted(set(currency_exponents()) - set(featured))


def exponent_of(currency: str) -> int:
    try:
        return currency_exponents()[currency]
    except KeyError:
        raise ValueError(f"{currency!r} is not an ISO 4217 currency with minor units") from None


def positive_amount_pattern(exponent: int, whole_digits: int | None = None) -> str:
    """A regex for a positive decimal with at most `exponent` decimals and no lookaheads:
    by default at most 15 digits in minor units (`whole_digits` overrides the digits before the
    point). Written without lookaheads so contract fuzzers can generate from it.
    """
    whole_digits = MAX_MINOR_DIGITS - exponent if whole_digits is None else whole_digits
    whole = f"[1-9][0-9]{{0,{whole_digits - 1}}}"
    if exponent == 0:
        return f"^{whole}$"
    fractions = "|".join(
        f"0{{{zeros}}}[1-9][0-9]{{0,{exponent - 1 - zeros}}}" for zeros in range(exponent)
    )
    return f"^({whole}(\\.[0-9]{{1,{exponent}}})?|0\\.({fractions}))$"


def any_positive_amount_pattern(codes: Iterable[str]) -> str:
    """Positive amounts in any of `codes`: up to the most decimals and the most digits before the
    point any of them allows (the per-currency bounds are the schema's `if`/`then`)."""
    exponents = {currency_exponents()[code] for code in codes}
    return positive_amount_pattern(max(exponents), MAX_MINOR_DIGITS - min(exponents))


@lru_cache(maxsize=8)
def _positive_amount(exponent: int) -> re.Pattern[str]:
    """The pattern compiled once, without its anchors: use it with `fullmatch` (`$` would
    also accept a trailing newline)."""
    return re.compile(positive_amount_pattern(exponent)[1:-1])


def to_minor(amount: str | Decimal, currency: str) -> int:
    """'12.34' CNY → 1234. Raises ValueError when the amount is over-precise for the currency."""
    exponent = exponent_of(currency)
    value = Decimal(amount)
    scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{currency} has {exponent} decimal places; {amount} has more")
    return int(scaled)


def format_minor(minor: int, currency: str) -> str:
    """1234 CNY → '12.34'; 1200 JPY → '1200'; -5 KWD → '-0.005'."""
    exponent = exponent_of(currency)
    if type(minor) is not int:
        return f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"
    if exponent == 0:
        return str(minor)
    whole, fraction = divmod(-minor if minor < 0 else minor, 10**exponent)
    return f"{'-' if minor < 0 else ''}{whole}.{fraction:0{exponent}d}"


class Money(BaseModel):
    """An amount as shown in responses: exponent-aware decimal string, sign allowed."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [{"amount": "12.34", "currency": "CNY"}]},
    )

    amount: str
    currency: str

    @classmethod
    def of(cls, minor: int, currency: str) -> Money:
        # Built without validation: format_minor makes the string from an integer and a
        # currency it knows (it raises otherwise), so the fields are right by construction.
        return cls.model_construct(amount=format_minor(minor, currency), currency=currency)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema = handler.resolve_ref_schema(schema)
        schema["properties"]["amount"]["pattern"] = r"^-?[0-9]+(\.[0-9]{1,4})?$"
        schema["properties"]["currency"]["pattern"] = "^[A-Z]{3}$"
        schema["description"] = "Decimal string in the currency's exponent, and an ISO 4217 code."
        return schema


class AmountIn(BaseModel):
    """A positive amount in a request. The currency comes first so the amount can be checked
    against its exponent; over-precise amounts (12.345 CNY) are refused, never rounded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str
    amount: str

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        exponent_of(value)
        return value

    @field_validator("amount")
    @classmethod
    def _amount_fits_currency(cls, value: str, info: Any) -> str:
        currency = info.data.get("currency")
        if currency is None:  # the currency error is already reported
            return value
        refusal = amount_refusal(value, currency)
        if refusal is not None:
            raise ValueError(refusal)
        return value

    @property
    def minor(self) -> int:
        return to_minor(self.amount, self.currency)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return amount_schema(
            "AmountIn",
            "A positive amount: decimal string with no more decimals than the ISO 4217 currency "
            "allows (CNY 2, JPY 0, KWD 3).",
            currency_codes(),
            {"amount": "100.00", "currency": "CNY"},
        )


_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")  # well formed, whatever its sign or precision


def amount_refusal(value: str, currency: str) -> str | None:
    """Why `value` is not a positive amount in `currency`, in words a client can act on, or None.
    The gateway says the same when it cannot screen a negative amount."""
    exponent = exponent_of(currency)
    if _positive_amount(exponent).fullmatch(value):
        return None
    if _DECIMAL.fullmatch(value) and (value.startswith("-") or not value.strip("-0.")):
        return f"must be positive: {value!r} is {'zero' if not value.strip('-0.') else 'negative'}"
    places = "no decimals" if exponent == 0 else f"at most {exponent} decimals"
    example = "12" + ("." + "3456"[:exponent] if exponent else "")
    return (f"must be a positive decimal string with {places} for {currency} and at most "
            f"{MAX_MINOR_DIGITS - exponent} digits before the point, e.g. {example!r}")


def amount_schema(title: str, description: str, codes: Iterable[str], example: dict[str, str]) -> JsonSchemaValue:
    """The JSON schema of an amount object: one object, so a generated client has one money type
    (not one per exponent). The amount's pattern admits the most decimals any of the currencies
    has; an `if`/`then` chain says how many each currency has, so validators and fuzzers know
    12.345 CNY is invalid, and a generator that skips `if` still builds one model. The service
    refuses an over-precise amount with a 422 naming `…amount.amount`, never rounding it."""
    codes = list(codes)
    by_exponent: dict[int, list[str]] = {}
    for code in codes:
        by_exponent.setdefault(currency_exponents()[code], []).append(code)
    # Most currencies have 2 decimals: they are the last `else`, so their codes are not repeated.
    common = max(by_exponent, key=lambda exp: len(by_exponent[exp]))
    precision: dict[str, Any] = {}
    rule: dict[str, Any] = {"properties": {"amount": {"pattern": positive_amount_pattern(common)}}}
    for exp in sorted(set(by_exponent) - {common}, reverse=True):  # JPY's rule first
        precision = rule = {
            "if": {"properties": {"currency": {"enum": by_exponent[exp]}}},
            "then": {"properties": {"amount": {"pattern": positive_amount_pattern(exp)}}},
            "else": rule,
        }
    return {
        "title": title,
        "description": (
            f"{description} The pattern admits the most decimals of any currency; the `if`/`then` "
            "rules give each currency its own. An amount with more decimals than its currency has "
            "(12.345 CNY), zero or a negative amount is answered 422 `validation-error` whose "
            "`errors` name the amount's field (`body.amount.amount`); nothing is rounded."
        ),
        "type": "object",
        "properties": {
            "amount": {"type": "string", "pattern": any_positive_amount_pattern(codes)},
            "currency": {"type": "string", "enum": codes},
        },
        "required": ["amount", "currency"],
        "additionalProperties": False,
        **precision,
        "examples": [example],
    }
