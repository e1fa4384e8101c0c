"""The door's application-level guards, pure and clock-injected: a JSON nesting check that never
recurses, and a per-address rate limit for requests without a valid key whose logging stays
bounded under a flood. (The connection-level guards live in sandbox/server.py.)"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

# --- JSON nesting -------------------------------------------------------------------------------

DEFAULT_MAX_JSON_DEPTH = 32  # money-moving bodies are three or four levels deep

_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OBJECTS_AS_ARRAYS = bytes.maketrans(b"{}", b"[]")


def json_depth_exceeds(body: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> bool:
    """True when `body` opens more than `max_depth` arrays/objects inside one another (brackets in
    strings, escaped quotes included, do not count). No recursion and no Python loop over the
    bytes: every step runs in C over the whole body."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False  # too few brackets in all to nest that deep: the common case, ~1 µs
    if b"\\" in body:
        # Escapes go left to right as a JSON parser reads them: "\\" pairs, then escaped quotes.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Now every quote opens or closes a string: keep what lies outside them (an unterminated
    # string's rest is dropped, for the JSON parser to refuse).
    body = b"".join(body.split(b'"')[::2])
    brackets = body.translate(_OBJECTS_AS_ARRAYS, _NOT_BRACKETS)
    if b"[" * (max_depth + 1) in brackets:
        return True  # openers in a row are inside one another: the usual attack, found at once
    # Each pass removes the innermost pairs ("[]"): a pair goes in as many passes as it is deep.
    for _ in range(max_depth):
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
    if b"[]" in brackets:
        return True  # a pair still there after max_depth passes is nested deeper
    # Only brackets that never match are left, closers before openers. The JSON parser stops at
    # the first closer; openers never closed nest as deep as their count (and what they hold).
    return not brackets.startswith(b"]") and len(brackets) > max_depth


# --- requests without a valid key ------------------------------------------------------------

OVERFLOW_ADDRESS = "(addresses no longer tracked)"


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class FloodSummary:
    """The refusals of one address in one window that were not logged one by one."""

    address: str
    unlogged: int  # requests refused in the window and not logged individually
    refused: int  # every refusal in the window, the logged ones included
    limited: int  # of those, how many were answered 429 (past the rate)
    first_at: float  # epoch seconds of the window's first refusal
    last_at: float

    @property
    def first_iso(self) -> str:
        return _iso(self.first_at)

    @property
    def last_iso(self) -> str:
        return _iso(self.last_at)

    def describe(self) -> str:
        return (f"flood: {self.refused} requests refused from {self.address} between {self.first_iso} "
                f"and {self.last_iso} ({self.limited} rate-limited, {self.unlogged} not logged one by one)")

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "unlogged": self.unlogged, "refused": self.refused,
                "limited": self.limited, "first_at": self.first_iso, "last_at": self.last_iso,
                "detail": self.describe()}


class Verdict(NamedTuple):
    allowed: bool  # False: answer 429 with Retry-After instead of 401/403
    retry_after_s: int  # whole seconds until this address has a token again (0 when allowed)
    log_now: bool  # write this refusal as its own audit entry
    summary: FloodSummary | None  # an earlier window of this address just closed: log it once


@dataclass
class _Address:
    tokens: float
    refilled_at: float
    window_start: float
    refused: int = 0
    limited: int = 0
    first_at: float = 0.0
    last_at: float = 0.0

    def summary(self, address: str, logged_per_window: int) -> FloodSummary | None:
        unlogged = self.refused - min(self.refused, logged_per_window)
        if unlogged == 0:
            return None
        return FloodSummary(address, unlogged, self.refused, self.limited, self.first_at, self.last_at)


@dataclass
class _Overflow:
    """Flood counts of addresses evicted before their window closed, folded into one summary."""

    refused: int = 0
    unlogged: int = 0
    limited: int = 0
    first_at: float = math.inf
    last_at: float = 0.0

    def add(self, summary: FloodSummary) -> None:
        self.refused += summary.refused
        self.unlogged += summary.unlogged
        self.limited += summary.limited
        self.first_at = min(self.first_at, summary.first_at)
        self.last_at = max(self.last_at, summary.last_at)


@dataclass
class UnauthenticatedLimiter:
    """A token bucket per client address for requests refused for a missing or unknown key, and
    the plan for logging them: the first `logged_per_window` refusals of an address in a window
    get their own audit entry, the rest are counted and logged as one summary when the window
    closes (on the address's next refusal, or from `due_summaries` on a timer). At most
    `tracked_addresses` are remembered; the least recently seen is forgotten first."""

    per_minute: float = 30.0
    burst: int = 30
    window_s: float = 60.0
    logged_per_window: int = 5
    tracked_addresses: int = 10_000
    _addresses: OrderedDict[str, _Address] = field(default_factory=OrderedDict, init=False, repr=False)
    _overflow: _Overflow = field(default_factory=_Overflow, init=False, repr=False)
    # The regulator's override of the budget (per minute, burst, until when), e.g. raised for a
    # contract-testing run or lowered to show a flood; it lapses on its own.
    _override: tuple[float, int, float] | None = field(default=None, init=False, repr=False)

    def budget(self, now: float) -> tuple[float, int, float | None]:
        """(per minute, burst, override's end or None) in force at `now` (epoch seconds)."""
        if self._override is not None:
            per_minute, burst, until = self._override
            if now < until:
                return per_minute, burst, until
            self._override = None
        return self.per_minute, self.burst, None

    def override(self, per_minute: float, burst: int, until: float) -> None:
        """Put another budget in force until `until`; every address starts it with a full bucket."""
        self._override = (per_minute, burst, until)
        for state in self._addresses.values():
            state.tokens = float(burst)

    def restore(self) -> None:
        """Back to the configured budget; every address starts it with a full bucket."""
        self._override = None
        for state in self._addresses.values():
            state.tokens = float(self.burst)

    def take(self, address: str, now: float) -> Verdict:
        """Count one refusal from `address` at `now` (epoch seconds)."""
        per_minute, burst, _ = self.budget(now)
        state = self._addresses.get(address)
        if state is None:
            state = self._track(address, now, burst)
        else:
            self._addresses.move_to_end(address)
        summary = None
        if now - state.window_start >= self.window_s:
            summary = state.summary(address, self.logged_per_window)
            state.window_start, state.refused, state.limited = now, 0, 0
        self._refill(state, now, per_minute, burst)
        allowed = state.tokens >= 1.0
        retry_after_s = 0
        if allowed:
            state.tokens -= 1.0
        else:
            state.limited += 1
            retry_after_s = max(1, math.ceil((1.0 - state.tokens) * 60.0 / per_minute))
        if state.refused == 0:
            state.first_at = now
        state.refused += 1
        state.last_at = now
        return Verdict(allowed, retry_after_s, state.refused <= self.logged_per_window, summary)

    def due_summaries(self, now: float) -> list[FloodSummary]:
        """Summaries of windows that have closed with refusals not yet logged, and of forgotten
        addresses: for a periodic task, so a flood that stops is still logged."""
        due = []
        for address, state in self._addresses.items():
            if now - state.window_start >= self.window_s:
                summary = state.summary(address, self.logged_per_window)
                if summary is not None:
                    due.append(summary)
                # Closed and summarised: the next refusal opens a fresh window.
                state.window_start, state.refused, state.limited = now, 0, 0
        if self._overflow.refused:
            o = self._overflow
            due.append(FloodSummary(OVERFLOW_ADDRESS, o.unlogged, o.refused, o.limited, o.first_at, o.last_at))
            self._overflow = _Overflow()
        return due

    def _track(self, address: str, now: float, burst: int) -> _Address:
        while len(self._addresses) >= self.tracked_addresses:
            forgotten, old = self._addresses.popitem(last=False)
            summary = old.summary(forgotten, self.logged_per_window)
            if summary is not None:
                self._overflow.add(summary)
        state = _Address(tokens=float(burst), refilled_at=now, window_start=now)
        self._addresses[address] = state
        return state

    @staticmethod
    def _refill(state: _Address, now: float, per_minute: float, burst: int) -> None:
        elapsed = max(0.0, now - state.refilled_at)  # a wall clock set back never drains tokens
        state.tokens = min(float(burst), state.tokens + elapsed * per_minute / 60.0)
        state.refilled_at = now
