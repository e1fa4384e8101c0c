"""Cursor pagination: stable under inserts, since ids sort by creation and never change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

T = TypeVar("T")

LimitQuery = Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=r"^[A-Za-z0-9_]+$",
        description="`next_cursor` from the previous page; omit for the first page.",
    ),
]


class Page(BaseModel, Generic[T]):
    """One page of a list, and the cursor for the next one (null on the last page)."""

    data: list[T]
    next_cursor: str | None
    has_more: bool


def page_of(items: list[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """`items` was fetched with limit + 1 rows; the extra row only says whether more exist."""
    has_more = len(items) > limit
    items = items[:limit]
    return Page[T](
        data=items,
        next_cursor=cursor_of(items[-1]) if has_more and items else None,
        has_more=has_more,
    )
