"""Signed webhooks: participants' endpoints, and the dispatcher that delivers their events.

Deliveries follow the Standard Webhooks specification, signed with its library: `webhook-id`
(the event's id: the same on every attempt and redelivery, so a receiver deduplicates on it),
`webhook-timestamp` (wall-clock seconds when the attempt is sent: receivers check it against
their own clock, so it is never the sandbox clock, which a lesson may have moved days ahead)
and `webhook-signature` (`v1,<base64 HMAC-SHA256>`; during a rotation's grace period one for
each secret, space-separated, as the specification allows).

At least once: the fan-out turns each stored event into a delivery row per subscribed endpoint
in one transaction with the fan-out's cursor, and a delivery stays `pending` until a receiver
answers 2xx (or it runs out of attempts). A crash between a receiver's 2xx and the row's update
sends it again, with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, delete, select
from sqlmodel import Session
from standardwebhooks import Webhook

from sandbox.gateway.events import EVENTS, EventStore
from sandbox.gateway.models import EventCursor, StoredEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from sandbox.gateway.shared import WEBHOOKS_LEADER, Leadership, lock_log
from sandbox.gateway.schemas import (
    EventPublic,
    WebhookAttemptPublic,
    WebhookDeliveryPublic,
    WebhookEndpointCreate,
    WebhookEndpointPublic,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)
from sandbox.gateway.webhook_rules import (
    AllowList,
    DisablePolicy,
    RetryPolicy,
    host_refusal,
    needs_resolving,
    retry_delay,
    should_disable,
    subscribed,
    url_host,
)
from services.common.ids import new_id
from services.common.problems import Problem, not_found

log = logging.getLogger("sandbox.gateway.webhooks")

FAN_OUT_CURSOR = "webhooks"
ERROR_LENGTH = 200


def new_secret() -> str:
    """`whsec_` + base64 of 24 random bytes: the form Standard Webhooks' libraries read."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def resolve(host: str) -> list[str]:
    """The addresses `host` resolves to (empty when it does not)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})
    except (OSError, UnicodeError, ValueError):
        return []


def url_refusal(url: str, allow: AllowList) -> str | None:
    """Why this URL may not receive webhooks (checked at registration and before every attempt)."""
    host, refusal = url_host(url)
    if refusal is not None:
        return refusal
    assert host is not None
    return host_refusal(host, resolve(host) if needs_resolving(host, allow) else [], allow)


def _url_not_allowed(url: str, reason: str) -> Problem:
    # 403, not 422: the URL is well formed; the sandbox's policy says where deliveries may go.
    return Problem(403, "webhook-url-not-allowed", "Webhook URL not allowed",
                   f"{url[:200]} cannot receive webhooks: {reason}. The sandbox delivers to loopback "
                   "unless its operator lists hosts in GATEWAY_WEBHOOK_ALLOWED_HOSTS.", url=url[:200])


# -- endpoints: what participants register ----------------------------------------------------

def endpoint_public(row: WebhookEndpoint, now: datetime | None = None) -> WebhookEndpointPublic:
    now = now or datetime.now(UTC)
    grace = row.previous_secret_until if row.previous_secret and row.previous_secret_until \
        and row.previous_secret_until > now else None
    return WebhookEndpointPublic(
        id=row.id, participant_id=row.participant_id, url=row.url, description=row.description,
        event_types=[t for t in row.event_types.split("\n") if t], status=row.status,  # type: ignore[arg-type]
        disabled_reason=row.disabled_reason, consecutive_failures=row.consecutive_failures,
        previous_secret_until=grace, created_at=row.created_at, updated_at=row.updated_at)


def with_secret(row: WebhookEndpoint) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(**endpoint_public(row).model_dump(), secret=row.secret)


def create_endpoint(session: Session, participant_id: str, body: WebhookEndpointCreate, allow: AllowList,
                    store: EventStore) -> WebhookEndpointWithSecret:
    refusal = url_refusal(body.url, allow)
    if refusal is not None:
        raise _url_not_allowed(body.url, refusal)
    now = datetime.now(UTC)
    row = WebhookEndpoint(id=new_id("whe"), participant_id=participant_id, url=body.url,
                          description=body.description or "", event_types="\n".join(body.event_types),
                          secret=new_secret(), from_seq=store.head_in(session), created_at=now, updated_at=now)
    session.add(row)
    return with_secret(row)


def own_endpoint(session: Session, participant_id: str | None, endpoint_id: str) -> WebhookEndpoint:
    """The endpoint, if it is the caller's (None: the regulator's, who may read any)."""
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None or (participant_id is not None and row.participant_id != participant_id):
        raise not_found("Webhook endpoint", endpoint_id)
    return row


def list_endpoints(session: Session, participant_id: str | None, limit: int, after: str | None) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.id).limit(limit + 1)
    if participant_id is not None:
        query = query.where(WebhookEndpoint.participant_id == participant_id)
    if after:
        query = query.where(WebhookEndpoint.id > after)
    return list(session.execute(query).scalars())


def update_endpoint(session: Session, participant_id: str, endpoint_id: str, body: WebhookEndpointUpdate,
                    allow: AllowList) -> WebhookEndpointPublic:
    row = own_endpoint(session, participant_id, endpoint_id)
    if body.url is not None:
        refusal = url_refusal(body.url, allow)
        if refusal is not None:
            raise _url_not_allowed(body.url, refusal)
        row.url = body.url
    if body.event_types is not None:
        row.event_types = "\n".join(body.event_types)
    if body.description is not None:
        row.description = body.description
    if body.enabled is True and row.status != "enabled":
        row.status, row.disabled_reason = "enabled", None
        row.consecutive_failures, row.failing_since = 0, None
    elif body.enabled is False and row.status != "disabled":
        row.status, row.disabled_reason = "disabled", "disabled by its participant"
    row.updated_at = datetime.now(UTC)
    session.add(row)
    return endpoint_public(row)


def delete_endpoint(session: Session, participant_id: str, endpoint_id: str) -> None:
    """The endpoint goes, and with it what it was still owed and its delivery log."""
    row = own_endpoint(session, participant_id, endpoint_id)
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == row.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == row.id))
    session.delete(row)


def rotate_secret(session: Session, participant_id: str, endpoint_id: str, grace_seconds: int) -> WebhookEndpointWithSecret:
    """A new secret signs from now on; the previous one signs too until the grace period ends,
    so a receiver can switch without rejecting a delivery."""
    row = own_endpoint(session, participant_id, endpoint_id)
    now = datetime.now(UTC)
    row.previous_secret = row.secret if grace_seconds else None
    row.previous_secret_until = now + timedelta(seconds=grace_seconds) if grace_seconds else None
    row.secret = new_secret()
    row.updated_at = now
    session.add(row)
    return with_secret(row)


def deliveries_of(session: Session, endpoint: WebhookEndpoint, limit: int, after: str | None) -> list[WebhookDeliveryPublic]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    query = (select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
             .order_by(WebhookDelivery.id.desc()).limit(limit + 1))  # type: ignore[attr-defined]
    if after:
        query = query.where(WebhookDelivery.id < after)
    return present_deliveries(session, list(session.execute(query).scalars()))


def present_deliveries(session: Session, rows: list[WebhookDelivery]) -> list[WebhookDeliveryPublic]:
    attempts: dict[str, list[WebhookAttemptPublic]] = {r.id: [] for r in rows}
    if rows:
        for a in session.execute(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                                 .order_by(WebhookAttempt.number)).scalars():  # type: ignore[arg-type]
            attempts[a.delivery_id].append(WebhookAttemptPublic(
                number=a.number, at=a.at, status_code=a.status_code, latency_ms=a.latency_ms,
                error=a.error, signed_with=a.signed_with))
    return [WebhookDeliveryPublic(
        id=r.id, endpoint_id=r.endpoint_id, event_id=r.event_id, event_type=r.event_type,
        status=r.status, attempts=attempts[r.id],  # type: ignore[arg-type]
        next_attempt_at=r.next_attempt_at if r.status == "pending" else None,
        created_at=r.created_at, delivered_at=r.delivered_at) for r in rows]


def redeliver(session: Session, participant_id: str, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again now, whatever became of it (a receiver that lost it, or fixed)."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or row.participant_id != participant_id:
        raise not_found("Webhook delivery", delivery_id)
    endpoint = session.get(WebhookEndpoint, row.endpoint_id)
    if endpoint is not None and endpoint.status != "enabled":
        raise Problem(409, "webhook-endpoint-disabled", "Webhook endpoint disabled",
                      f"Endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); re-enable it "
                      "(PATCH with enabled: true) before redelivering.", endpoint_id=endpoint.id)
    row.status, row.next_attempt_at = "pending", datetime.now(UTC)
    session.add(row)
    return row


def event_public(row: Any) -> EventPublic:
    return EventPublic(seq=row.seq, id=row.id, type=row.type, source=row.source, participant_id=row.participant_id,
                       subject_id=row.subject_id, occurred_at=row.occurred_at, stored_at=row.stored_at,
                       data=json.loads(row.data))


def list_events(session: Session, participant_id: str | None, after: int, type_pattern: str | None,
                limit: int) -> list[StoredEvent]:
    query = select(StoredEvent).where(StoredEvent.seq > after).order_by(StoredEvent.seq).limit(limit + 1)  # type: ignore[arg-type]
    if participant_id is not None:
        query = query.where(StoredEvent.participant_id == participant_id)
    if type_pattern:
        name = type_pattern.removesuffix(".*")
        query = query.where((StoredEvent.type == name)
                            | StoredEvent.type.startswith(name + ".", autoescape=True))  # type: ignore[attr-defined]
    return list(session.execute(query).scalars())


def payload_of(event: Any) -> str:
    """The body every delivery of this event carries, byte for byte (the signature covers it)."""
    return json.dumps({
        "id": event.id, "type": event.type, "timestamp": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "source": event.source, "participant_id": event.participant_id, "subject_id": event.subject_id,
        "data": json.loads(event.data)}, separators=(",", ":"), ensure_ascii=False)


def sign(endpoint: WebhookEndpoint, msg_id: str, at: datetime, body: str) -> tuple[str, int]:
    """`webhook-signature`: the current secret's, and the previous one's in its grace period."""
    keys = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > at:
        keys.append(endpoint.previous_secret)
    return " ".join(Webhook(k).sign(msg_id, at, body) for k in keys), len(keys)


# -- the dispatcher ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DispatchSettings:
    poll_s: float
    batch: int
    timeout_s: float
    retry: RetryPolicy
    disable: DisablePolicy
    allow: AllowList


@dataclass
class Attempted:
    delivery_id: str
    endpoint_id: str
    ok: bool
    status_code: int | None
    latency_ms: float
    error: str | None
    signed_with: int
    at: datetime


class Dispatcher:
    """Fans stored events out to subscribed endpoints and delivers what is due, round after round."""

    def __init__(self, engine: Engine, reader: Engine, store: EventStore, settings: DispatchSettings,
                 on_disabled: Any = None) -> None:
        self.engine = engine
        self.reader = reader  # due deliveries are read without SQLite's writer lock
        self.store = store
        self._fanned_up_to = -1  # the store's head at the last fan-out: nothing new, no transaction
        self.leadership = Leadership(engine, WEBHOOKS_LEADER)  # one replica delivers at a time
        self.settings = settings
        self.on_disabled = on_disabled  # (endpoint row, reason) → None: the audit log's entry
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        # The bench's hook: (delivery id, event id, the moment the receiver's answer came).
        self.delivered_hook: Any = None

    def wake(self) -> None:
        """Something was stored or redelivered: run a round now rather than at the next poll.
        Safe from any thread (the regulator's and participants' handlers run in the threadpool)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # Its own client: a receiver's slowness never holds the proxy's connection pool.
            self._client = httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False,
                                             trust_env=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await asyncio.to_thread(self.leadership.release)

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.round()
            except Exception:  # noqa: BLE001 - keep delivering; what failed is still pending
                log.exception("webhook round failed; its deliveries stay pending")

    async def round(self) -> int:
        """Fan out what was stored, then attempt every due delivery (a batch); how many were tried.
        With replicas, only the one that leads does (the others wait their turn to take over)."""
        if not await asyncio.to_thread(self.leadership.held):
            return 0
        await asyncio.to_thread(self.fan_out)
        due = await asyncio.to_thread(self._due)
        if not due:
            return 0
        results = await asyncio.gather(*(self._attempt(endpoint, event, delivery) for delivery, endpoint, event in due))
        await asyncio.to_thread(self._record, results)
        return len(results)

    def fan_out(self) -> int:
        """Deliveries for the events stored after the cursor, and the cursor moved past them, in
        one transaction: each event is owed once to each endpoint subscribed when it came."""
        head = self.store.committed_head()
        if head <= self._fanned_up_to:
            return 0
        read, made = self._fan_out()
        if read < self.settings.batch:  # all caught up to `head` (a full batch: read on next round)
            self._fanned_up_to = head
        return made

    def _fan_out(self) -> tuple[int, int]:
        with Session(self.engine, expire_on_commit=False) as session:
            lock_log(session.connection())  # the cursor moves in one replica's transaction at a time
            cursor = session.get(EventCursor, FAN_OUT_CURSOR)
            after = cursor.seq if cursor is not None else 0
            events = list(session.execute(select(EVENTS).where(EVENTS.c.seq > after, EVENTS.c.participant_id.is_not(None))
                                          .order_by(EVENTS.c.seq).limit(self.settings.batch)))
            if not events:
                return 0, 0
            owners = {e.participant_id for e in events}
            endpoints = list(session.execute(select(WebhookEndpoint).where(
                WebhookEndpoint.participant_id.in_(owners), WebhookEndpoint.status == "enabled")).scalars())  # type: ignore[attr-defined]
            now = datetime.now(UTC)
            made = 0
            for event in events:
                for endpoint in endpoints:
                    if endpoint.participant_id != event.participant_id or event.seq <= endpoint.from_seq:
                        continue
                    if not subscribed(event.type, [t for t in endpoint.event_types.split("\n") if t]):
                        continue
                    session.add(WebhookDelivery(
                        id=new_id("whd"), endpoint_id=endpoint.id, participant_id=endpoint.participant_id,
                        event_seq=event.seq, event_id=event.id, event_type=event.type, next_attempt_at=now,
                        created_at=now))
                    made += 1
            if cursor is None:
                cursor = EventCursor(name=FAN_OUT_CURSOR, seq=0)
            cursor.seq = events[-1].seq
            session.add(cursor)
            session.commit()
            return len(events), made

    def _due(self) -> list[tuple[WebhookDelivery, WebhookEndpoint, Any]]:
        now = datetime.now(UTC)
        with Session(self.reader, expire_on_commit=False) as session:
            rows = session.execute(
                select(WebhookDelivery, WebhookEndpoint)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)  # type: ignore[arg-type]
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,  # type: ignore[operator]
                       WebhookEndpoint.status == "enabled")
                .order_by(WebhookDelivery.next_attempt_at).limit(self.settings.batch)).all()
            seqs = {d.event_seq for d, _ in rows}
            events = {e.seq: e for e in session.execute(select(EVENTS).where(EVENTS.c.seq.in_(seqs)))} if seqs else {}
        return [(d, e, events[d.event_seq]) for d, e in rows if d.event_seq in events]

    async def _attempt(self, endpoint: WebhookEndpoint, event: Any, delivery: WebhookDelivery) -> Attempted:
        at = datetime.now(UTC)
        refusal = await asyncio.to_thread(url_refusal, endpoint.url, self.settings.allow)  # checked again: DNS moves
        if refusal is not None:
            return Attempted(delivery.id, endpoint.id, False, None, 0.0, f"host-not-allowed: {refusal}"[:ERROR_LENGTH],
                             0, at)
        body = payload_of(event)
        signature, signed_with = sign(endpoint, event.id, at, body)
        headers = {"content-type": "application/json", "user-agent": "fintech-sandbox-webhooks/1",
                   "webhook-id": event.id, "webhook-timestamp": str(int(at.timestamp())),
                   "webhook-signature": signature}
        started = time.perf_counter()
        try:
            answer = await self.client.post(endpoint.url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            latency = (time.perf_counter() - started) * 1000
            return Attempted(delivery.id, endpoint.id, False, None, latency,
                             f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH], signed_with, at)
        latency = (time.perf_counter() - started) * 1000
        ok = 200 <= answer.status_code < 300
        if ok and self.delivered_hook is not None:
            self.delivered_hook(delivery.id, event.id)
        return Attempted(delivery.id, endpoint.id, ok, answer.status_code, latency,
                         None if ok else f"answered {answer.status_code}", signed_with, at)

    def _record(self, results: list[Attempted]) -> None:
        """Each attempt in the log; the delivery succeeded, or waits its backoff, or failed; the
        endpoint's failure count, and disabled after enough failures over long enough."""
        disabled: list[tuple[WebhookEndpoint, str]] = []
        with Session(self.engine, expire_on_commit=False) as session:
            for result in results:
                delivery = session.get(WebhookDelivery, result.delivery_id)
                endpoint = session.get(WebhookEndpoint, result.endpoint_id)
                if delivery is None or endpoint is None:  # deleted meanwhile
                    continue
                delivery.attempts += 1
                session.add(WebhookAttempt(delivery_id=delivery.id, number=delivery.attempts, at=result.at,
                                           status_code=result.status_code, latency_ms=round(result.latency_ms, 3),
                                           error=result.error, signed_with=result.signed_with))
                delivery.last_status_code, delivery.last_error = result.status_code, result.error
                now = datetime.now(UTC)
                if result.ok:
                    delivery.status, delivery.delivered_at, delivery.next_attempt_at = "succeeded", now, None
                    endpoint.consecutive_failures, endpoint.failing_since = 0, None
                else:
                    wait = retry_delay(self.settings.retry, delivery.attempts)
                    if wait is None:
                        delivery.status, delivery.next_attempt_at = "failed", None
                    else:
                        delivery.next_attempt_at = now + timedelta(seconds=wait)
                    endpoint.consecutive_failures += 1
                    endpoint.failing_since = endpoint.failing_since or result.at
                    if endpoint.status == "enabled" and should_disable(
                            self.settings.disable, endpoint.consecutive_failures, endpoint.failing_since, now):
                        endpoint.status = "disabled"
                        endpoint.disabled_reason = (f"{endpoint.consecutive_failures} consecutive failed deliveries "
                                                    f"since {endpoint.failing_since.isoformat(timespec='seconds')}")
                        disabled.append((endpoint, endpoint.disabled_reason))
                endpoint.updated_at = now
                session.add(delivery)
                session.add(endpoint)
            session.commit()
        for endpoint, reason in disabled:
            log.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
            if self.on_disabled is not None:
                self.on_disabled(endpoint, reason)

