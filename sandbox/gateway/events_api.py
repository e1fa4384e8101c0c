"""The events API and webhook endpoints at the gateway (participant key), the regulator's view
of them, and the one sandbox clock (regulator key). docs/events.md tells the story."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlmodel import Session

from sandbox.gateway import webhooks
from sandbox.gateway.endpoints import (
    AUTH,
    GatewayDep,
    ReadSessionDep,
    _unauthorised,
    api_key_of,
    require_regulator,
)
from sandbox.gateway.limits import Policy
from sandbox.gateway.proxy import Gateway, iso
from sandbox.gateway.schemas import (
    DELIVERY_PREFIX,
    ENDPOINT_PREFIX,
    EVENT_TYPE_PATTERN,
    EventPage,
    SandboxClockMoved,
    SecretRotation,
    ServiceClockMove,
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)
from sandbox.gateway.service import CHANGE_BEFORE_LOG
from services.common.app import ClockAdvance, ClockDep, ClockState, SettingsDep
from services.common.db import SessionDep, record_first
from services.common.fields import IdPath
from services.common.ids import new_id
from services.common.pagination import CursorQuery, LimitQuery, Page, page_of
from services.common.problems import Problem, problem_responses
from services.common.requestctx import current_request_id

SERVICE_CLOCK_TIMEOUT_S = 30.0  # a service's due work runs inside its clock move


def participant_caller(gateway: GatewayDep, api_key: Annotated[str | None, Depends(api_key_of)]) -> Policy:
    """A participant's own key: each sees and changes only its own events and endpoints."""
    gateway.catch_up()  # one admitted or suspended on another replica
    policy = gateway.policy_for_key(api_key)
    if policy is None:
        if gateway.is_regulator(api_key):
            raise Problem(403, "regulator-key-not-a-participant", "Not a participant's key",
                          "The regulator reads every participant's events at GET /sandbox/events.")
        raise _unauthorised(api_key)
    if policy.status != "active":
        raise Problem(403, "participant-suspended", "Participant suspended",
                      f"{policy.id} is suspended; its endpoints still receive its events.",
                      limit="status", participant_id=policy.id)
    return policy


ParticipantDep = Annotated[Policy, Depends(participant_caller)]
EndpointId = Annotated[str, IdPath(ENDPOINT_PREFIX, "A webhook endpoint id, `whe_…`.")]
DeliveryId = Annotated[str, IdPath(DELIVERY_PREFIX, "A delivery id, `whd_…`.")]
AfterQuery = Annotated[int, Query(ge=0, le=2**53, description=(
    "Events after this cursor (`next_after` of the previous page; 0: from the first). Reading again "
    "from an old cursor replays what came since."))]
TypeQuery = Annotated[str | None, Query(pattern=EVENT_TYPE_PATTERN, max_length=80, description=(
    "One type (`payments.transfer.completed`) or every type under a prefix (`payments`, `credit.*`)."))]
EventLimit = Annotated[int, Query(ge=1, le=500, description="At most this many, oldest first.")]

participant_router = APIRouter()
regulator_router = APIRouter(prefix="/sandbox", dependencies=[Depends(require_regulator)])


def _log_change(gateway: Gateway, request: Request, participant_id: str, status: int, operation: str) -> None:
    """Webhook changes go in the audit log as the regulator's changes do (reads do not: a
    listener polls twice a second)."""
    gateway.audit({"at": iso(gateway.clock.now()), "request_id": current_request_id() or new_id("req"),
                   "participant_id": participant_id, "method": request.method, "path": request.url.path[:500],
                   "status": status, "latency_us": 0, "operation": operation})


@contextmanager
def _refusals_logged(gateway: Gateway, request: Request, session: Session, policy: Policy,
                     operation: str) -> Iterator[None]:
    """A refused change is on the record too, with the status the participant got. The unit of
    work is rolled back first (the kit would roll it back anyway): on SQLite its transaction holds
    the writer's lock, which the log's append needs."""
    try:
        yield
    except Problem as refused:
        session.rollback()
        _log_change(gateway, request, policy.id, refused.status, operation)
        raise


# -- events --------------------------------------------------------------------------------------

@participant_router.get("/events", tags=["events"], operation_id="list_events", response_model=EventPage,
                        responses=problem_responses(401, 403, 422))
def list_events(caller: ParticipantDep, session: ReadSessionDep, after: AfterQuery = 0, type: TypeQuery = None,  # noqa: A002
                limit: EventLimit = 100) -> EventPage:
    """This participant's events (about its own resources), oldest first, from a cursor:
    transfers, loan decisions, consents, alerts on its traffic, its suspension."""
    return _event_page(webhooks.list_events(session, caller.id, after, type, limit), after, limit)


def _event_page(rows: list, after: int, limit: int) -> EventPage:  # type: ignore[type-arg]
    has_more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(data=[webhooks.event_public(r) for r in rows], next_after=rows[-1].seq if rows else after,
                     has_more=has_more)


@regulator_router.get("/events", tags=["events"], operation_id="list_all_events", response_model=EventPage,
                      responses=problem_responses(*AUTH, 422))
def list_all_events(
    session: ReadSessionDep, after: AfterQuery = 0, type: TypeQuery = None, limit: EventLimit = 100,  # noqa: A002
    participant_id: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_]+$")] = None,
) -> EventPage:
    """Every participant's events, and the sandbox's own, oldest first, from a cursor."""
    return _event_page(webhooks.list_events(session, participant_id, after, type, limit), after, limit)


# -- webhook endpoints ------------------------------------------------------------------------

@participant_router.post("/webhooks/endpoints", status_code=201, tags=["webhooks"],
                         operation_id="create_webhook_endpoint", response_model=WebhookEndpointWithSecret,
                         responses=problem_responses(401, 403, 422))
def create_webhook_endpoint(body: WebhookEndpointCreate, caller: ParticipantDep, request: Request,
                            session: SessionDep, gateway: GatewayDep) -> WebhookEndpointWithSecret:
    """Register an endpoint for this participant's events. The answer shows its signing secret
    (`whsec_…`) this once. A URL on a host the sandbox does not allow is refused (403
    `webhook-url-not-allowed`): loopback only, unless the operator lists hosts."""
    with _refusals_logged(gateway, request, session, caller, "create_webhook_endpoint"):
        created = webhooks.create_endpoint(session, caller.id, body, gateway.webhook_allow, gateway.events)  # type: ignore[arg-type]
        record_first(session, CHANGE_BEFORE_LOG)
    _log_change(gateway, request, caller.id, 201, f"create_webhook_endpoint {created.id}")
    return created


@participant_router.get("/webhooks/endpoints", tags=["webhooks"], operation_id="list_webhook_endpoints",
                        response_model=Page[WebhookEndpointPublic], responses=problem_responses(401, 403, 422))
def list_webhook_endpoints(caller: ParticipantDep, session: ReadSessionDep, limit: LimitQuery = 20,
                           after: CursorQuery = None) -> Page[WebhookEndpointPublic]:
    """This participant's endpoints."""
    rows = webhooks.list_endpoints(session, caller.id, limit, after)
    return page_of([webhooks.endpoint_public(r) for r in rows], limit, lambda e: e.id)


@participant_router.get("/webhooks/endpoints/{endpoint_id}", tags=["webhooks"], operation_id="get_webhook_endpoint",
                        response_model=WebhookEndpointPublic, responses=problem_responses(401, 403, 404, 422))
def get_webhook_endpoint(endpoint_id: EndpointId, caller: ParticipantDep, session: ReadSessionDep) -> WebhookEndpointPublic:
    """One of this participant's endpoints (another's is not found)."""
    return webhooks.endpoint_public(webhooks.own_endpoint(session, caller.id, endpoint_id))


@participant_router.patch("/webhooks/endpoints/{endpoint_id}", tags=["webhooks"],
                          operation_id="update_webhook_endpoint", response_model=WebhookEndpointPublic,
                          responses=problem_responses(401, 403, 404, 422))
def update_webhook_endpoint(endpoint_id: EndpointId, body: WebhookEndpointUpdate, caller: ParticipantDep,
                            request: Request, session: SessionDep, gateway: GatewayDep) -> WebhookEndpointPublic:
    """Change its URL, types or description; `enabled: true` re-enables one disabled after failing."""
    with _refusals_logged(gateway, request, session, caller, "update_webhook_endpoint"):
        updated = webhooks.update_endpoint(session, caller.id, endpoint_id, body, gateway.webhook_allow)
        record_first(session, CHANGE_BEFORE_LOG)
    _log_change(gateway, request, caller.id, 200, f"update_webhook_endpoint {endpoint_id}")
    return updated


@participant_router.delete("/webhooks/endpoints/{endpoint_id}", status_code=204, tags=["webhooks"],
                           operation_id="delete_webhook_endpoint", response_class=Response,
                           responses=problem_responses(401, 403, 404, 422))
def delete_webhook_endpoint(endpoint_id: EndpointId, caller: ParticipantDep, request: Request,
                            session: SessionDep, gateway: GatewayDep) -> Response:
    """Delete it, with what it was still owed and its delivery log."""
    with _refusals_logged(gateway, request, session, caller, "delete_webhook_endpoint"):
        webhooks.delete_endpoint(session, caller.id, endpoint_id)
        record_first(session, CHANGE_BEFORE_LOG)
    _log_change(gateway, request, caller.id, 204, f"delete_webhook_endpoint {endpoint_id}")
    return Response(status_code=204)


@participant_router.post("/webhooks/endpoints/{endpoint_id}/rotate-secret", tags=["webhooks"],
                         operation_id="rotate_webhook_secret", response_model=WebhookEndpointWithSecret,
                         responses=problem_responses(401, 403, 404, 422))
def rotate_webhook_secret(endpoint_id: EndpointId, body: SecretRotation, caller: ParticipantDep, request: Request,
                          session: SessionDep, gateway: GatewayDep) -> WebhookEndpointWithSecret:
    """A new secret, shown this once. Until `grace_seconds` pass, deliveries carry a signature
    by each secret (space-separated in `webhook-signature`), so either verifies."""
    with _refusals_logged(gateway, request, session, caller, "rotate_webhook_secret"):
        rotated = webhooks.rotate_secret(session, caller.id, endpoint_id, body.grace_seconds)
        record_first(session, CHANGE_BEFORE_LOG)
    _log_change(gateway, request, caller.id, 200, f"rotate_webhook_secret {endpoint_id} grace {body.grace_seconds} s")
    return rotated


@participant_router.get("/webhooks/endpoints/{endpoint_id}/deliveries", tags=["webhooks"],
                        operation_id="list_webhook_deliveries", response_model=Page[WebhookDeliveryPublic],
                        responses=problem_responses(401, 403, 404, 422))
def list_webhook_deliveries(endpoint_id: EndpointId, caller: ParticipantDep, session: ReadSessionDep,
                            limit: LimitQuery = 20, after: CursorQuery = None) -> Page[WebhookDeliveryPublic]:
    """Its deliveries, newest first: each attempt's answer and latency, what is still pending."""
    endpoint = webhooks.own_endpoint(session, caller.id, endpoint_id)
    return page_of(webhooks.deliveries_of(session, endpoint, limit, after), limit, lambda d: d.id)


@participant_router.post("/webhooks/deliveries/{delivery_id}/redeliver", status_code=202, tags=["webhooks"],
                         operation_id="redeliver_webhook", response_model=WebhookDeliveryPublic,
                         responses=problem_responses(401, 403, 404, 409, 422))
def redeliver_webhook(delivery_id: DeliveryId, caller: ParticipantDep, request: Request, session: SessionDep,
                      gateway: GatewayDep) -> WebhookDeliveryPublic:
    """Send a delivery again now (same `webhook-id`), succeeded or failed. 409 while its endpoint
    is disabled."""
    with _refusals_logged(gateway, request, session, caller, "redeliver_webhook"):
        row = webhooks.redeliver(session, caller.id, delivery_id)
        [public] = webhooks.present_deliveries(session, [row])  # before the commit: no second transaction
        record_first(session, CHANGE_BEFORE_LOG)
    _log_change(gateway, request, caller.id, 202, f"redeliver_webhook {delivery_id}")
    if gateway.dispatcher is not None:
        gateway.dispatcher.wake()
    return public


@regulator_router.get("/webhooks/endpoints", tags=["events"], operation_id="list_all_webhook_endpoints",
                      response_model=Page[WebhookEndpointPublic], responses=problem_responses(*AUTH, 422))
def list_all_webhook_endpoints(
    session: ReadSessionDep, limit: LimitQuery = 20, after: CursorQuery = None,
    participant_id: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_]+$")] = None,
) -> Page[WebhookEndpointPublic]:
    """Every participant's webhook endpoints (never their secrets)."""
    rows = webhooks.list_endpoints(session, participant_id, limit, after)
    return page_of([webhooks.endpoint_public(r) for r in rows], limit, lambda e: e.id)


@regulator_router.get("/webhooks/endpoints/{endpoint_id}/deliveries", tags=["events"],
                      operation_id="list_endpoint_deliveries", response_model=Page[WebhookDeliveryPublic],
                      responses=problem_responses(*AUTH, 404, 422))
def list_endpoint_deliveries(endpoint_id: EndpointId, session: ReadSessionDep, limit: LimitQuery = 20,
                             after: CursorQuery = None) -> Page[WebhookDeliveryPublic]:
    """One endpoint's deliveries, newest first, with every attempt."""
    endpoint = webhooks.own_endpoint(session, None, endpoint_id)
    return page_of(webhooks.deliveries_of(session, endpoint, limit, after), limit, lambda d: d.id)


# -- the one sandbox clock ---------------------------------------------------------------------

@regulator_router.get("/clock", tags=["sandbox"], operation_id="get_sandbox_clock", response_model=ClockState,
                      responses=problem_responses(*AUTH))
def get_sandbox_clock(clock: ClockDep) -> ClockState:
    """The sandbox's time, as the gateway's limits and screening see it."""
    return ClockState(now=clock.now())


@regulator_router.post("/clock/advance", tags=["sandbox"], operation_id="advance_sandbox_clock",
                       response_model=SandboxClockMoved, responses=problem_responses(*AUTH, 422))
async def advance_sandbox_clock(body: ClockAdvance, request: Request, gateway: GatewayDep, clock: ClockDep,
                                settings: SettingsDep) -> SandboxClockMoved:
    """Move the whole sandbox's time: the gateway's clock and every service's
    (`POST /_sandbox/clock/advance` on each), so what falls due there runs now (a settlement, an
    instalment, a consent's expiry) and each says what fired. The events it caused are relayed
    at once. One entry in the audit log. Use this rather than a service's own clock route, which
    is there for a service run alone."""
    if not settings.allow_time_travel:
        raise Problem(403, "time-travel-disabled", "Time travel is disabled on this service")
    before = clock.now()
    after = clock.advance(timedelta(seconds=body.seconds))
    moves: dict[str, ServiceClockMove] = {}
    for service, base in gateway.upstreams.items():
        moves[service] = await _move_service_clock(gateway, base, body.seconds)
    relayed = await gateway.relay.relay_once() if gateway.relay is not None else 0
    fired = "; ".join(f"{s}: {m.fired}" for s, m in moves.items() if m.fired) or "nothing fired"
    unreached = ", ".join(s for s, m in moves.items() if not m.reached)
    gateway.audit({"at": iso(before), "request_id": current_request_id() or "-", "participant_id": "regulator",
                   "method": request.method, "path": request.url.path[:500], "status": 200, "latency_us": 0,
                   "operation": (f"advance_sandbox_clock +{body.seconds} s to {iso(after)}; {fired}"
                                 + (f"; not reached: {unreached}" if unreached else ""))[:200]})
    return SandboxClockMoved(now=after, services=moves, events_relayed=relayed)


async def _move_service_clock(gateway: Gateway, base: str, seconds: int) -> ServiceClockMove:
    try:
        answer = await gateway.client.post(f"{base}/_sandbox/clock/advance", json={"seconds": seconds},
                                           timeout=SERVICE_CLOCK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return ServiceClockMove(reached=False, error=f"{type(exc).__name__}: {exc}"[:200])
    if answer.status_code != 200:
        return ServiceClockMove(reached=False, error=f"answered {answer.status_code}")
    moved = answer.json()
    return ServiceClockMove(reached=True, now=moved.get("now"), fired=moved.get("fired") or {})
