"""Idempotency-Key handling with Stripe's semantics, safe across crashes.

- Same key, same request: the saved status and body, with `Idempotent-Replayed: true`.
- Same key, another request (method, path or body differ): 409 `idempotency-key-reused`.
- Same key while the first request is still running: 409 `idempotency-key-in-flight`, with
  `Retry-After` = the seconds left on its lease.
- Keys are kept 24 hours (by the service clock); an older key counts as new.
- A request that fails validation saves nothing. A business refusal (4xx) after the work began
  is saved and replayed like a success. A crash, or a 5xx problem such as a dependency that is
  down (503), rolls the work back and forgets the key, so a retry runs again: nothing was
  applied, and the client gets another chance. (Stripe replays its 500s; here the rollback
  proves nothing happened, so replaying "unavailable" for 24 hours would only block retries.)

**Claims and leases.** A key is claimed before its work starts: a row in state `in_flight`,
committed on its own so a concurrent duplicate sees it. The claim carries a random `token` and
the wall-clock moment it was taken (`claimed_at`: the wall clock, not the service clock a
teacher can move) and holds for a lease (30 s unless `idempotency_lease_seconds` says
otherwise). A process killed after claiming leaves a claim no one will finish; once its lease
has run out, the next request with the key takes it over with a compare-and-set
(`UPDATE … WHERE id AND token = old AND state = 'in_flight'`) and runs the work itself.

**At most one execution commits.** The work and the finishing UPDATE (state `done`, the saved
response, `WHERE id AND token = mine`) are one transaction. If that UPDATE changes no row the
claim was taken over: the work is rolled back and the request answers as for a key in flight.
A slow original and a take-over that overlap therefore cannot both commit: either the
take-over's compare-and-set commits first and the original's finish matches nothing, or the
original's finish commits first (state `done`) and the compare-and-set matches nothing, so
the retry replays. On PostgreSQL the second UPDATE waits for the first's row lock and re-reads
the row once it commits (read committed); on SQLite write transactions run one at a time.
Work that collides with the other execution's rows before its finish (payments' journals are
unique per key record) fails, finds its claim gone, and answers the same way.

**The gateway's fence.** When the gateway never heard a request's answer, it closes the key
itself (`POST /_sandbox/idempotency-fences/{key}`, services/common/outcomes.py): no record → a
`fenced` row with the request's deadline; a claim past its lease → the same row in its place
(its token is gone, so its work can never commit). The request the gateway gave up on carries
that deadline or an earlier one and is refused (504 `deadline-passed`) if it ever arrives; a
retry through the gateway carries a later deadline and takes the fenced row over. Only the
gateway's own deadlines are compared, so no clocks need to agree.

**Deadline check.** The gateway sends `X-Sandbox-Deadline` (unix seconds) with a money-moving
request: the moment it stops waiting and answers 504. Past it, a key is neither claimed nor
taken over: the answer is 504 `deadline-passed` and nothing is saved. The deadline is checked
again right after the claim commits, and a claim that committed too late (the process paused
between check and commit) is released unused. So every execution that commits had its claim
committed before the deadline, and a key with no record once the deadline has passed was never
applied, and never will be by that request.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    Float,
    bindparam,
    true,
    Integer,
    MetaData,
    Row,
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
from services.common.db import Database, UTCDateTime, record_first
from services.common.ids import new_id
from services.common.prepared import Prepared
from services.common.problems import PROBLEM_MEDIA_TYPE, Problem
from services.common.requestctx import current_deadline

JSON = "application/json"
RETENTION = timedelta(hours=24)
DEFAULT_LEASE = timedelta(seconds=30)
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
        # The current claim: who holds it and since when (wall clock). NULL in rows written
        # before leases existed: such a claim counts as expired.
        Column("token", String(40)),
        Column("claimed_at", UTCDateTime()),
        # A `fenced` row: the gateway gave up on the request with this key and deadline (unix
        # seconds) and closed it as not applied; that request can never claim the key now.
        Column("fenced_deadline", Float),
        UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),
    )


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Same request = same method, path and JSON body (key order and spacing ignored)."""
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return _digest(method, path, body.decode("latin-1"))
    return fingerprint_of(method, path, parsed)


def fingerprint_of(method: str, path: str, parsed: Any) -> str:
    """`fingerprint` of a body already parsed (the gateway parses money-moving bodies anyway)."""
    return _digest(method, path, json.dumps(parsed, sort_keys=True, separators=(",", ":")))


def _digest(method: str, path: str, canonical: str) -> str:
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def wall_clock() -> datetime:
    return datetime.now(UTC)


class _Statements:
    """The key store's statements on every keyed request (look up, claim, finish), compiled once
    per table and run on the driver's cursor: through SQLAlchemy's execution layer they cost
    more than the transfer they guard (`fintech-sandbox bench gateway`, "direct, keyed")."""

    def __init__(self, t: Table) -> None:
        self.exists = Prepared(select(t.c.id).where(t.c.scope == bindparam("p_scope"), t.c.key == bindparam("p_key")))
        self.claim = Prepared(insert(t).inline(), ["id", "scope", "key", "fingerprint", "state", "created_at",
                                                   "token", "claimed_at"])
        self.finish = Prepared(
            update(t).where(t.c.id == bindparam("p_id"), t.c.token == bindparam("p_token"))
            .values(state="done", status_code=bindparam("p_status"), media_type=bindparam("p_media_type"),
                    body=bindparam("p_body")))


@lru_cache(maxsize=16)
def _statements(table: Table) -> _Statements:
    return _Statements(table)


def lease_expires_at(record: Row[Any], lease: timedelta) -> datetime | None:
    """When an in-flight claim may be taken over (None: a claim from before leases, free now)."""
    return record.claimed_at + lease if record.claimed_at is not None else None


def _json(result: BaseModel | dict[str, Any]) -> str:
    """The response body as JSON text: pydantic's own serialiser for a model (what FastAPI's
    encoder and `json.dumps` would make of it, compact, in one step), else the encoder's."""
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return json.dumps(jsonable_encoder(result), ensure_ascii=False, separators=(",", ":"))


def deadline_passed(deadline: float) -> Problem:
    moment = datetime.fromtimestamp(deadline, UTC).isoformat().replace("+00:00", "Z")
    return Problem(
        504,
        "deadline-passed",
        "The gateway stopped waiting for this request",
        f"The gateway stopped waiting for this request at {moment}; nothing was applied. "
        "Retry with the same Idempotency-Key.",
        deadline=moment,
    )


def _fenced_out(record: Row[Any]) -> bool:
    """Whether this request is the attempt (or an older one) that a fence closed: its deadline
    is the fenced one or earlier. Deadlines are compared with each other, not with a clock."""
    deadline = current_deadline()
    return deadline is not None and record.fenced_deadline is not None and deadline <= record.fenced_deadline


def refuse_after_deadline() -> None:
    """504 `deadline-passed` once the wall clock is past the gateway's deadline for this request."""
    deadline = current_deadline()
    if deadline is not None and time.time() >= deadline:
        raise deadline_passed(deadline)


class Idempotency:
    """Wraps one request's unit of work; `record_id` ties the work's rows to the key."""

    def __init__(
        self, table: Table, clock: Clock, key: str | None, scope: str, fingerprint: str,
        path: str | None = None, database: Database | None = None, caller: Caller = DIRECT_CALLER,
        lease: timedelta = DEFAULT_LEASE, now: Callable[[], datetime] = wall_clock,
    ) -> None:
        self.path = path
        self.database = database
        self.caller = caller  # who is calling (the gateway's participant, or direct)
        self.table = table
        self.clock = clock
        self.key = key
        self.scope = scope
        self.fingerprint = fingerprint
        self.lease = lease
        self.wall_clock = now  # leases run on real time, whatever the service clock says
        self.record_id: str | None = None
        self.token: str | None = None  # this request's claim on the record
        self.lifted_fence: float | None = None  # the gateway's fence this attempt took over, if any

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
            refuse_after_deadline()
            result = work()
            session.commit()
            return Response(_json(result), status_code=status_code, headers=headers, media_type=JSON)

        replay = self._claim(session)
        if replay is not None:
            return replay
        try:
            result = work()
            body = _json(result)
            finished = self._finish(session, status_code, JSON, body)
        except Problem as problem:
            session.rollback()
            if problem.status >= 500:
                self._release(session)
                raise
            body = _json(problem.body(self.path))  # as the problem handler answers it
            if not self._finish(session, problem.status, PROBLEM_MEDIA_TYPE, body):
                raise self._lost(session) from None
            raise
        except Exception:
            session.rollback()
            if not self._release(session):
                # It collided with the run that took the claim over: that run is the one that counts.
                raise self._lost(session) from None
            raise
        except BaseException:
            session.rollback()
            self._release(session)
            raise
        if not finished:
            raise self._lost(session)
        return Response(body, status_code=status_code, headers=headers, media_type=JSON)

    # -- claiming ----------------------------------------------------------------------------

    def _claim(self, session: Session) -> Response | None:
        """Claim the key (None: go ahead with the work) or answer from its record."""
        record = self._record(session)
        if record is not None and record.created_at < self.clock.now() - RETENTION:
            # Expired: the key is free again. The old record is kept, under a retired name, so
            # the work it produced still points at a finished record.
            t = self.table
            session.execute(update(t).where(t.c.id == record.id).values(key=f"{record.id}~retired~{self.key}"[:255]))
            record = None
        if record is None:
            if self._insert_claim(session):
                return None
        elif self._may_take_over(record):
            if self._take_over(session, record):
                return None
        else:
            session.rollback()
            return self._answer_from(record)
        # Lost a race for the claim: answer from whatever the winner left (a fence this attempt
        # is newer than may still be taken over).
        record = self._record(session)
        if record is not None and record.state == "fenced" and self._may_take_over(record) \
                and self._take_over(session, record):
            return None
        session.rollback()
        if record is None:  # the winner failed and forgot the key a moment ago: retry at once
            raise self._in_flight(timedelta(0))
        return self._answer_from(record)

    def _record(self, session: Session) -> Row[Any] | None:
        t = self.table
        found = _statements(t).exists.execute(session, {"p_scope": self.scope, "p_key": self.key}).fetchone()
        if found is None:  # a new key: the common case, answered without building a typed row
            return None
        return session.execute(select(t).where(t.c.id == found[0])).first()

    def _may_take_over(self, record: Row[Any]) -> bool:
        """For this same request: an in-flight claim whose lease has run out, or a fence that a
        newer attempt (a later deadline, or none: a direct call) may lift."""
        if record.fingerprint != self.fingerprint:
            return False
        if record.state == "fenced":
            return not _fenced_out(record)
        expires = lease_expires_at(record, self.lease)
        return record.state == "in_flight" and (expires is None or expires <= self.wall_clock())

    def _insert_claim(self, session: Session) -> bool:
        self._refuse_after_deadline(session)
        self.record_id, self.token = new_id("idem"), secrets.token_hex(16)
        try:
            _statements(self.table).claim.execute(session, {
                "id": self.record_id, "scope": self.scope, "key": self.key, "fingerprint": self.fingerprint,
                "state": "in_flight", "created_at": self.clock.now(), "token": self.token,
                "claimed_at": self.wall_clock()}).close()
            record_first(session, "the claim is visible at once, so a concurrent duplicate sees it in flight")
        except IntegrityError:
            session.rollback()
            return False
        self._check_deadline_after_claim(session)
        return True

    def _take_over(self, session: Session, record: Row[Any]) -> bool:
        """Compare-and-set the stale claim to ours; False if another request got there first."""
        self._refuse_after_deadline(session)
        t = self.table
        token = secrets.token_hex(16)
        held_by = t.c.token.is_(None) if record.token is None else t.c.token == record.token
        # A fence is taken over only as it was read: one raised meanwhile (by the gateway, for an
        # attempt as new as this one) wins.
        unchanged = t.c.fenced_deadline == record.fenced_deadline if record.state == "fenced" else true()
        taken = session.execute(
            update(t)
            .where(t.c.id == record.id, t.c.state == record.state, held_by, unchanged)
            .values(state="in_flight", token=token, claimed_at=self.wall_clock(), fenced_deadline=None)
        ).rowcount
        record_first(session, "the claim taken over is visible at once, before the work runs under it")
        if taken != 1:
            return False
        self.record_id, self.token = record.id, token
        self.lifted_fence = record.fenced_deadline if record.state == "fenced" else None
        self._check_deadline_after_claim(session)
        return True

    def _refuse_after_deadline(self, session: Session) -> None:
        try:
            refuse_after_deadline()
        except Problem:
            session.rollback()  # nothing written: not even an expired key's retirement
            raise

    def _check_deadline_after_claim(self, session: Session) -> None:
        """A claim that committed after the deadline (the process paused before its commit) is
        given back unused, so the gateway's "no record after the deadline" stays true."""
        try:
            refuse_after_deadline()
        except Problem:
            self._release(session)
            raise

    def _answer_from(self, record: Row[Any]) -> Response:
        """The answer a request gets from a record it does not hold."""
        if record.fingerprint != self.fingerprint:
            raise Problem(
                409,
                "idempotency-key-reused",
                "Idempotency key reused with another request",
                f"The key {self.key!r} was first used with a different method, path or body. "
                "Use a new key for a new request.",
            )
        if record.state == "fenced":  # this very attempt was given up on and closed
            raise deadline_passed(record.fenced_deadline)
        if record.state != "done":
            expires = lease_expires_at(record, self.lease)
            raise self._in_flight(expires - self.wall_clock() if expires is not None else self.lease)
        return Response(
            content=record.body,
            status_code=record.status_code,
            media_type=record.media_type,
            headers={REPLAY_HEADER: "true"},
        )

    # -- finishing ---------------------------------------------------------------------------

    def _finish(self, session: Session, status: int, media_type: str, body: str) -> bool:
        """Save the response and commit it with the work, if the claim is still ours; else roll
        the work back (the request that took the claim over is the one that counts)."""
        cursor = _statements(self.table).finish.execute(session, {
            "p_id": self.record_id, "p_token": self.token, "p_status": status, "p_media_type": media_type,
            "p_body": body})
        saved = cursor.rowcount
        cursor.close()
        if saved != 1:
            session.rollback()
            return False
        session.commit()
        return True

    def _release(self, session: Session) -> bool:
        """Forget this request's claim (nothing was applied); False if it was no longer ours. A
        fence it had taken over goes back up: the attempt it held off must still be held off."""
        t = self.table
        mine = (t.c.id == self.record_id, t.c.token == self.token)
        if self.lifted_fence is not None:
            released = session.execute(update(t).where(*mine).values(
                state="fenced", token=None, claimed_at=None, fenced_deadline=self.lifted_fence)).rowcount
        else:
            released = session.execute(delete(t).where(*mine)).rowcount
        session.commit()
        return released == 1

    def _lost(self, session: Session) -> Problem:
        """In flight, as the request that took the claim over sees it."""
        record = session.execute(select(self.table).where(self.table.c.id == self.record_id)).first()
        session.rollback()
        expires = lease_expires_at(record, self.lease) if record is not None and record.state != "done" else None
        return self._in_flight(expires - self.wall_clock() if expires is not None else timedelta(0))

    def _in_flight(self, lease_left: timedelta) -> Problem:
        return Problem(
            409,
            "idempotency-key-in-flight",
            "A request with this idempotency key is still running",
            f"Retry after the first request with key {self.key!r} has finished.",
            headers={"Retry-After": str(max(1, math.ceil(lease_left.total_seconds())))},
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
        lease=state.idempotency_lease,
    )


def idempotency_dependency(table_of: Callable[[Request], Table]) -> Any:
    """Build the FastAPI dependency for a service whose key table `table_of(request)` returns."""

    async def _dependency(request: Request, key: IdempotencyKeyHeader = None) -> Idempotency:
        return await idempotency_for(request, key, table_of(request))

    return _dependency


def default_idempotency(request: Request) -> Table:
    return request.app.state.idempotency_table


IdempotencyDep = Annotated[Idempotency, Depends(idempotency_dependency(default_idempotency))]
