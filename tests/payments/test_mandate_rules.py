"""The mandate rules (services/payments/mandates.py) as plain functions, with near misses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.payments.mandates import CapExceeded, cap_exceeded, live_at, period_bounds, status_of


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


@pytest.mark.parametrize(("now", "period", "start", "end"), [
    ("2026-01-05T09:00:00+00:00", "day", "2026-01-05T00:00:00+00:00", "2026-01-06T00:00:00+00:00"),
    ("2026-01-11T23:59:59+00:00", "week", "2026-01-05T00:00:00+00:00", "2026-01-12T00:00:00+00:00"),  # Sunday
    ("2026-01-12T00:00:00+00:00", "week", "2026-01-12T00:00:00+00:00", "2026-01-19T00:00:00+00:00"),  # Monday
    ("2026-12-31T23:59:59+00:00", "month", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
    ("2028-02-29T12:00:00+00:00", "month", "2028-02-01T00:00:00+00:00", "2028-03-01T00:00:00+00:00"),
    # 01:00 in Beijing on 1 February is still 31 January in UTC: periods are UTC's.
    ("2026-02-01T01:00:00+08:00", "month", "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
])
def test_periods_are_utc_calendar_periods(now: str, period: str, start: str, end: str) -> None:
    assert period_bounds(at(now), period) == (at(start), at(end))


def test_status_is_revoked_then_expired_then_active() -> None:
    expires = datetime(2026, 2, 1, tzinfo=UTC)
    assert status_of(None, expires, expires - timedelta(microseconds=1)) == "active"
    assert status_of(None, expires, expires) == "expired"
    assert status_of(expires - timedelta(days=3), expires, expires + timedelta(days=1)) == "revoked"


def test_a_debit_is_covered_only_while_the_mandate_is_live() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    expires, revoked = created + timedelta(days=30), created + timedelta(days=10)
    assert live_at(None, expires, created, created)
    assert not live_at(None, expires, created, created - timedelta(seconds=1))
    assert not live_at(None, expires, created, expires)
    assert live_at(revoked, expires, created, revoked - timedelta(seconds=1))
    assert not live_at(revoked, expires, created, revoked)


@pytest.mark.parametrize(("amount", "used", "refusal"), [
    (5_000, 0, None),  # exactly the cap per debit
    (5_001, 0, CapExceeded("max_per_debit", 5_000)),
    (3_000, 5_000, None),  # exactly the period's cap
    (3_001, 5_000, CapExceeded("max_per_period", 3_000)),
    (6_000, 5_000, CapExceeded("max_per_debit", 3_000)),  # both: the cap per debit is named
    (1, 9_000, CapExceeded("max_per_period", 0)),  # already past (a cap lowered by hand)
])
def test_caps_and_the_headroom_left(amount: int, used: int, refusal: CapExceeded | None) -> None:
    assert cap_exceeded(amount, max_per_debit_minor=5_000, max_per_period_minor=8_000,
                        used_this_period_minor=used) == refusal


def test_an_unknown_period_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        period_bounds(datetime(2026, 1, 1, tzinfo=UTC), "year")
