"""Domain events, never lost: a transactional outbox in each service's own database.

A service records what happened with `record_event(session, ...)` inside the unit of work that
makes the change: the event commits with the transfer, the decision or the consent, or not at
all, so no event is ever sent for a change that was rolled back and no change goes without its
event. Nothing is pushed from inside the transaction.

The gateway relays them: it reads the events not yet published (`GET /_sandbox/events`, oldest
first), stores each by its id (so reading one twice is harmless), then marks them published
(`POST /_sandbox/events/published`). Under the gateway `/_sandbox/*` takes the regulator's key,
so participants see events only through the gateway's own events API, each its own.

Why a `published` mark rather than a cursor over `seq`: on PostgreSQL two units of work commit
in any order, so a row with a smaller `seq` can become visible after a larger one was read; a
reader that skipped past it would lose it. Unpublished rows are read until they are marked.

Event types are `<service>.<resource>.<what happened>` (`payments.transfer.completed`,
`credit.loan.disbursed`); `data` is the resource as the service's API shows it, so a receiver
needs no second call to act on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from services.common.db import DatabaseDep, UTCDateTime
from services.common.ids import new_id
from services.common.problems import problem_responses

OUTBOX_TABLE = "outbox_events"
MAX_BATCH = 500


def outbox_table(metadata: MetaData) -> Table:
    """The outbox, created in each service's own database (next to its idempotency keys)."""
    return Table(
        OUTBOX_TABLE,
        metadata,
        Column("seq", Integer, primary_key=True, autoincrement=True),  # the order events were recorded
        Column("id", String(40), nullable=False, unique=True),  # evt_…: stable across relays
        Column("type", String(80), nullable=False, index=True),
        # Whose resource it is about: the participant that owns it (None: the sandbox's own).
        Column("participant_id", String(40), index=True),
        Column("subject_id", String(80), nullable=False),  # the resource's id (tr_…, loan_…, a consent id)
        Column("occurred_at", UTCDateTime(), nullable=False),  # by the service's clock
        Column("data", Text, nullable=False),  # JSON object
        Column("published_at", UTCDateTime(), index=True),  # when the gateway took it; None until then
    )


def record_event(
    session: Session | Connection,
    table: Table,
    type: str,  # noqa: A002 - the event's type, as Standard Webhooks and Stripe name it
    *,
    subject_id: str,
    participant_id: str | None,
    occurred_at: datetime,
    data: Mapping[str, Any],
) -> str:
    """Write one event in the caller's transaction; returns its id (`evt_…`)."""
    event_id = new_id("evt")
    session.execute(insert(table).values(
        id=event_id, type=type, participant_id=participant_id, subject_id=subject_id,
        occurred_at=occurred_at, data=json.dumps(data, separators=(",", ":"), default=str)))
    return event_id


class OutboxEvent(BaseModel):
    """One event as the service recorded it."""

    seq: int = Field(description="Its place in this service's outbox (recording order).")
    id: str = Field(examples=["evt_01m98j2x4h2qta9mk9rdkjhs71"])
    type: str = Field(examples=["payments.transfer.completed"])
    participant_id: str | None = Field(description="The participant owning the resource it is about.")
    subject_id: str = Field(description="The id of the resource it is about.")
    occurred_at: datetime
    data: dict[str, Any] = Field(description="The resource as this service's API shows it.")


class OutboxPage(BaseModel):
    data: list[OutboxEvent]


class PublishedIds(BaseModel):
    """Events the relay has stored: mark them published, so they are not read again."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(max_length=MAX_BATCH)


class PublishedCount(BaseModel):
    published: int = Field(description="How many of the ids were still unpublished and are marked now.")


def unpublished_events(session: Session, table: Table, limit: int) -> list[OutboxEvent]:
    rows = session.execute(
        select(table).where(table.c.published_at.is_(None)).order_by(table.c.seq).limit(limit)).all()
    return [OutboxEvent(seq=r.seq, id=r.id, type=r.type, participant_id=r.participant_id,
                        subject_id=r.subject_id, occurred_at=r.occurred_at, data=json.loads(r.data))
            for r in rows]


def outbox_router(table: Table) -> APIRouter:
    router = APIRouter(prefix="/_sandbox", tags=["sandbox"])

    @router.get("/events", operation_id="read_unpublished_events", response_model=OutboxPage,
                responses=problem_responses(422))
    async def read_unpublished_events(
        database: DatabaseDep,
        limit: Annotated[int, Query(ge=1, le=MAX_BATCH, description="At most this many, oldest first.")] = 100,
    ) -> OutboxPage:
        """The events not yet published, oldest first: what the gateway's relay reads next."""
        return OutboxPage(data=await database.read(lambda session: unpublished_events(session, table, limit)))

    @router.post("/events/published", operation_id="mark_events_published", response_model=PublishedCount,
                 responses=problem_responses(422))
    async def mark_events_published(body: PublishedIds, database: DatabaseDep) -> PublishedCount:
        """Mark events published once the relay has stored them (marking one twice is harmless)."""
        def mark(session: Session) -> PublishedCount:
            if not body.ids:
                return PublishedCount(published=0)
            done = session.execute(update(table).where(table.c.id.in_(body.ids), table.c.published_at.is_(None))
                                   .values(published_at=datetime.now(UTC))).rowcount
            return PublishedCount(published=done)

        # In a worker thread, not on the loop (where `Database.run` puts SQLite's units): the mark
        # may wait for the writer lock held by one of this service's own requests, and that
        # request may be waiting on a call that needs this process's loop (a hop through the
        # gateway served in-process, as in tests).
        return await run_in_threadpool(database.unit_of_work, mark)

    return router
