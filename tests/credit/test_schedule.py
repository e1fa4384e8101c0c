"""Equal monthly instalments in integer minor units."""

from __future__ import annotations

from datetime import date

from services.credit.schedule import add_months, equal_instalments


def test_instalments_repay_the_principal_exactly() -> None:
    plan = equal_instalments(2_000_000, 720, 12, date(2026, 1, 5))
    assert sum(i.principal_minor for i in plan) == 2_000_000
    assert len(plan) == 12


def test_instalments_are_equal_but_the_last_absorbs_rounding() -> None:
    plan = equal_instalments(2_000_000, 720, 12, date(2026, 1, 5))
    totals = {i.total_minor for i in plan[:-1]}
    assert totals == {173_238}  # CNY 1,732.38 a month at 7.2% APR
    assert abs(plan[-1].total_minor - 173_238) <= 12


def test_interest_falls_as_the_balance_falls() -> None:
    plan = equal_instalments(2_000_000, 1540, 6, date(2026, 1, 5))
    interest = [i.interest_minor for i in plan]
    assert interest == sorted(interest, reverse=True)
    assert interest[0] == round(2_000_000 * 0.154 / 12)


def test_due_dates_fall_monthly_and_respect_short_months() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert [i.due_date for i in equal_instalments(1000, 0, 2, date(2026, 1, 5))] == [
        date(2026, 2, 5), date(2026, 3, 5)]
