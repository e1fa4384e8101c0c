"""The regulator's fault flags at /sandbox/faults (regulator key): set one, list, read, remove one
or all. Every change is one entry in the audit log. docs/faults.md tells the story; the rules and
the store are in faults.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from sandbox.gateway import faults, repository, service
from sandbox.gateway.endpoints import (
    AUTH,
    GatewayDep,
    ReadSessionDep,
    require_regulator,
)
from sandbox.gateway.models import FaultFlag
from sandbox.gateway.proxy import Gateway
from sandbox.gateway.schemas import PARTICIPANT_PREFIX, ServiceName
from sandbox.gateway.service import CHANGE_BEFORE_LOG
from services.common.db import SessionDep, record_first
from services.common.fields import JsonInt, Text
from services.common.ids import id_pattern
from services.common.pagination import LimitQuery, Page, page_of
from services.common.problems import not_found, problem_responses
from services.common.requestctx import current_request_id

FAULT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
OPERATION_PATTERN = r"^(GET|POST|PUT|PATCH|DELETE) /[A-Za-z0-9_{}*.~/-]{0,150}$"
DEFAULT_LIFETIME_S = 3600  # a fault nobody removes lapses within the hour
MAX_LIFETIME_S = 86_400


def _json_number(value: Any) -> Any:
    """JSON Schema's number: 0.25 and 1, never true or "0.25" (pydantic's lax mode takes both)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


JsonNumber = Annotated[float, BeforeValidator(_json_number)]
# A JSON integer from 1 up, optional: the bounds inside the kit's check, so the schema's integer
# branch carries them (`Annotated[JsonInt, Field(ge=…)] | None` would write them as unknown keywords).
Count = Annotated[int, Field(ge=1, le=1_000_000), JsonInt.__metadata__[0]]
FaultId = Annotated[str, Path(pattern=FAULT_ID_PATTERN, description="The fault's name, chosen by the regulator "
                                                                     "(`timeout-next-transfer`).")]


class _FaultIn(BaseModel):
    """What every fault names: where it applies and for how long."""

    model_config = ConfigDict(extra="forbid")

    service: ServiceName = Field(description="The service whose forwarding it breaks (its gateway prefix).")
    operation: str | None = Field(None, pattern=OPERATION_PATTERN, examples=["POST /transfers"], description=(
        "One operation, `METHOD /path` below the service's prefix (`{param}` and `**` allowed, as in an "
        "allow-list); left out: every operation of the service."))
    participant_id: str | None = Field(None, pattern=id_pattern(PARTICIPANT_PREFIX), description=(
        "Only this participant's requests (a service acting for one counts as it); left out: everyone's."))
    remaining: Count | None = Field(None, description=(
        "It applies to this many requests, then it is spent and removed (across every gateway replica); "
        "left out: every matching request until it expires."))
    expires_in_s: JsonInt = Field(DEFAULT_LIFETIME_S, ge=1, le=MAX_LIFETIME_S, description=(
        "Wall-clock seconds until it lapses on its own (at most a day)."))
    note: str | None = Text(200, "Why it is set, for the log.", optional=True)


class LatencyFaultIn(_FaultIn):
    """Added latency: the gateway waits before forwarding; the request then goes on as usual."""

    kind: Literal["latency"]
    latency_ms: JsonInt = Field(ge=1, le=30_000, description="Milliseconds added before forwarding.")


class ErrorFaultIn(_FaultIn):
    """An error rate: that share of matching requests is answered with a 5xx problem
    (`injected-error`) and not forwarded, so nothing moves. Which requests: SHA-256 of the fault id
    and the request's X-Request-ID, as a fraction, below the rate (the same id draws the same)."""

    kind: Literal["error"]
    error_rate: JsonNumber = Field(gt=0, le=1, allow_inf_nan=False, examples=[0.25],
                                   description="The share of matching requests answered with the error.")
    error_status: Literal[500, 502, 503] = Field(500, description="The status they get.")
    latency_ms: JsonInt = Field(0, ge=0, le=30_000, description="Milliseconds added first.")


class UnavailableFaultIn(_FaultIn):
    """The service is unreachable: nothing is forwarded (503 `upstream-unavailable`, as when it is
    down), and what a money movement held is given back."""

    kind: Literal["unavailable"]
    latency_ms: JsonInt = Field(0, ge=0, le=30_000, description="Milliseconds before the refusal (a connect "
                                "that hangs, then fails).")


class TimeoutFaultIn(_FaultIn):
    """The answer is lost: the request is forwarded and the service applies it, but its answer
    never reaches the gateway (504 `upstream-timeout`). A money movement's intent stays open and
    is reconciled from the service's record of its idempotency key; a retry with the same
    `Idempotency-Key` gets the original outcome, and the money moves once."""

    kind: Literal["timeout"]
    latency_ms: JsonInt = Field(0, ge=0, le=30_000, description="Milliseconds added before forwarding.")


FaultIn = Annotated[LatencyFaultIn | ErrorFaultIn | UnavailableFaultIn | TimeoutFaultIn, Field(discriminator="kind")]


class FaultPublic(BaseModel):
    """A fault flag in force."""

    id: str
    service: ServiceName
    operation: str | None = Field(description="`METHOD /path`, or null: every operation of the service.")
    participant_id: str | None = Field(description="Only this participant's requests, or null: everyone's.")
    kind: Literal["latency", "error", "unavailable", "timeout"]
    latency_ms: int
    error_rate: float | None
    error_status: int | None
    remaining: int | None = Field(description="Requests it still applies to, or null: until it expires.")
    expires_at: datetime
    note: str | None
    created_at: datetime


class FaultsCleared(BaseModel):
    cleared: int = Field(description="How many fault flags were removed.")


def fault_public(row: FaultFlag) -> FaultPublic:
    return FaultPublic(
        id=row.id, service=row.service,  # type: ignore[arg-type]
        operation=f"{row.method} {row.path}" if row.method else None,
        participant_id=row.participant_id, kind=row.kind, latency_ms=row.latency_ms,  # type: ignore[arg-type]
        error_rate=row.error_rate, error_status=row.error_status, remaining=row.remaining,
        expires_at=row.expires_at, note=row.note, created_at=row.created_at)


def _row(fault_id: str, body: _FaultIn, now: datetime) -> FaultFlag:
    method, _, path = (body.operation or "").partition(" ")
    error = body if isinstance(body, ErrorFaultIn) else None
    return FaultFlag(
        id=fault_id, service=body.service, method=method or None, path=path or None,
        participant_id=body.participant_id, kind=body.kind, latency_ms=body.latency_ms,  # type: ignore[attr-defined]
        error_rate=error.error_rate if error else None, error_status=error.error_status if error else None,
        remaining=body.remaining, expires_at=now + timedelta(seconds=body.expires_in_s), note=body.note,
        created_at=now)


def _now(gateway: Gateway) -> datetime:
    """Expiries are wall-clock (every replica agrees on it), as the gateway's flags read it."""
    return gateway.faults.now() if gateway.faults is not None else faults.wall_clock()


def _log_change(gateway: Gateway, request: Request, status: int, operation: str) -> None:
    service.record_regulator_action(gateway, request.method, request.url.path, status, current_request_id(),
                                    gateway.clock.now(), operation)
    if gateway.faults is not None:
        gateway.faults.changed()


router = APIRouter(prefix="/sandbox", tags=["faults"], dependencies=[Depends(require_regulator)])

FAULT_LINKS: dict[str, Any] = {
    "GetFault": {"operationId": "get_fault", "parameters": {"fault_id": "$response.body#/id"}},
    "RemoveFault": {"operationId": "remove_fault", "parameters": {"fault_id": "$response.body#/id"}},
}


@router.get("/faults", operation_id="list_faults", response_model=Page[FaultPublic],
            responses=problem_responses(*AUTH, 422))
def list_faults(
    session: ReadSessionDep, gateway: GatewayDep, limit: LimitQuery = 20,
    after: Annotated[str | None, Query(pattern=FAULT_ID_PATTERN,
                                       description="`next_cursor` of the previous page.")] = None,
) -> Page[FaultPublic]:
    """The fault flags in force, by id (spent and expired ones are gone)."""
    rows = [r for r in faults.live_faults(session, _now(gateway)) if after is None or r.id > after]
    return page_of([fault_public(r) for r in rows[:limit + 1]], limit, lambda f: f.id)


@router.get("/faults/{fault_id}", operation_id="get_fault", response_model=FaultPublic,
            responses=problem_responses(*AUTH, 404, 422))
def get_fault(fault_id: FaultId, session: ReadSessionDep, gateway: GatewayDep) -> FaultPublic:
    """One fault flag, with what is left of it."""
    row = faults.get_fault(session, fault_id, _now(gateway))
    if row is None:
        raise not_found("Fault flag", fault_id)
    return fault_public(row)


@router.put("/faults/{fault_id}", operation_id="set_fault", response_model=FaultPublic,
            responses={200: {"model": FaultPublic, "description": "Replaced", "links": FAULT_LINKS},
                       201: {"model": FaultPublic, "description": "Set", "links": FAULT_LINKS},
                       **problem_responses(*AUTH, 404, 422)})
def set_fault(fault_id: FaultId, body: FaultIn, request: Request, response: Response, session: SessionDep,
              gateway: GatewayDep) -> FaultPublic:
    """Break a service's forwarding on purpose: added latency, an error rate, unavailable, or a
    lost answer (timeout), for one operation or all, one participant or all, for the next n
    requests or until it lapses. Every gateway replica applies it (within half a second); the
    injected fault takes the path a real one takes, so limits, idempotency and the audit log
    behave as in a real outage. Setting a name again replaces that fault. Logged.

    A `participant_id` that is no admitted participant is 404."""
    if body.participant_id is not None and repository.get_participant(session, body.participant_id) is None:
        raise not_found("Participant", body.participant_id)
    now = _now(gateway)
    row = _row(fault_id, body, now)
    created = faults.put_fault(session, row, now)
    record_first(session, CHANGE_BEFORE_LOG)
    status = 201 if created else 200
    response.status_code = status
    _log_change(gateway, request, status, f"fault set {fault_id}: {faults.describe(faults.fault_of(row))}")
    return fault_public(row)


@router.delete("/faults/{fault_id}", status_code=204, operation_id="remove_fault", response_class=Response,
               responses=problem_responses(*AUTH, 404, 422))
def remove_fault(fault_id: FaultId, request: Request, session: SessionDep, gateway: GatewayDep) -> Response:
    """Remove one fault flag: the service's forwarding is real again. Logged."""
    if not faults.delete_fault(session, fault_id):
        raise not_found("Fault flag", fault_id)
    record_first(session, CHANGE_BEFORE_LOG)
    _log_change(gateway, request, 204, f"fault removed {fault_id}")
    return Response(status_code=204)


@router.delete("/faults", operation_id="clear_faults", response_model=FaultsCleared,
               responses=problem_responses(*AUTH))
def clear_faults(request: Request, session: SessionDep, gateway: GatewayDep) -> FaultsCleared:
    """Remove every fault flag at once. Logged (one entry, with how many went)."""
    cleared = faults.clear_faults(session)
    record_first(session, CHANGE_BEFORE_LOG)
    _log_change(gateway, request, 200, f"faults cleared: {cleared}")
    return FaultsCleared(cleared=cleared)

