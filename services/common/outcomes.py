"""What became of a request with an idempotency key: the read the gateway reconciles with.

The gateway logs an intent before it forwards a money-moving request; when it never saw the
answer (a crash, a timeout) it asks here later, by the key and the request's fingerprint
(`services.common.idempotency.fingerprint`, over the method, the service-relative path and the
body, as the service computed it), and logs what it finds. Under the gateway, `/_sandbox/*` is
forwarded only with the regulator's key; on the service's own port it is open, like every route.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.common.db import DatabaseDep
from services.common.idempotency import lease_expires_at, wall_clock
from services.common.ids import new_id
from services.common.problems import problem_responses


class IdempotencyOutcome(BaseModel):
    """A key's record as the service holds it (the saved response body is not shown)."""

    key: str
    scope: str | None = Field(description="Whose key it is: the participant, `direct`, or the "
                              "service's own scope (open banking: `tpp:<client id>`); null when absent.")
    fingerprint: str
    state: Literal["done", "in_flight", "fenced", "absent"] = Field(
        description="`done`: applied (or refused) once, with `status_code` saved; `in_flight`: "
        "claimed and still running, until `lease_expires_at` at the latest; `fenced`: the gateway "
        "closed the key after giving up on an attempt, which was never applied and never will be; "
        "`absent`: no record, so nothing was applied under this key."
    )
    status_code: int | None = Field(description="The saved response's status, once `done`.")
    lease_expires_at: datetime | None = Field(
        description="While `in_flight`: when a retry may take the claim over (null: at once)."
    )
    created_at: datetime | None = Field(description="When the key was first used (service clock).")


# Printable ASCII: what both the kit's `Idempotency-Key` and OBIE's `x-idempotency-key` allow.
KeyPath = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$",
                              description="The request's idempotency key, percent-encoded.")]
FingerprintQuery = Annotated[str, Query(
    pattern=r"^[0-9a-f]{64}$", description="SHA-256 (hex) of the method, service-relative path and "
    "canonical JSON body, as `services.common.idempotency.fingerprint` computes it.")]
ScopeQuery = Annotated[str | None, Query(max_length=200, description="Only this scope's record.")]
FenceScopeQuery = Annotated[str, Query(min_length=1, max_length=200, description=(
    "Whose key it is: the participant the gateway forwarded the request for (the service's scope)."))]
DeadlineQuery = Annotated[float, Query(gt=0, lt=1e11, description=(
    "The `X-Sandbox-Deadline` the gateway sent with the attempt it gave up on (unix seconds)."))]


KEY_ROUTE_RESPONSES: dict[int | str, dict[str, Any]] = {**problem_responses(422), 404: {
    **problem_responses(404)[404],
    "description": "No such route: the key cannot be a path segment (`..`, a line break)"}}


def outcomes_router(table: Table) -> APIRouter:
    router = APIRouter(prefix="/_sandbox", tags=["sandbox"])

    # `:path`: a key may hold `/`, which arrives decoded.
    @router.get(
        "/idempotency-keys/{key:path}",
        operation_id="get_idempotency_outcome",
        summary="Outcome of a request, by its idempotency key",
        response_model=IdempotencyOutcome,
        responses=KEY_ROUTE_RESPONSES,
    )
    async def read_idempotency_outcome(
        key: KeyPath, fingerprint: FingerprintQuery, database: DatabaseDep, request: Request,
        scope: ScopeQuery = None,
    ) -> IdempotencyOutcome:
        """What became of the request with this idempotency key and fingerprint."""
        lease: timedelta = request.app.state.idempotency_lease

        def read(session: Session) -> IdempotencyOutcome:
            return _outcome(session, table, key, fingerprint, scope, lease)

        return await database.read(read)

    @router.post(
        "/idempotency-fences/{key:path}",
        operation_id="fence_idempotency_key",
        summary="Close a key the gateway gave up on, so that attempt can never apply",
        response_model=IdempotencyOutcome,
        responses=KEY_ROUTE_RESPONSES,
    )
    async def fence_idempotency_key(
        key: KeyPath, fingerprint: FingerprintQuery, scope: FenceScopeQuery, deadline: DeadlineQuery,
        database: DatabaseDep, request: Request,
    ) -> IdempotencyOutcome:
        """The gateway's fence for a request whose answer it never heard. No record for the key:
        a `fenced` row takes its place. A claim past its lease (its process died or is stopped):
        the row becomes `fenced` and its token goes, so that work can never commit. Either way
        the attempt with this deadline (or an earlier one) is refused if it ever arrives, and a
        later attempt (a retry through the gateway, with a later deadline) takes the key over.
        A live claim or a finished request is left as it is. Answers the key's state afterwards."""
        lease: timedelta = request.app.state.idempotency_lease
        clock = request.app.state.clock

        def fence(session: Session) -> IdempotencyOutcome:
            """One unit of work (`database.run` commits it, with the state it answers)."""
            t = table
            for _ in range(2):  # a claim may win the race for the key's row: then read it again
                found = session.execute(select(t).where(t.c.scope == scope, t.c.key == key)).first()
                if found is None:
                    try:
                        with session.begin_nested():  # losing the race undoes the insert alone
                            session.execute(insert(t).values(
                                id=new_id("idem"), scope=scope, key=key, fingerprint=fingerprint, state="fenced",
                                created_at=clock.now(), fenced_deadline=deadline))
                    except IntegrityError:
                        continue
                elif found.fingerprint == fingerprint and found.state == "in_flight":
                    expires = lease_expires_at(found, lease)
                    if expires is None or expires <= wall_clock():
                        holder = t.c.token.is_(None) if found.token is None else t.c.token == found.token
                        session.execute(update(t).where(t.c.id == found.id, t.c.state == "in_flight", holder)
                                        .values(state="fenced", token=None, claimed_at=None,
                                                fenced_deadline=deadline))
                elif found.fingerprint == fingerprint and found.state == "fenced" \
                        and (found.fenced_deadline or 0) < deadline:
                    session.execute(update(t).where(t.c.id == found.id, t.c.state == "fenced")
                                    .values(fenced_deadline=deadline))
                break
            return _outcome(session, table, key, fingerprint, scope, lease)

        return await database.run(fence)

    return router


def _record(session: Session, table: Table, key: str, fingerprint: str, scope: str | None) -> Any:
    query = select(table).where(table.c.key == key, table.c.fingerprint == fingerprint)
    if scope is not None:
        query = query.where(table.c.scope == scope)
    return session.execute(query.order_by(table.c.created_at.desc()).limit(1)).first()


def _outcome(session: Session, table: Table, key: str, fingerprint: str, scope: str | None,
             lease: timedelta) -> IdempotencyOutcome:
    record = _record(session, table, key, fingerprint, scope)
    if record is None:
        return IdempotencyOutcome(key=key, scope=scope, fingerprint=fingerprint, state="absent",
                                  status_code=None, lease_expires_at=None, created_at=None)
    in_flight = record.state == "in_flight"
    return IdempotencyOutcome(
        key=key, scope=record.scope, fingerprint=fingerprint,
        state=record.state,
        status_code=record.status_code,
        lease_expires_at=lease_expires_at(record, lease) if in_flight else None,
        created_at=record.created_at,
    )
