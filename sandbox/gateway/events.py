"""The gateway's events store and the relay that fills it from the services' outboxes.

**The cursor is commit order.** The events API hands out `seq` as a cursor (`GET /events?after=`).
On PostgreSQL two transactions commit in any order, so with a database sequence a reader could
see seq 8 committed, move its cursor past it, and then miss seq 7 committing a moment later.
Here every insert into the store, the relay's and the gateway's own, is made under the log
lock (sandbox/gateway/shared.py: PostgreSQL's advisory lock, SQLite's write lock), held until its
transaction commits, and seq is the stored maximum plus one, read under that lock. So a
transaction that takes seq n has committed before any transaction takes n+1, on SQLite and
PostgreSQL alike, however many gateway replicas write; a rolled-back insert takes nothing.

**Lock order.** Take `EventStore.writing()` (this process's turn) before the transaction
begins, never inside one:
the relay, the regulator's changes and the audit append all do (`Gateway.audit` takes it only
for an entry that opens an alert), so no writer holds SQLite's lock while waiting for this one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from sandbox.gateway.models import StoredEvent
from sandbox.gateway.shared import lock_log
from services.common.ids import new_id

log = logging.getLogger("sandbox.gateway.events")

EVENTS = StoredEvent.__table__  # type: ignore[attr-defined]
SANDBOX_SOURCE = "sandbox"  # the gateway's own events
RELAY_TIMEOUT_S = 5.0


class EventStore:
    """Appends to the events table, one writer at a time, with seq in commit order."""

    def __init__(self, engine: Engine, reader: Engine | None = None) -> None:
        self.engine = engine
        self.reader = reader or engine  # a SQLite file's read-only engine: no write lock for a read
        self._lock = threading.RLock()
        self.stored_since_start = 0  # how many events this process stored (the dispatcher's wake-up)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold across the transaction that inserts, up to and including its commit."""
        with self._lock:
            yield

    @staticmethod
    def head_in(conn: Connection | Session) -> int:
        """The last seq stored, read in the caller's transaction (an endpoint registered now is
        owed what comes after)."""
        return conn.execute(select(func.max(EVENTS.c.seq))).scalar() or 0

    def committed_head(self) -> int:
        """The last seq whose transaction has committed, by any replica. Seqs are taken under
        the log lock until commit, so every seq below it has committed too (the fan-out reads
        up to it and never skips one still on its way)."""
        with self.reader.connect() as conn:
            return self.head_in(conn)

    def insert(self, conn: Connection | Session, events: Sequence[Mapping[str, Any]]) -> int:
        """Insert events (inside `writing()`) whose ids are not stored yet; how many were new."""
        if not events:
            return 0
        lock_log(conn.connection() if isinstance(conn, Session) else conn)
        ids = [e["id"] for e in events]
        known = set(conn.execute(select(EVENTS.c.id).where(EVENTS.c.id.in_(ids))).scalars())
        next_seq = self.head_in(conn) + 1
        now = datetime.now(UTC)
        rows = []
        for event in events:
            if event["id"] in known:
                continue
            known.add(event["id"])
            rows.append({**event, "seq": next_seq, "stored_at": now})
            next_seq += 1
        if rows:
            conn.execute(insert(EVENTS), rows)
            self.stored_since_start += len(rows)
        return len(rows)


def own_event(type_: str, participant_id: str | None, subject_id: str, occurred_at: datetime,
              data: Mapping[str, Any]) -> dict[str, Any]:
    """One of the gateway's own events (`sandbox.…`), ready for `EventStore.insert`."""
    return {"id": new_id("evt"), "type": type_, "source": SANDBOX_SOURCE, "participant_id": participant_id,
            "subject_id": subject_id, "occurred_at": occurred_at,
            "data": json.dumps(data, separators=(",", ":"), default=str)}


def _relayed(service: str, event: Mapping[str, Any]) -> dict[str, Any]:
    occurred = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))
    return {"id": str(event["id"]), "type": str(event["type"]), "source": service,
            "participant_id": event.get("participant_id"), "subject_id": str(event["subject_id"]),
            "occurred_at": occurred.astimezone(UTC) if occurred.tzinfo else occurred.replace(tzinfo=UTC),
            "data": json.dumps(event.get("data", {}), separators=(",", ":"), default=str)}


class Relay:
    """Reads each service's unpublished events on its own port (`GET /_sandbox/events`), stores
    them, then marks them published: at least once from the outbox, exactly once in the store
    (an event read again after a crash between the two steps is already there by its id)."""

    def __init__(self, engine: Engine, store: EventStore, upstreams: Mapping[str, str],
                 client: Any, batch: int, rounds: int = 10) -> None:
        self.engine = engine
        self.store = store
        self.upstreams = dict(upstreams)
        self._client = client  # a callable giving the gateway's shared httpx client
        self.batch = batch
        self.rounds = rounds  # batches per service per pass: one busy outbox cannot hold the others
        self._running = asyncio.Lock()
        self.stored = 0  # stored by this process's relay, for the clock's answer and the bench
        self.on_stored: list[Any] = []  # callbacks after a pass stored something (the dispatcher)

    async def relay_once(self) -> int:
        """One pass over every service; how many new events were stored. Passes never overlap
        (the timer's and a clock move's): the second waits and reads what is left."""
        async with self._running:
            stored = 0
            for service, base in self.upstreams.items():
                stored += await self._relay_service(service, base)
        if stored:
            for callback in self.on_stored:
                callback()
        return stored

    async def _relay_service(self, service: str, base: str) -> int:
        stored = 0
        for _ in range(self.rounds):
            try:
                answer = await self._client().get(f"{base}/_sandbox/events", params={"limit": self.batch},
                                                  timeout=RELAY_TIMEOUT_S)
            except httpx.HTTPError as exc:
                log.debug("relay: %s unreachable: %r", service, exc)
                return stored
            if answer.status_code == 404:  # a service without an outbox (yet): nothing to relay
                return stored
            if answer.status_code != 200:
                log.warning("relay: %s answered %s to GET /_sandbox/events", service, answer.status_code)
                return stored
            events = answer.json().get("data", [])
            if not events:
                return stored
            rows = [_relayed(service, e) for e in events]
            stored += await asyncio.to_thread(self._store, rows)
            marked = await self._client().post(f"{base}/_sandbox/events/published",
                                               json={"ids": [e["id"] for e in rows]}, timeout=RELAY_TIMEOUT_S)
            if marked.status_code != 200:  # read again next pass; storing them twice is harmless
                log.warning("relay: %s answered %s to marking events published", service, marked.status_code)
                return stored
            if len(events) < self.batch:
                return stored
        return stored

    def _store(self, rows: list[dict[str, Any]]) -> int:
        with self.store.writing(), self.engine.begin() as conn:
            stored = self.store.insert(conn, rows)
        self.stored += stored
        return stored

    async def run_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.relay_once()
            except Exception:  # noqa: BLE001 - keep the relay alive; unpublished events wait
                log.exception("relay pass failed; the events stay unpublished and are read again")
