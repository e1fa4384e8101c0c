"""One injectable clock per service, so tests and lessons can move time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock time plus an offset that only ever moves forward."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._frozen = start.astimezone(UTC) if start else None
        self._offset = timedelta()

    def now(self) -> datetime:
        base = self._frozen if self._frozen is not None else datetime.now(UTC)
        return base + self._offset

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta():
            raise ValueError("time only moves forward")
        with self._lock:
            self._offset += delta
        return self.now()

    def reset(self) -> datetime:
        """Back to where it started (its start, or real time): the sandbox's reset, the one move back."""
        with self._lock:
            self._offset = timedelta()
        return self.now()

    @property
    def frozen(self) -> bool:
        return self._frozen is not None


def wire_time(moment: datetime) -> str:
    """A time as the API writes it everywhere (pydantic's form): UTC, with a trailing Z. For
    times put into a problem's text or extensions, which no response model serialises. A naive
    time is the database's UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def frozen_clock(iso: str = "2026-01-05T09:00:00+00:00") -> Clock:
    """A clock that stands still until advanced: for tests and replayable scenarios."""
    return Clock(datetime.fromisoformat(iso))
