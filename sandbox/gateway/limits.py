"""A participant's restricted authorisation, as plain data and plain checks: testing window,
service and operation allow-list, per-transaction, daily-volume and customer limits, rate limit."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sandbox.gateway.screening import Transaction, path_regex
from services.common.clock import wire_time


def hash_key(api_key: str) -> str:
    """SHA-256 of the key. Enough because sandbox keys are long random strings: a fast hash is
    safe when guessing the input is hopeless, and it keeps the per-request check at ~1 µs.
    (bcrypt/argon2 slow down guessing of low-entropy human passwords, which keys are not.)"""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class AllowedOperation:
    service: str
    method: str
    path: str
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, text: str) -> AllowedOperation:
        """'payments POST /transfers' (paths may use {param} and **)."""
        service, method, path = text.split(" ", 2)
        return cls(service, method.upper(), path, path_regex(path))

    def __str__(self) -> str:
        return f"{self.service} {self.method} {self.path}"


@dataclass
class Policy:
    """What one participant may do; amounts in reporting-currency minor units."""

    id: str
    name: str
    status: str
    services: frozenset[str]
    operations: tuple[AllowedOperation, ...]
    window_from: datetime
    window_to: datetime
    max_single: int
    daily_volume: int
    max_customers: int
    rate_limit_per_minute: int
    kind: str = "participant"  # or "service": may act for a participant (X-Sandbox-On-Behalf-Of)


@dataclass
class Usage:
    """What a participant has used so far (the audit log's projection: rebuilt on start, and
    brought up to date with other replicas' entries before each decision). Requests still
    in flight are included: their amounts are held before forwarding (`hold_usage`), so
    parallel requests cannot all pass the same check, and given back if the service refuses."""

    day: int = -1  # UTC date ordinal the volume belongs to
    day_volume: int = 0  # accepted and held
    customers: set[str] = field(default_factory=set)  # accepted
    pending_customers: dict[str, int] = field(default_factory=dict)  # new customers held: holds each

    def serves(self, customer: str) -> bool:
        return customer in self.customers or customer in self.pending_customers

    def customer_count(self) -> int:
        pending = list(self.pending_customers)  # another thread may be applying a replica's entry
        return len(self.customers) + sum(1 for c in pending if c not in self.customers)


@dataclass(frozen=True)
class UsageHold:
    """What one forwarded request holds against its participant's limits."""

    day: int
    value: int
    new_customer: str | None  # a customer this request would add, held as pending


@dataclass(frozen=True)
class Breach:
    limit: str  # the limit's machine name, e.g. max_single_transaction
    detail: str


def check_standing(policy: Policy, now: datetime) -> Breach | None:
    """Status and testing window: whether the participant may act at all right now."""
    if policy.status != "active":
        return Breach("status", f"Participant {policy.id} is {policy.status}.")
    if not policy.window_from <= now < policy.window_to:
        return Breach("testing_window", f"The testing window runs from {wire_time(policy.window_from)} "
                      f"to {wire_time(policy.window_to)}; it is now {wire_time(now)}.")
    return None


def check_access(policy: Policy, service: str, method: str, path: str, now: datetime) -> Breach | None:
    """Status, testing window and allow-list: checked before anything is read or forwarded."""
    if (breach := check_standing(policy, now)) is not None:
        return breach
    if service not in policy.services:
        return Breach("allowed_services", f"{service} is not among the services this participant may "
                      f"call ({', '.join(sorted(policy.services))}).")
    if policy.operations:
        for op in policy.operations:
            if op.service == service and op.method == method and op.pattern.match(path):
                return None
        return Breach("allowed_operations", f"{method} {path} on {service} is not on this "
                      "participant's operation allow-list.")
    return None


def check_amounts(policy: Policy, usage: Usage, tx: Transaction, now: datetime, money: callable) -> Breach | None:
    """Boundary limits on a money-moving request; `money(minor)` formats amounts for the detail."""
    if tx.value > policy.max_single:
        return Breach("max_single_transaction", f"{money(tx.value)} is above the single-transaction "
                      f"limit of {money(policy.max_single)}.")
    day = now.astimezone(UTC).toordinal()
    used = usage.day_volume if usage.day == day else 0
    if used + tx.value > policy.daily_volume:
        return Breach("daily_volume", f"{money(used)} already moved today; {money(tx.value)} more "
                      f"would pass the daily limit of {money(policy.daily_volume)}.")
    if tx.customer is not None and not usage.serves(tx.customer) \
            and (count := usage.customer_count()) >= policy.max_customers:
        return Breach("max_customers", f"The participant already serves {count} "
                      f"customers, its limit; {tx.customer} would be a new one.")
    return None


def hold_usage(usage: Usage, tx: Transaction, now: datetime) -> UsageHold:
    """Count a money movement against the limits before it is forwarded. Called right after
    `check_amounts` with no await in between, so the check and the hold are one atomic step."""
    day = now.astimezone(UTC).toordinal()
    if day < usage.day:  # logged before midnight, applied after: today's volume is not its day's
        return UsageHold(day, 0, None)
    if usage.day != day:
        usage.day, usage.day_volume = day, 0
    usage.day_volume += tx.value
    new_customer = None
    if tx.customer is not None and tx.customer not in usage.customers:
        new_customer = tx.customer
        usage.pending_customers[new_customer] = usage.pending_customers.get(new_customer, 0) + 1
    return UsageHold(day, tx.value, new_customer)


def _unpend(usage: Usage, customer: str) -> None:
    left = usage.pending_customers.get(customer, 0) - 1
    if left > 0:
        usage.pending_customers[customer] = left
    else:
        usage.pending_customers.pop(customer, None)


def commit_usage(usage: Usage, hold: UsageHold) -> None:
    """The service accepted the movement: the held amount stays, the customer becomes a customer."""
    if hold.new_customer is not None:
        _unpend(usage, hold.new_customer)
        usage.customers.add(hold.new_customer)


def release_usage(usage: Usage, hold: UsageHold) -> None:
    """The service refused the movement, or could not be reached: give the hold back."""
    if usage.day == hold.day:
        usage.day_volume -= hold.value
    if hold.new_customer is not None:
        _unpend(usage, hold.new_customer)


def record_usage(usage: Usage, tx: Transaction, now: datetime) -> None:
    """A money movement the service accepted counts against the limits (rebuilding on start)."""
    commit_usage(usage, hold_usage(usage, tx, now))


RATE_WINDOW_S = 60


@dataclass(frozen=True)
class RateState:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """IETF draft RateLimit header fields (as Kong sends them)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit};w={RATE_WINDOW_S}",
        }


def rate_window(now_s: float) -> int:
    """The fixed one-minute window a moment falls in, on the gateway's clock."""
    return int(now_s // RATE_WINDOW_S)


def rate_state(policy: Policy, count: int, now_s: float) -> RateState:
    """Whether the request that made the window's count `count` (itself included) may pass."""
    reset = max(1, int((rate_window(now_s) + 1) * RATE_WINDOW_S - now_s + 0.999))
    limit = policy.rate_limit_per_minute
    if count > limit:
        return RateState(False, limit, 0, reset)
    return RateState(True, limit, limit - count, reset)
