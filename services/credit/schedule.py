"""Equal monthly instalments (an annuity) in integer minor units; the last absorbs rounding."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True)
class Instalment:
    number: int
    due_date: date
    principal_minor: int
    interest_minor: int

    @property
    def total_minor(self) -> int:
        return self.principal_minor + self.interest_minor


def add_months(start: date, months: int) -> date:
    month = start.month - 1 + months
    year, month = start.year + month // 12, month % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def equal_instalments(principal_minor: int, apr_bps: int, months: int, start: date) -> list[Instalment]:
    rate = Decimal(apr_bps) / Decimal(10_000) / 12
    if rate == 0:
        payment = Decimal(principal_minor) / months
    else:
        payment = Decimal(principal_minor) * rate / (1 - (1 + rate) ** -months)
    payment = payment.quantize(Decimal(1), ROUND_HALF_UP)
    balance, plan = principal_minor, []
    for number in range(1, months + 1):
        interest = int((Decimal(balance) * rate).quantize(Decimal(1), ROUND_HALF_UP))
        principal = balance if number == months else min(balance, int(payment) - interest)
        balance -= principal
        plan.append(Instalment(number, add_months(start, number), principal, interest))
    return plan
