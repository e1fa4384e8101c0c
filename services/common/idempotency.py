"""Idempotency-Key handling with Stripe's semantics.

- Same key, same request: the saved status and body, with `Idempotent-Replayed: true`.
- Same key, another request (method, path or body differ): 409 `idempotency-key-reused`.
- Same key while the first request is still running: 409 `idempotency-key-in-flight`.
- Keys are kept 24 hours (by the service clock); an older key counts as new.
- A request that fails validation saves nothing. A business refusal (4xx) after the work began
  is saved and replayed like a success. A crash, or a 5xx problem such as a dependency that is
  down (503), rolls the work back and forgets the key, so a retry runs again: nothing was
  applied, and the client gets another chance. (Stripe replays its 500s; here the rollback
  proves nothing happened, so replaying "unavailable" for 24 hours would only block retries.)

The saved response is written in the same transaction as the work, so a key is applied at most
once: the work and its record commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.common.caller import DIRECT_CALLER, Caller, caller_of
from services.common.clock import Clock
from services.common.db import Database, UTCDateTime
from services.common.ids import new_id
from services.common.problems import PROBLEM_MEDIA_TYPE, Problem

JSON = "application/json"
RETENTION = timedelta(hours=24)
REPLAY_HEADER = "Idempotent-Replayed"
KEY_HEADER_DOC = (
    "A unique key (a V4 UUID is advised) that makes this request safe to retry: the same key "
    "and body return the saved response; another body with the same key is refused (409)."
)

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=KEY_HEADER_DOC,
    ),
]


def idempotency_table(metadata: MetaData) -> Table:
    """The key store, created in each service's own database."""
    return Table(
        "idempotency_keys",
        metadata,
        Column("id", String(40), primary_key=True),
        Column("scope", String(200), nullable=False),
        Column("key", String(255), nullable=False),
        Column("fingerprint", String(64), nullable=False),
        Column("state", String(12), nullable=False),  # in_flight | done
        Column("status_code", Integer),
        Column("media_type", String(60)),
        Column("body", Text),
        Column("created_at", UTCDateTime(), nullable=False),
        UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),
    )


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Same request = same method, path and JSON body (key order and spacing ignored)."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("latin-1")
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _json(result: BaseModel | dict[str, Any]) -> str:
    """The response body as JSON text: pydantic's own serialiser for a model (what FastAPI's
    encoder and `json.dumps` would make of it, compact, in one step), else the encoder's."""
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return json.dumps(jsonable_encoder(result), ensure_ascii=False, separators=(",", ":"))


class Idempotency:
    """Wraps one request's unit of work; `record_id` ties the work's rows to the key."""

    def __init__(
        self, table: Table, clock: Clock, key: str | None, scope: str, fingerprint: str,
        path: str | None = None, database: Database | None = None, caller: Caller = DIRECT_CALLER,
    ) -> None:
        self.path = path
        self.database = database
        self.caller = caller  # who is calling (the gateway's participant, or direct)
        self.table = table
        self.clock = clock
        self.key = key
        self.scope = scope
        self.fingerprint = fingerprint
        self.record_id: str | None = None

    async def apply(
        self,
        work: Callable[[Session], BaseModel | dict[str, Any]],
        status_code: int = 201,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """`run` as one unit of work of the service's database (`Database.run`): `work` gets
        the unit's session."""
        assert self.database is not None, "built without a database: use run() with a session"
        return await self.database.run(
            lambda session: self.run(session, lambda: work(session), status_code, headers)
        )

    def run(
        self,
        session: Session,
        work: Callable[[], BaseModel | dict[str, Any]],
        status_code: int = 201,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Run `work` once per key; commit its changes together with the saved response."""
        if self.key is None:
            result = work()
            session.commit()
            return Response(_json(result), status_code=status_code, headers=headers, media_type=JSON)

        replay = self._claim(session)
        if replay is not None:
            return replay
        try:
            result = work()
        except Problem as problem:
            session.rollback()
            if problem.status >= 500:
                self._forget(session)
                raise
            body = _json(problem.body(self.path))  # as the problem handler answers it
            self._finish(session, problem.status, PROBLEM_MEDIA_TYPE, body)
            session.commit()
            raise
        except BaseException:
            session.rollback()
            self._forget(session)
            raise
        body = _json(result)
        self._finish(session, status_code, JSON, body)
        session.commit()
        return Response(body, status_code=status_code, headers=headers, media_type=JSON)

    def _claim(self, session: Session) -> Response | None:
        t = self.table
        now = self.clock.now()
        row = session.execute(
            select(t).where(t.c.scope == self.scope, t.c.key == self.key)
        ).first()
        if row is not None and row.created_at < now - RETENTION:
            # Expired: the key is free again. The old record is kept, under a retired name, so
            # the work it produced still points at a finished record.
            session.execute(update(t).where(t.c.id == row.id).values(key=f"{row.id}~retired~{self.key}"[:255]))
            row = None
        if row is None:
            self.record_id = new_id("idem")
            try:
                session.execute(
                    insert(t).values(
                        id=self.record_id,
                        scope=self.scope,
                        key=self.key,
                        fingerprint=self.fingerprint,
                        state="in_flight",
                        created_at=now,
                    )
                )
                session.commit()  # visible at once, so a concurrent duplicate sees it in flight
                return None
            except IntegrityError:
                session.rollback()
                row = session.execute(
                    select(t).where(t.c.scope == self.scope, t.c.key == self.key)
                ).first()
                if row is None:  # it vanished again (a crash released it): treat as in flight
                    raise self._in_flight() from None
        session.rollback()
        if row.fingerprint != self.fingerprint:
            raise Problem(
                409,
                "idempotency-key-reused",
                "Idempotency key reused with another request",
                f"The key {self.key!r} was first used with a different method, path or body. "
                "Use a new key for a new request.",
            )
        if row.state != "done":
            raise self._in_flight()
        return Response(
            content=row.body,
            status_code=row.status_code,
            media_type=row.media_type,
            headers={REPLAY_HEADER: "true"},
        )

    def _forget(self, session: Session) -> None:
        session.execute(delete(self.table).where(self.table.c.id == self.record_id))
        session.commit()

    def _in_flight(self) -> Problem:
        return Problem(
            409,
            "idempotency-key-in-flight",
            "A request with this idempotency key is still running",
            f"Retry after the first request with key {self.key!r} has finished.",
            headers={"Retry-After": "1"},
        )

    def _finish(self, session: Session, status: int, media_type: str, body: str) -> None:
        session.execute(
            update(self.table)
            .where(self.table.c.id == self.record_id)
            .values(state="done", status_code=status, media_type=media_type, body=body)
        )


async def idempotency_for(request: Request, key: str | None, table: Table | None = None) -> Idempotency:
    """The request's idempotency context, as `IdempotencyDep` gives it; `table` defaults to the
    service's `app.state.idempotency_table`. A handler on a hot path may call this itself, with
    `key: IdempotencyKeyHeader = None` as its own parameter: the same header in the OpenAPI
    document and the same validation, without a sub-dependency for FastAPI to solve."""
    path = request.scope["path"]  # what request.url.path gives, without building the URL
    # Without a key nothing is saved or compared: the body is not fingerprinted.
    digest = fingerprint(request.method, path, await request.body()) if key is not None else ""
    # Keys are scoped per caller, as Stripe scopes them per account: the gateway names the
    # participant; direct calls share one scope. Another path under the same key is a reuse.
    caller = caller_of(request)
    state = request.app.state
    return Idempotency(
        table if table is not None else state.idempotency_table,
        state.clock,
        key,
        scope=caller.participant_id or "direct",
        fingerprint=digest,
        path=path,
        database=getattr(state, "db", None),
        caller=caller,
    )


def idempotency_dependency(table_of: Callable[[Request], Table]) -> Any:
    """Build the FastAPI dependency for a service whose key table `table_of(request)` returns."""

    async def _dependency(request: Request, key: IdempotencyKeyHeader = None) -> Idempotency:
        return await idempotency_for(request, key, table_of(request))

    return _dependency


def default_idempotency(request: Request) -> Table:
    return request.app.state.idempotency_table


IdempotencyDep = Annotated[Idempotency, Depends(idempotency_dependency(default_idempotency))]
