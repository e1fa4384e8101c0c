"""A debit mandate's rules as plain functions over plain data: no HTTP, no database.

A mandate lets its grantee debit one account within a cap per debit and a cap per UTC calendar
period (day, week from Monday, month), until it expires or its grantor revokes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def period_bounds(now: datetime, period: str) -> tuple[datetime, datetime]:
    """The calendar period (UTC) `now` falls in: [start, end)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise ValueError(f"unknown mandate period {period!r}")


def status_of(revoked_at: datetime | None, expires_at: datetime, now: datetime) -> str:
    """active, revoked or expired; a revocation is shown even after the expiry."""
    if revoked_at is not None:
        return "revoked"
    return "expired" if now >= expires_at else "active"


def live_at(revoked_at: datetime | None, expires_at: datetime, created_at: datetime, moment: datetime) -> bool:
    """Whether the mandate could debit at `moment` (for checking past journals against it)."""
    return created_at <= moment < expires_at and (revoked_at is None or moment < revoked_at)


@dataclass(frozen=True)
class CapExceeded:
    limit: str  # max_per_debit | max_per_period: the cap the debit breaks
    remaining_minor: int  # the largest debit both caps still allow now


def cap_exceeded(amount_minor: int, max_per_debit_minor: int, max_per_period_minor: int,
                 used_this_period_minor: int) -> CapExceeded | None:
    """The cap a debit of `amount_minor` would break, if any, and the headroom left."""
    period_left = max(max_per_period_minor - used_this_period_minor, 0)
    remaining = min(max_per_debit_minor, period_left)
    if amount_minor > max_per_debit_minor:
        return CapExceeded("max_per_debit", remaining)
    if amount_minor > period_left:
        return CapExceeded("max_per_period", remaining)
    return None
