"""Field types every service's request models reuse, so the contract says what is valid."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from services.common.ids import id_pattern
from services.common.money import currency_codes, currency_exponents

# Printable text with at least one non-space character: no NUL or control characters, which
# PostgreSQL refuses in text columns and no statement should carry.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"


def Text(  # noqa: N802
    max_length: int,
    description: str | None = None,
    examples: list[str] | None = None,
    *,
    optional: bool = False,
):
    """Printable text; `optional=True` makes the field default to null."""
    return Field(
        None if optional else ...,
        min_length=1,
        max_length=max_length,
        pattern=TEXT_PATTERN,
        description=description,
        examples=examples,
    )


def _known_currency(value: str) -> str:
    if value not in currency_exponents():
        raise ValueError(f"{value!r} is not an ISO 4217 currency with minor units")
    return value


CurrencyCode = Annotated[
    str,
    AfterValidator(_known_currency),
    WithJsonSchema(
        {
            "type": "string",
            "enum": currency_codes(),
            "description": "ISO 4217 alphabetic code",
            "examples": ["CNY"],
        }
    ),
]


def IdField(prefix: str, description: str | None = None, examples: list[str] | None = None):  # noqa: N802
    """A body field holding an id with the given prefix (or `a|b` alternation)."""
    return Field(pattern=id_pattern(f"({prefix})" if "|" in prefix else prefix),
                 description=description, examples=examples)


def IdPath(prefix: str, description: str | None = None):  # noqa: N802
    return Path(pattern=id_pattern(f"({prefix})" if "|" in prefix else prefix), description=description)


def _json_integer(value: object) -> object:
    # JSON Schema's integer: 3 and 3.0, but not true, "3" or 3.5 (pydantic's lax mode takes
    # the first two, strict mode refuses 3.0; contract fuzzers send all of them).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be an integer")
    return int(value)


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
