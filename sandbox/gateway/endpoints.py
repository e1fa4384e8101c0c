"""The regulator's API at /sandbox/... (regulator key), and the receipt check participants use."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlmodel import Session

from sandbox.gateway import repository, service
from sandbox.gateway.door import UnauthenticatedLimiter
from sandbox.gateway.limits import Policy
from sandbox.gateway.proxy import Gateway, iso
from sandbox.gateway.reset import reset_sandbox
from sandbox.gateway.schemas import (
    ALERT_PREFIX,
    PARTICIPANT_PREFIX,
    ActivityReport,
    AlertAssign,
    AlertClose,
    AlertPublic,
    AuditEntryPublic,
    AuditHead,
    AuditPage,
    DoorBudgetIn,
    DoorBudgetPublic,
    ExitReport,
    ParticipantAdmitted,
    ParticipantCreate,
    ParticipantPublic,
    ReceiptCheck,
    RuleSetPublic,
    SandboxReset,
    ServiceName,
    StatusChange,
    VerificationPublic,
)
from services.common.app import ClockAdvance, ClockDep, ClockState, SettingsDep
from services.common.db import SessionDep
from services.common.fields import IdPath
from services.common.ids import new_id
from services.common.pagination import LimitQuery, Page, page_of
from services.common.problems import Problem, not_found, problem_responses
from services.common.requestctx import current_request_id


def api_key_of(request: Request) -> str | None:
    """The X-API-Key header. Read directly rather than declared as an OpenAPI security scheme:
    the key is documented in the API description, and fuzzers send it as a fixed header."""
    return request.headers.get("x-api-key")


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def get_read_session(request: Request) -> Iterator[Session]:
    """Reads on the gateway's read engine: they never hold the log's write lock."""
    with Session(request.app.state.gateway.reader) as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def _unauthorised(api_key: str | None) -> Problem:
    slug, title = ("missing-api-key", "API key required") if not api_key else ("invalid-api-key", "API key not recognised")
    return Problem(401, slug, title, "Send the regulator's key in the X-API-Key header.",
                   headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})


def require_regulator(gateway: GatewayDep, api_key: Annotated[str | None, Depends(api_key_of)]) -> None:
    gateway.catch_up()  # what other replicas logged (a participant admitted, the clock moved) holds here too
    if gateway.is_regulator(api_key):
        return
    if gateway.policy_for_key(api_key) is not None:
        raise Problem(403, "regulator-only", "Regulator only",
                      "This endpoint needs the regulator's key; a participant's key cannot use it.")
    raise _unauthorised(api_key)


def caller_policy(gateway: GatewayDep, api_key: Annotated[str | None, Depends(api_key_of)]) -> Policy | None:
    """None for the regulator, who sees everything; a participant sees only its own entries."""
    gateway.catch_up()
    if gateway.is_regulator(api_key):
        return None
    policy = gateway.policy_for_key(api_key)
    if policy is None:
        raise _unauthorised(api_key)
    return policy


ParticipantId = Annotated[str, IdPath(PARTICIPANT_PREFIX, "A participant id, `ptp_…`.")]
AlertId = Annotated[str, IdPath(ALERT_PREFIX, "An alert id, `alt_…`.")]
AuditIndex = Annotated[int, Path(ge=0, le=2**53, description="An entry's index in the log.")]
AUTH = (401, 403)

router = APIRouter(prefix="/sandbox", dependencies=[Depends(require_regulator)])
receipts = APIRouter(prefix="/sandbox")

PARTICIPANT_LINKS: dict[str, Any] = {
    "GetParticipant": {"operationId": "get_participant", "parameters": {"participant_id": "$response.body#/id"}},
    "Suspend": {"operationId": "suspend_participant", "parameters": {"participant_id": "$response.body#/id"}},
    "Reinstate": {"operationId": "reinstate_participant", "parameters": {"participant_id": "$response.body#/id"}},
    "Activity": {"operationId": "get_participant_activity", "parameters": {"participant_id": "$response.body#/id"}},
    "ExitReport": {"operationId": "get_exit_report", "parameters": {"participant_id": "$response.body#/id"}},
}
ALERT_LINKS: dict[str, Any] = {
    "GetAlert": {"operationId": "get_alert", "parameters": {"alert_id": "$response.body#/id"}},
    "Close": {"operationId": "close_alert", "parameters": {"alert_id": "$response.body#/id"}},
}


def _log_change(request: Request, gateway: Gateway, clock: Any, status: int) -> None:
    service.record_regulator_action(gateway, request.method, request.url.path, status, current_request_id(), clock.now())


# -- participants --------------------------------------------------------------------------

@router.get("/participants", tags=["participants"], operation_id="list_participants",
            response_model=Page[ParticipantPublic], responses=problem_responses(*AUTH, 422))
def list_participants(
    session: ReadSessionDep, limit: LimitQuery = 20,
    after: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,40}$", description="`next_cursor` of the previous page.")] = None,
    status: Annotated[Literal["active", "suspended"] | None, Query()] = None,
) -> Page[ParticipantPublic]:
    """Admitted participants, a page at a time."""
    rows = repository.list_participants(session, limit, after, status)
    return page_of([service.participant_public(r) for r in rows], limit, lambda p: p.id)


@router.post("/participants", status_code=201, tags=["participants"], operation_id="admit_participant",
             response_model=ParticipantAdmitted,
             responses={201: {"model": ParticipantAdmitted, "description": "Admitted", "links": PARTICIPANT_LINKS},
                        **problem_responses(*AUTH, 422)})
def admit_participant(body: ParticipantCreate, request: Request, session: SessionDep, gateway: GatewayDep,
                      clock: ClockDep) -> ParticipantAdmitted:
    """Admit a firm: its allow-list, window and limits; the response shows its key once."""
    admitted = service.admit_participant(session, gateway, body, clock.now())
    _log_change(request, gateway, clock, 201)
    return admitted


@router.get("/participants/{participant_id}", tags=["participants"], operation_id="get_participant",
            response_model=ParticipantPublic, responses=problem_responses(*AUTH, 404, 422))
def get_participant(participant_id: ParticipantId, session: ReadSessionDep) -> ParticipantPublic:
    """One participant, its authorisation and limits."""
    return service.participant_public(service.get_participant(session, participant_id))


@router.post("/participants/{participant_id}/suspend", tags=["participants"], operation_id="suspend_participant",
             response_model=ParticipantPublic, responses=problem_responses(*AUTH, 404, 409, 422))
def suspend_participant(participant_id: ParticipantId, body: StatusChange, request: Request, session: SessionDep,
                        gateway: GatewayDep, clock: ClockDep) -> ParticipantPublic:
    """Stop a participant at once: every call it makes gets 403 until reinstated. The sandbox's
    own services (kind `service`) cannot be suspended (409 `sandbox-service`): suspend the
    participant they act for."""
    result = service.set_status(session, gateway, participant_id, "suspended", body.reason)
    _log_change(request, gateway, clock, 200)
    return result


@router.post("/participants/{participant_id}/reinstate", tags=["participants"], operation_id="reinstate_participant",
             response_model=ParticipantPublic, responses=problem_responses(*AUTH, 404, 422))
def reinstate_participant(participant_id: ParticipantId, body: StatusChange, request: Request, session: SessionDep,
                          gateway: GatewayDep, clock: ClockDep) -> ParticipantPublic:
    """Let a suspended participant call again."""
    result = service.set_status(session, gateway, participant_id, "active", body.reason)
    _log_change(request, gateway, clock, 200)
    return result


@router.get("/participants/{participant_id}/activity", tags=["participants"],
            operation_id="get_participant_activity", response_model=ActivityReport,
            responses=problem_responses(*AUTH, 404, 422))
def get_participant_activity(participant_id: ParticipantId, session: ReadSessionDep, gateway: GatewayDep,
                             clock: ClockDep) -> ActivityReport:
    """Today's traffic, decisions, volume and breaches of one participant, against its limits
    (in the current epoch: since the last `POST /sandbox/reset`)."""
    return service.today_activity(session, gateway, service.get_participant(session, participant_id), clock.now())


@router.get("/participants/{participant_id}/exit-report", tags=["reports"], operation_id="get_exit_report",
            response_model=ExitReport, responses=problem_responses(*AUTH, 404, 422))
def get_exit_report(participant_id: ParticipantId, session: ReadSessionDep, gateway: GatewayDep,
                    clock: ClockDep) -> ExitReport:
    """The testing window's volumes, decisions, alerts and limit breaches, as JSON.

    Counts the current epoch only: entries and alerts since the last `POST /sandbox/reset`
    (`audit_head` still names the head of the whole log)."""
    return service.exit_report(session, gateway, service.get_participant(session, participant_id), clock.now())


@router.get("/participants/{participant_id}/exit-report.csv", tags=["reports"],
            operation_id="get_exit_report_csv", response_class=Response,
            responses={200: {"description": "`metric,value` rows", "content": {"text/csv": {"schema": {"type": "string"}}}},
                       **problem_responses(*AUTH, 404, 422)})
def get_exit_report_csv(participant_id: ParticipantId, session: ReadSessionDep, gateway: GatewayDep,
                        clock: ClockDep) -> Response:
    """The same exit report as CSV, one `metric,value` row per figure."""
    report = service.exit_report(session, gateway, service.get_participant(session, participant_id), clock.now())
    return Response(service.exit_report_csv(report), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="exit-report-{participant_id}.csv"'})


# -- the audit log -------------------------------------------------------------------------

@router.get("/audit/entries", tags=["audit"], operation_id="list_audit_entries", response_model=AuditPage,
            responses=problem_responses(*AUTH, 422))
def list_audit_entries(
    session: ReadSessionDep, limit: LimitQuery = 50,
    after: Annotated[int | None, Query(ge=-1, le=2**53, description="Entries after this index (`next_after`).")] = None,
    participant_id: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_]+$")] = None,
    service_name: Annotated[ServiceName | None, Query(alias="service")] = None,
    decision: Annotated[Literal["approve", "review", "block"] | None, Query()] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    request_id: Annotated[str | None, Query(max_length=128, description="Every hop of one request: the "
                                            "participant's call and the services' calls it caused.")] = None,
    phase: Annotated[Literal["intent", "outcome", "unanswered", "reconciled"] | None,
                     Query(description="Write-ahead entries of money movements only, of one phase.")] = None,
    via: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_]+$",
                                     description="Hops a sandbox service sent on a participant's behalf.")] = None,
    trace_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$", description="Every entry of one trace "
                                          "(`X-Trace-Id`): the request and the hops it caused.")] = None,
) -> AuditPage:
    """The live log, oldest first, with filters; poll with `after` to follow it."""
    filters = {"participant_id": participant_id, "service": service_name, "decision": decision, "status": status,
               "request_id": request_id, "phase": phase, "via": via, "trace_id": trace_id}
    rows = repository.list_audit(session, limit, after, filters)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(data=[service.audit_public(r) for r in rows],
                     next_after=rows[-1].idx if rows else after, has_more=has_more)


@router.get("/audit/entries/{index}", tags=["audit"], operation_id="get_audit_entry",
            response_model=AuditEntryPublic, responses=problem_responses(*AUTH, 404, 422))
def get_audit_entry(index: AuditIndex, session: ReadSessionDep) -> AuditEntryPublic:
    """One entry of the log, with its hash and its predecessor's."""
    row = repository.get_audit(session, index)
    if row is None:
        raise not_found("Audit entry", str(index))
    return service.audit_public(row)


@router.get("/audit/head", tags=["audit"], operation_id="get_audit_head", response_model=AuditHead,
            responses=problem_responses(*AUTH))
def get_audit_head(gateway: GatewayDep) -> AuditHead:
    """The log's size and last hash, to publish."""
    return service.audit_head(gateway)


@router.get("/audit/verify", tags=["audit"], operation_id="verify_audit_log", response_model=VerificationPublic,
            responses=problem_responses(*AUTH))
def verify_audit_log(gateway: GatewayDep) -> VerificationPublic:
    """Recompute every hash; name the first entry that does not match."""
    return service.verify_log(gateway)


# -- alerts --------------------------------------------------------------------------------

@router.get("/alerts", tags=["alerts"], operation_id="list_alerts", response_model=Page[AlertPublic],
            responses=problem_responses(*AUTH, 422))
def list_alerts(
    session: ReadSessionDep, limit: LimitQuery = 20,
    after: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,40}$", description="`next_cursor` of the previous page.")] = None,
    status: Annotated[Literal["open", "assigned", "closed"] | None, Query()] = None,
    participant_id: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_]+$")] = None,
    *, gateway: GatewayDep,
) -> Page[AlertPublic]:
    """Alerts opened by review and block decisions, oldest first (the current epoch's: since the
    last `POST /sandbox/reset`)."""
    rows = repository.list_alerts(session, limit, after, status, participant_id, gateway.epoch_start)
    return page_of([service.alert_public(r) for r in rows], limit, lambda a: a.id)


@router.get("/alerts/{alert_id}", tags=["alerts"], operation_id="get_alert", response_model=AlertPublic,
            responses={200: {"model": AlertPublic, "description": "The alert", "links": ALERT_LINKS},
                       **problem_responses(*AUTH, 404, 422)})
def get_alert(alert_id: AlertId, session: ReadSessionDep) -> AlertPublic:
    """One alert: the decision, each rule that fired and why."""
    return service.alert_public(service.get_alert(session, alert_id))


@router.post("/alerts/{alert_id}/assign", tags=["alerts"], operation_id="assign_alert", response_model=AlertPublic,
             responses=problem_responses(*AUTH, 404, 409, 422))
def assign_alert(alert_id: AlertId, body: AlertAssign, request: Request, session: SessionDep,
                 gateway: GatewayDep, clock: ClockDep) -> AlertPublic:
    """Give an open alert to an investigator."""
    result = service.assign_alert(session, alert_id, body.assignee)
    _log_change(request, gateway, clock, 200)
    return result


@router.post("/alerts/{alert_id}/close", tags=["alerts"], operation_id="close_alert", response_model=AlertPublic,
             responses=problem_responses(*AUTH, 404, 409, 422))
def close_alert(alert_id: AlertId, body: AlertClose, request: Request, session: SessionDep,
                gateway: GatewayDep, clock: ClockDep) -> AlertPublic:
    """Close an alert as a false positive, suspicious, or reported."""
    result = service.close_alert(session, gateway, alert_id, body.resolution, body.note, clock.now())
    _log_change(request, gateway, clock, 200)
    return result


@router.get("/rules", tags=["alerts"], operation_id="get_rules", response_model=RuleSetPublic,
            responses=problem_responses(*AUTH))
def get_rules(gateway: GatewayDep) -> RuleSetPublic:
    """The screening rule set in force: version, thresholds, screened operations, rules."""
    rules = gateway.rules
    return RuleSetPublic(
        version=rules.version, reporting_currency=rules.reporting_currency,
        thresholds={"review": rules.review_at, "block": rules.block_at},
        screened_operations=[f"{op.service} {op.label}" for op in rules.operations],
        rules=rules.config["rules"], watch_list_version=rules.watch_list.version,
    )


# -- the reset: back to the seeded demo state, a new epoch of the log --------------------------

RESET_RESPONSES = problem_responses(*AUTH, 409, 502, 503)
RESET_RESPONSES[409] = {**RESET_RESPONSES[409], "description": (
    "Not reset: movements whose outcome is unknown (`movements-unresolved`), requests still on their "
    "way (`requests-in-flight`), or another reset running (`reset-in-progress`)")}
RESET_RESPONSES[502] = {**RESET_RESPONSES[502], "description": (
    "A service answered its reset with an error (`service-reset-failed`, `service` names it)")}
RESET_RESPONSES[503] = {**RESET_RESPONSES[503], "description": (
    "A service could not be reached (`service-unreachable`, `service` names it)")}


@router.post("/reset", tags=["sandbox"], operation_id="reset_sandbox", response_model=SandboxReset,
             responses=RESET_RESPONSES)
async def reset(request: Request, gateway: GatewayDep, settings: SettingsDep) -> SandboxReset:
    """Put the whole sandbox back to its seeded demo state, without deleting its data folder.

    Every service's `POST /_sandbox/reset` runs: the rows learners made are removed, each
    service's clock goes back (real time; the advisor's market to its epoch, day 0) and the demo
    world is seeded again (accounts and balances, mandates, Sandbox Bank's PSUs and clients).
    The gateway's clock goes back to real time, its participants back to the seeded set
    (participants admitted since are removed, their keys stop working), and daily volumes, rate
    limits, customer counts, screening history and remembered idempotency keys start empty.

    **The audit log is never erased.** The reset appends a hash-chained `reset` entry (by the
    regulator, when, the new epoch's number) and starts a new epoch: exit reports, activity,
    alerts and the limits count only the entries of the current epoch, while `GET
    /sandbox/audit/entries` and `verify` (and `fintech-sandbox verify-log`) still cover the
    whole chain.

    **Money in flight.** While the reset runs nothing is forwarded (503 `sandbox-resetting`);
    requests already on their way are waited for, and movements whose outcome was never heard
    are reconciled with their service first. If one still cannot be settled the reset is
    refused (409 `movements-unresolved`) and nothing changes. If a service's own reset fails the
    answer is 502 or 503 naming it; the reset is safe to repeat."""
    request_id = current_request_id() or new_id("req")
    try:
        return await reset_sandbox(gateway, seed=settings.seed_demo_data, request_id=request_id)
    except Problem as refused:
        service.record_regulator_action(gateway, "POST", request.url.path, refused.status, request_id,
                                        gateway.clock.now())
        raise


# -- the door: the budget for requests without a valid key ------------------------------------

def _door(gateway: Gateway) -> UnauthenticatedLimiter:
    if gateway.door is None:
        raise Problem(404, "not-found", "No door limiter", "This gateway refuses keyless requests with 401 "
                      "and counts no budget for them.")
    return gateway.door


def _budget_of(door: UnauthenticatedLimiter) -> DoorBudgetPublic:
    per_minute, burst, until = door.budget(time.time())
    return DoorBudgetPublic(per_minute=per_minute, burst=burst,
                            until=None if until is None else datetime.fromtimestamp(until, UTC),
                            configured_per_minute=door.per_minute, configured_burst=door.burst)


@router.get("/door/unauthenticated", tags=["sandbox"], operation_id="get_unauthenticated_budget",
            response_model=DoorBudgetPublic, responses=problem_responses(*AUTH, 404))
def get_unauthenticated_budget(gateway: GatewayDep) -> DoorBudgetPublic:
    """How many requests without a valid key an address may send (each answered 401) before
    the door answers 429 (docs/door.md)."""
    return _budget_of(_door(gateway))


@router.put("/door/unauthenticated", tags=["sandbox"], operation_id="override_unauthenticated_budget",
            response_model=DoorBudgetPublic, responses=problem_responses(*AUTH, 404, 422))
def override_unauthenticated_budget(body: DoorBudgetIn, request: Request, gateway: GatewayDep,
                                    clock: ClockDep) -> DoorBudgetPublic:
    """Put another budget in force for a while (wall-clock seconds), then the configured one
    comes back on its own. `fintech-sandbox fuzz` raises it for its run: schemathesis sends many
    cases without a key on purpose, and each must meet the 401 a participant would. Logged."""
    door = _door(gateway)
    door.override(body.per_minute, body.burst, time.time() + body.for_seconds)
    gateway.audit({"at": iso(clock.now()), "request_id": current_request_id() or new_id("req"),
                   "participant_id": "regulator", "method": request.method, "path": request.url.path[:500],
                   "status": 200, "latency_us": 0,
                   "operation": f"keyless budget {body.per_minute}/min, burst {body.burst}, for {body.for_seconds} s"})
    return _budget_of(door)


@router.delete("/door/unauthenticated", tags=["sandbox"], operation_id="restore_unauthenticated_budget",
               response_model=DoorBudgetPublic, responses=problem_responses(*AUTH, 404))
def restore_unauthenticated_budget(request: Request, gateway: GatewayDep, clock: ClockDep) -> DoorBudgetPublic:
    """Back to the configured budget at once. Logged."""
    door = _door(gateway)
    door.restore()
    _log_change(request, gateway, clock, 200)
    return _budget_of(door)


# -- receipts: a participant checks its own ------------------------------------------------

@receipts.get("/receipts/{index}", tags=["audit"], operation_id="check_receipt", response_model=ReceiptCheck,
              responses=problem_responses(401, 404, 422))
def check_receipt(
    index: AuditIndex, session: ReadSessionDep, gateway: GatewayDep,
    caller: Annotated[Policy | None, Depends(caller_policy)],
    hash: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$", description="The hash from the receipt.")] = None,
) -> ReceiptCheck:
    """Check a receipt (`X-Sandbox-Receipt`): the entry, its hash, and the chain up to it.
    A participant sees only its own entries; another's index is not found."""
    row = repository.get_audit(session, index)
    if row is None or (caller is not None and row.participant_id != caller.id):
        raise not_found("Audit entry", str(index))
    verification = service.verify_log(gateway, up_to=index)
    return ReceiptCheck(index=index, hash=row.hash, receipt_hash=hash,
                        matches=None if hash is None else hash == row.hash,
                        chain_ok=verification.ok and verification.size == index + 1,
                        entry=service.audit_public(row))


# -- the gateway's clock: the regulator's ---------------------------------------------------

clock_router = APIRouter(prefix="/_sandbox", tags=["sandbox"])


def regulator_moves_clock(request: Request, gateway: GatewayDep, clock: ClockDep,
                          api_key: Annotated[str | None, Depends(api_key_of)]) -> None:
    """Only the regulator moves the gateway's clock; every attempt by anyone else is logged."""
    if gateway.is_regulator(api_key):
        return
    policy = gateway.policy_for_key(api_key)
    status = 403 if policy is not None else 401
    gateway.audit({"at": iso(clock.now()), "request_id": current_request_id() or "-",
                   "participant_id": policy.id if policy else None, "method": request.method,
                   "path": request.url.path[:500], "status": status, "latency_us": 0,
                   "operation": "advance_clock", "limit_name": "sandbox_controls"})
    require_regulator(gateway, api_key)


@clock_router.get("/clock", operation_id="get_clock", response_model=ClockState,
                  dependencies=[Depends(require_regulator)], responses=problem_responses(*AUTH))
def read_clock(clock: ClockDep) -> ClockState:
    """The gateway's current time, as testing windows, limits and screening see it (regulator key)."""
    return ClockState(now=clock.now())


@clock_router.post("/clock/advance", operation_id="advance_clock", response_model=ClockState,
                   dependencies=[Depends(regulator_moves_clock)], responses=problem_responses(*AUTH, 422))
def advance_clock(body: ClockAdvance, request: Request, gateway: GatewayDep, clock: ClockDep,
                  settings: SettingsDep) -> ClockState:
    """Move the gateway's time forward (regulator key). Daily volumes restart at the next day
    and screening windows age, so each move is an entry in the audit log."""
    if not settings.allow_time_travel:
        raise Problem(403, "time-travel-disabled", "Time travel is disabled on this service")
    before = clock.now()
    after = clock.advance(timedelta(seconds=body.seconds))
    gateway.audit({"at": iso(before), "request_id": current_request_id() or "-", "participant_id": "regulator",
                   "method": request.method, "path": request.url.path[:500], "status": 200, "latency_us": 0,
                   "operation": f"advance_clock +{body.seconds} s to {iso(after)}"})
    return ClockState(now=after)
