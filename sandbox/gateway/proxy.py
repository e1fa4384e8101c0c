"""The door: every participant request passes key → limits → rate limit → screening → the
service, and leaves one entry in the audit log. Small answers of known size are sent back whole,
larger or open-ended ones streamed."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sandbox.gateway import repository
from sandbox.gateway.auditlog import ChainHead
from sandbox.gateway.limits import (
    AllowedOperation,
    Breach,
    Policy,
    Usage,
    UsageHold,
    check_access,
    check_amounts,
    commit_usage,
    hash_key,
    hold_usage,
    release_usage,
    take_rate,
)
from sandbox.gateway.models import Participant
from sandbox.gateway.screening import Decision, History, Recorded, RuleSet, Transaction, Unscreenable
from services.common.clock import Clock
from services.common.db import Database
from services.common.idempotency import REPLAY_HEADER, RETENTION, fingerprint
from services.common.ids import new_id
from services.common.problems import PROBLEM_MEDIA_TYPE, problem_body
from services.common.requestctx import current_request_id

log = logging.getLogger("sandbox.gateway")

# RFC 9110 §7.6.1 connection-specific fields, plus those the proxy sets itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_DROP_REQUEST = HOP_BY_HOP | {"host", "content-length", "x-api-key", "x-request-id"}
_DROP_RESPONSE = HOP_BY_HOP | {"x-request-id", "date", "server"}
BUFFERED_BODY_BYTES = 1024 * 1024  # answers with a Content-Length up to this are sent back whole
PARTICIPANT_HEADER = "X-Sandbox-Participant"
RECEIPT_HEADER = "X-Sandbox-Receipt"
DECISION_HEADER = "X-Sandbox-Decision"
LOOKUP_PARTICIPANT = "gateway"  # how the gateway's own name look-ups appear to payments


# Idempotency-Key (payments, credit, advisor) and OBIE's x-idempotency-key (open banking).
IDEMPOTENCY_HEADERS = ("idempotency-key", "x-idempotency-key")
KEY_MEMORY = 100_000  # idempotency keys remembered at most (each for RETENTION)


class ScreeningUnavailable(Exception):
    """A screening dependency failed: the request is refused, never forwarded unscreened."""


def is_sandbox_control(path: str) -> bool:
    """A service's own /_sandbox/... routes (its clock): never a participant's to call."""
    return path == "/_sandbox" or path.startswith("/_sandbox/")


@dataclass
class Hold:
    """What one forwarded money movement holds until the service answers: its amount and
    customer against the participant's limits, its entries in the screening history."""

    usage: Usage
    limits: UsageHold | None
    history: Recorded | None
    settled: bool = False


@dataclass
class KeyRecord:
    """An idempotency key the gateway forwarded a money movement with (per participant and
    service, as the services scope them). `counted`: the service accepted it and it counts;
    `in_flight`: forwarded, no answer yet; `uncounted`: the answer never came (timeout), so
    nothing counts, and whichever retry the service accepts is counted."""

    fingerprint: str
    state: str
    at: float  # gateway clock, epoch seconds
    decision: Decision
    alert_id: str | None


@dataclass
class Hop:
    """A screened request in flight whose service may move its money in a second hop through
    the gateway (open banking's ledger transfer), with the same X-Request-ID."""

    participant_id: str
    service: str
    value: int
    hold: Hold
    decision: Decision
    alert_id: str | None
    linked: bool = False


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def policy_of(row: Participant) -> Policy:
    return Policy(
        id=row.id, name=row.name, status=row.status,
        services=frozenset(s for s in row.services.split(",") if s),
        operations=tuple(AllowedOperation.parse(o) for o in row.operations.split("\n") if o),
        window_from=row.window_from, window_to=row.window_to, max_single=row.max_single_minor,
        daily_volume=row.daily_volume_minor, max_customers=row.max_customers,
        rate_limit_per_minute=row.rate_limit_per_minute,
    )


async def _small_body(response: httpx.Response) -> bytes | None:
    """The whole answer, bytes as they came (not decoded), when it declares a Content-Length up
    to BUFFERED_BODY_BYTES (every JSON answer here); None for a larger or open-ended one, which
    is streamed instead. Streaming a few hundred bytes would cost a task group and a cancel
    scope per request."""
    length = response.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > BUFFERED_BODY_BYTES:
        return None
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


class Gateway:
    """The proxy's state: who may call, what they used, the screening history, the chain head,
    and the one shared HTTP client."""

    def __init__(self, *, db: Database, clock: Clock, rules: RuleSet, upstreams: Mapping[str, str],
                 regulator_key: str, transports: Mapping[str, httpx.AsyncBaseTransport] | None,
                 connect_timeout: float, read_timeout: float, max_connections: int,
                 service_participants: Mapping[str, str] | None = None) -> None:
        self.db = db
        # Regulator reads and verification use the database's read-only engine: on SQLite its
        # plain WAL reads never block the proxy's appends, nor the appends them.
        self.reader = db.reader
        self.clock = clock
        self.rules = rules
        self.regulator_key_hash = hash_key(regulator_key)
        self.history = History(rules.horizon_s)
        self.policies: dict[str, Policy] = {}  # key hash → policy
        self.policies_by_id: dict[str, Policy] = {}
        self.usage: dict[str, Usage] = {}
        self.owner_names: dict[str, str] = {}  # payments account id → owner name (never changes)
        # service label → the participant that service calls the gateway as: its hops that carry
        # the request id of a screened request to that service continue the same payment.
        self.service_participants = dict(service_participants or {})
        self.keys: dict[tuple[str, str, str], KeyRecord] = {}  # (participant, service, key)
        self.hops: dict[str, Hop] = {}  # request id → screened request in flight
        self.head = ChainHead()
        self._audit_lock = threading.Lock()  # regulator handlers append from worker threads
        self.upstreams: dict[str, str] = {}
        self.mounts: dict[str, httpx.AsyncBaseTransport] = {}
        for service, url in upstreams.items():
            if transports and service in transports:
                url = f"http://{service}.upstream"  # routed to the injected transport
                self.mounts[url] = transports[service]
            self.upstreams[service] = url.rstrip("/")
        self.timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout,
                                     pool=connect_timeout)
        self.limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client: httpx.AsyncClient | None = None
        self._transports: dict[str, httpx.AsyncBaseTransport] = {}  # upstream URL → transport

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        """One client for every upstream, created in the loop that serves requests."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, limits=self.limits, follow_redirects=False, trust_env=False,
                mounts={url: t for url, t in self.mounts.items()},
            )
        return self._client

    def transport(self, service: str) -> httpx.AsyncBaseTransport:
        """The transport (connection pool) a proxied request to `service` goes through: the
        injected one, else one per upstream. Proxied requests are sent on it directly, not
        through the client: a proxy needs none of its cookie jar, auth or redirect handling,
        which cost about a tenth of the gateway's time per request."""
        url = self.upstreams[service]
        transport = self._transports.get(url)
        if transport is None:
            transport = self.mounts.get(url) or httpx.AsyncHTTPTransport(limits=self.limits)
            self._transports[url] = transport
        return transport

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        transports, self._transports = self._transports, {}
        for url, transport in transports.items():
            if url not in self.mounts:  # injected transports belong to whoever injected them
                await transport.aclose()

    def load(self) -> None:
        """Participants, the chain head and the screening history, from the database."""
        with self.db.session() as session:
            for row in repository.all_participants(session):
                self.remember(row)
        head = repository.audit_head(self.db.engine)
        if head is not None:
            self.head = ChainHead(head[0] + 1, head[1])
        now = self.clock.now()
        day = now.astimezone(UTC).toordinal()
        since = iso(now - timedelta(seconds=self.rules.horizon_s))
        for row in repository.accepted_money_movements(self.db.engine, since):
            moment = datetime.strptime(row.at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            tx = Transaction(row.participant_id, "", "", "", "", 0, row.value_minor, payer=row.payer,
                             payee=row.payee, customer=row.customer)
            if row.counts in repository.COUNTS_FOR_HISTORY:
                self.history.record(tx, moment.timestamp())
            usage = self.usage.setdefault(row.participant_id, Usage())
            if moment.toordinal() == day and row.counts in repository.COUNTS_FOR_LIMITS:
                if usage.day != day:
                    usage.day, usage.day_volume = day, 0
                usage.day_volume += row.value_minor
        for row in repository.customers_by_participant(self.db.engine):
            self.usage.setdefault(row.participant_id, Usage()).customers.add(row.customer)

    def remember(self, row: Participant) -> None:
        """Admission, suspension and reinstatement take effect on the next request."""
        old = self.policies_by_id.get(row.id)
        if old is not None:
            self.policies = {h: p for h, p in self.policies.items() if p.id != row.id}
        policy = policy_of(row)
        self.policies[row.key_hash] = policy
        self.policies_by_id[row.id] = policy

    def is_regulator(self, api_key: str | None) -> bool:
        return api_key is not None and hash_key(api_key) == self.regulator_key_hash

    def policy_for_key(self, api_key: str | None) -> Policy | None:
        return self.policies.get(hash_key(api_key)) if api_key else None

    # -- the audit log -------------------------------------------------------------------------

    def audit(self, fields: dict[str, Any], alert: dict[str, Any] | None = None) -> tuple[int, str]:
        """Seal and write one entry (and its alert). No await between the two: one writer."""
        fields.setdefault("rules", "")
        for name in ("participant_id", "service", "operation", "decision", "score", "ruleset_version",
                     "limit_name", "amount", "currency", "value_minor", "payer", "payee", "customer",
                     "card_last4", "error", "alert_id", "counts"):
            fields.setdefault(name, None)
        with self._audit_lock:
            if alert is not None:
                alert["audit_index"] = self.head.next_idx
            self.head.seal(fields)
            try:
                repository.append_audit(self.db.engine, fields, alert)
            except BaseException:
                self.head.rewind(fields)
                raise
        return fields["idx"], fields["hash"]

    # -- the request path --------------------------------------------------------------------

    async def handle(self, request: Request, service: str, prefix: str) -> Response:
        started = time.perf_counter()
        now = self.clock.now()
        method = request.method
        path = request.url.path[len(prefix):] or "/"
        request_id = current_request_id() or new_id("req")
        entry: dict[str, Any] = {"at": iso(now), "request_id": request_id, "method": method,
                                 "path": request.url.path[:500], "service": service}

        def refuse(status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None,
                   alert: dict[str, Any] | None = None, **extras: Any) -> Response:
            entry["status"] = status
            entry["latency_us"] = int((time.perf_counter() - started) * 1e6)
            idx, digest = self.audit(entry, alert)
            out = {**(headers or {}), RECEIPT_HEADER: f"index={idx}; hash={digest}"}
            body = problem_body(status, slug, title, detail, instance=request.url.path, **extras)
            return Response(json.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=out)

        api_key = request.headers.get("x-api-key")
        policy = self.policy_for_key(api_key)
        if policy is None:
            if self.is_regulator(api_key):
                entry["participant_id"] = "regulator"
                if is_sandbox_control(path):  # a teacher moving a service's clock: forwarded, logged
                    body = await request.body()
                    upstream = self._upstream_request(request, service, path, body, "regulator", request_id)
                    return await self._forward(upstream, entry, started, refuse, service, {}, None, None,
                                               lambda _response: None)
                return refuse(403, "regulator-key-not-a-participant", "The regulator key cannot call services",
                              "Use a participant's key for /payments, /credit, /advisor and /open-banking.")
            slug, title = ("missing-api-key", "API key required") if not api_key else \
                ("invalid-api-key", "API key not recognised")
            return refuse(401, slug, title, "Send a participant's key in the X-API-Key header.",
                          headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})
        entry["participant_id"] = policy.id
        usage = self.usage.get(policy.id)
        if usage is None:
            usage = self.usage[policy.id] = Usage()

        if is_sandbox_control(path):
            # Moving a service's clock would start a new day for its limits and age its history.
            entry["limit_name"] = "sandbox_controls"
            return refuse(403, "sandbox-controls-regulator-only", "Sandbox controls are the regulator's",
                          f"{prefix}{path} reaches the {service} service's own sandbox controls (its clock). "
                          "Moving time would reset daily limits and age the screening windows, so the "
                          "gateway forwards it only with the regulator's key.",
                          limit="sandbox_controls", participant_id=policy.id)

        breach = check_access(policy, service, method, path, now)
        if breach is not None:
            entry["limit_name"] = breach.limit
            return self._breach(refuse, breach, policy)

        rate = take_rate(policy, usage, now.timestamp())
        if not rate.allowed:
            entry["limit_name"] = "rate_limit"
            return refuse(429, "rate-limited", "Too many requests",
                          f"{policy.rate_limit_per_minute} requests a minute; retry in {rate.reset_s} s.",
                          headers={**rate.headers(), "Retry-After": str(rate.reset_s)}, limit="rate_limit")
        rate_headers = rate.headers()

        body = await request.body()

        def upstream() -> httpx.Request:
            return self._upstream_request(request, service, path, body, policy.id, request_id)

        operation = self.rules.screened_operation(service, method, path)
        if operation is None:
            return await self._forward(upstream(), entry, started, refuse, service, rate_headers, None, None,
                                       lambda _response: None)

        entry["operation"] = f"{service} {operation.label}"
        try:
            tx = self.rules.transaction(operation, json.loads(body or b"null"), policy.id)
        except (Unscreenable, ValueError) as exc:
            entry["error"] = "unscreenable"
            return refuse(422, "unscreenable-request", "The gateway cannot screen this request",
                          f"{exc}. Money-moving requests must carry a readable amount.",
                          headers=rate_headers)
        entry.update(amount=tx.amount, currency=tx.currency, value_minor=tx.value, payer=tx.payer,
                     payee=tx.payee, customer=tx.customer, card_last4=tx.card_last4)

        key = self._idempotency_key(request, policy.id, service, method, path, body)
        known = self._known_key(key, now.timestamp()) if key else None
        if known is not None and known[1] is not None:
            return await self._forward_replay(upstream(), entry, started, refuse, service, rate_headers,
                                              usage, tx, now, known[1])

        breach = check_amounts(policy, usage, tx, now, self.rules._money)
        if breach is not None:
            entry["limit_name"] = breach.limit
            return self._breach(refuse, breach, policy, rate_headers)

        def unavailable(exc: Exception) -> Response:  # fail closed: money never moves unscreened
            log.warning("screening failed for %s: %r", request_id, exc)
            entry["error"] = "screening-failed"
            return refuse(503, "screening-unavailable", "Screening is unavailable",
                          "The transaction could not be screened, so it was not forwarded. "
                          "Nothing moved; retry later.", headers={**rate_headers, "Retry-After": "5"})

        try:
            await self._fill_owner_names(tx, request_id)
        except Exception as exc:
            return unavailable(exc)

        # From here until the request is on its way there is no await: the limits are checked
        # again (others may have held usage meanwhile), the transaction is screened and its
        # usage and history are held, as one step no parallel request can interleave with.
        breach = check_amounts(policy, usage, tx, now, self.rules._money)
        if breach is not None:
            entry["limit_name"] = breach.limit
            return self._breach(refuse, breach, policy, rate_headers)
        link = self._continued_hop(request_id, policy.id, tx)
        if link is not None:
            # This is the service's ledger hop of a payment screened a moment ago: the payment's
            # history entries become this hop's (its parties are the ledger's), never both.
            link.linked = True
            if link.hold.history is not None:
                self.history.forget(link.hold.history)
                link.hold.history = None
        try:
            decision = self.rules.screen(tx, self.history, now.timestamp())
        except Exception as exc:
            return unavailable(exc)
        entry.update(decision=decision.outcome, score=decision.score, rules=",".join(decision.rules),
                     ruleset_version=decision.ruleset_version)
        alert: dict[str, Any] | None = None
        if decision.outcome == "review" and link is not None and link.alert_id is not None \
                and set(decision.rules) <= set(link.decision.rules):
            entry["alert_id"] = link.alert_id  # the same payment's alert is already open
        elif decision.outcome != "approve":
            alert = self._alert(entry, decision, now, tx)
            entry["alert_id"] = alert["id"]
        if decision.outcome == "block":
            return refuse(403, "transaction-blocked", "Transaction blocked by AML screening",
                          "The transaction was not forwarded: " + "; ".join(h.reason for h in decision.hits),
                          headers={**rate_headers, DECISION_HEADER: self._decision_header(decision)},
                          alert=alert, decision="block", score=decision.score,
                          rules=[{"rule": h.rule, "score": h.score, "reason": h.reason} for h in decision.hits],
                          ruleset_version=decision.ruleset_version, alert_id=alert["id"] if alert else None)

        # A service's hop on behalf of another participant's payment counts toward that
        # participant's limits (already held), not the service's own.
        hold = self._hold(usage, tx, now, limits=link is None)
        prior = known[0] if known is not None else None
        record: KeyRecord | None = None
        if key is not None and (prior is None or prior.state == "uncounted"):
            self.keys.pop(key[0], None)  # re-inserted at the end: the dict stays oldest first
            record = self.keys[key[0]] = KeyRecord(key[1], "in_flight", now.timestamp(), decision,
                                                   entry.get("alert_id"))
            self._prune_keys(now.timestamp())
        hop: Hop | None = None
        if link is None and service in self.service_participants:
            hop = self.hops[request_id] = Hop(policy.id, service, tx.value, hold, decision, entry.get("alert_id"))

        def settle(response: httpx.Response | None) -> None:
            if hop is not None and self.hops.get(request_id) is hop:
                del self.hops[request_id]
            ok = response is not None and 200 <= response.status_code < 300
            replayed = ok and response.headers.get(REPLAY_HEADER, "").lower() == "true"  # type: ignore[union-attr]
            # A replay of a key the gateway never saw answered (it restarted since): the first
            # answer is already in the log it rebuilt from, so this one counts for nothing.
            accepted = ok and not (replayed and (prior is None or prior.state != "uncounted"))
            self._settle(hold, accepted)
            if ok and not accepted:
                entry["counts"] = "none"
            elif accepted and hop is not None and hop.linked:
                entry["counts"] = "limits"
            elif accepted and link is not None:
                entry["counts"] = "history"
            if record is not None and self.keys.get(key[0]) is record:  # type: ignore[index]
                if ok:
                    record.state = "counted"
                elif response is None:
                    record.state = "uncounted"
                else:
                    del self.keys[key[0]]  # type: ignore[index]

        return await self._forward(upstream(), entry, started, refuse, service, rate_headers, alert, decision,
                                   settle)

    async def _forward_replay(self, upstream: httpx.Request, entry: dict[str, Any], started: float,
                              refuse: Any, service: str, rate_headers: dict[str, str], usage: Usage,
                              tx: Transaction, now: datetime, record: KeyRecord) -> Response:
        """A retry with an idempotency key the gateway already forwarded: the service answers
        with the first response and moves nothing, so it is neither limited, screened nor
        counted again; it carries the first decision and alert."""
        decision = record.decision
        entry.update(decision=decision.outcome, score=decision.score, rules=",".join(decision.rules),
                     ruleset_version=decision.ruleset_version, alert_id=record.alert_id)

        def settle(response: httpx.Response | None) -> None:
            if response is None or not 200 <= response.status_code < 300:
                return
            if response.headers.get(REPLAY_HEADER, "").lower() == "true":
                entry["counts"] = "none"
                return
            # The service ran it afresh (its key had expired): the money moved now, so it counts.
            log.warning("%s: key retried after the service forgot it; counted now", entry["request_id"])
            self._settle(self._hold(usage, tx, now, limits=True), True)

        return await self._forward(upstream, entry, started, refuse, service, rate_headers, None, decision,
                                   settle)

    async def _forward(self, upstream: httpx.Request, entry: dict[str, Any], started: float, refuse: Any,
                       service: str, rate_headers: dict[str, str], alert: dict[str, Any] | None,
                       decision: Decision | None,
                       settle: Callable[[httpx.Response | None], None]) -> Response:
        """Send, settle what the request holds on the answer (None: no answer), log, send back.

        A small answer of known size is read whole before anything is settled or logged, so an
        answer lost half-way is an unanswered request (504, may or may not have been applied),
        as a timeout is, never a 2xx logged and then a crash."""
        answered = False  # the service's status line and headers arrived
        try:
            response = await self.transport(service).handle_async_request(upstream)
            answered = True
            body = await _small_body(response)
        except httpx.TimeoutException as exc:
            settle(None)
            connect = not answered and isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            return self._upstream_failed(refuse, entry, alert, rate_headers, service, connect, exc)
        except httpx.TransportError as exc:
            settle(None)
            return self._upstream_failed(refuse, entry, alert, rate_headers, service, not answered, exc)
        except BaseException:
            settle(None)
            raise
        settle(response)

        entry["status"] = response.status_code
        entry["latency_us"] = int((time.perf_counter() - started) * 1e6)
        try:
            idx, digest = self.audit(entry, alert)
        except BaseException:
            await response.aclose()
            raise
        headers = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in _DROP_RESPONSE]
        extra = {**rate_headers, RECEIPT_HEADER: f"index={idx}; hash={digest}"}
        if decision is not None:
            extra[DECISION_HEADER] = self._decision_header(decision)
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        if body is not None:
            whole = Response(content=body, status_code=response.status_code)
            whole.raw_headers = headers
            return whole
        streamed = StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                     background=BackgroundTask(response.aclose))
        streamed.raw_headers = headers
        return streamed

    # -- holds, idempotency keys and linked hops --------------------------------------------

    def _hold(self, usage: Usage, tx: Transaction, now: datetime, *, limits: bool) -> Hold:
        return Hold(usage, hold_usage(usage, tx, now) if limits else None,
                    self.history.record(tx, now.timestamp()))

    def _settle(self, hold: Hold, accepted: bool) -> None:
        """Keep what a forwarded movement holds if the service accepted it; else give it back."""
        if hold.settled:
            return
        hold.settled = True
        if accepted:
            if hold.limits is not None:
                commit_usage(hold.usage, hold.limits)
            return
        if hold.limits is not None:
            release_usage(hold.usage, hold.limits)
        if hold.history is not None:
            self.history.forget(hold.history)
            hold.history = None

    @staticmethod
    def _idempotency_key(request: Request, participant_id: str, service: str, method: str, path: str,
                         body: bytes) -> tuple[tuple[str, str, str], str] | None:
        for name in IDEMPOTENCY_HEADERS:
            value = request.headers.get(name)
            if value:
                return (participant_id, service, value), fingerprint(method, path, body)
        return None

    def _known_key(self, key: tuple[tuple[str, str, str], str], now_s: float) -> tuple[KeyRecord, KeyRecord | None] | None:
        """(the record, itself again when this request retries it) for a remembered key."""
        record = self.keys.get(key[0])
        if record is None:
            return None
        if record.at < now_s - RETENTION.total_seconds():
            del self.keys[key[0]]
            return None
        retry = record.fingerprint == key[1] and record.state in ("in_flight", "counted")
        return record, record if retry else None

    def _prune_keys(self, now_s: float) -> None:
        """Oldest first: drop keys past the services' retention, and the oldest beyond the cap."""
        cutoff = now_s - RETENTION.total_seconds()
        while self.keys:
            oldest = next(iter(self.keys))
            if self.keys[oldest].at >= cutoff and len(self.keys) <= KEY_MEMORY:
                break
            del self.keys[oldest]

    def _continued_hop(self, request_id: str, participant_id: str, tx: Transaction) -> Hop | None:
        """The screened request this one continues: still in flight, to a service that calls
        the gateway as this participant, with the same request id and the same value."""
        hop = self.hops.get(request_id)
        if hop is None or hop.linked or hop.participant_id == participant_id or hop.value != tx.value:
            return None
        return hop if self.service_participants.get(hop.service) == participant_id else None

    # -- helpers -----------------------------------------------------------------------------

    def _breach(self, refuse: Any, breach: Breach, policy: Policy, headers: dict[str, str] | None = None) -> Response:
        if breach.limit == "status":
            return refuse(403, "participant-suspended", "Participant suspended", breach.detail,
                          headers=headers, limit="status", participant_id=policy.id)
        return refuse(403, "sandbox-limit", "Refused by the participant's sandbox limits", breach.detail,
                      headers=headers, limit=breach.limit, participant_id=policy.id)

    def _upstream_failed(self, refuse: Any, entry: dict[str, Any], alert: dict[str, Any] | None,
                         headers: dict[str, str], service: str, unavailable: bool, exc: Exception) -> Response:
        log.warning("upstream %s failed: %r", service, exc)
        if unavailable:
            entry["error"] = "upstream-unavailable"
            return refuse(503, "upstream-unavailable", "Service unavailable",
                          f"The {service} service could not be reached; nothing was forwarded.",
                          headers={**headers, "Retry-After": "5"}, alert=alert, service=service)
        entry["error"] = "upstream-timeout"
        return refuse(504, "upstream-timeout", "Service timed out",
                      f"The {service} service did not answer in time; the request may or may not have "
                      "been applied: retry with the same Idempotency-Key.", headers=headers, alert=alert,
                      service=service)

    @staticmethod
    def _decision_header(decision: Decision) -> str:
        rules = ",".join(decision.rules) or "none"
        return f"{decision.outcome}; score={decision.score}; rules={rules}; ruleset={decision.ruleset_version}"

    def _alert(self, entry: dict[str, Any], decision: Decision, now: datetime, tx: Transaction) -> dict[str, Any]:
        return {
            "id": new_id("alt"), "created_at": now, "participant_id": entry["participant_id"],
            "audit_index": self.head.next_idx, "request_id": entry["request_id"],
            "operation": entry["operation"], "decision": decision.outcome, "score": decision.score,
            "rules": json.dumps([{"rule": h.rule, "score": h.score, "reason": h.reason} for h in decision.hits]),
            "ruleset_version": decision.ruleset_version, "amount": tx.amount, "currency": tx.currency,
            "payer": tx.payer, "payee": tx.payee, "status": "open", "assignee": None,
            "resolution": None, "note": None, "closed_at": None,
        }

    def _upstream_request(self, request: Request, service: str, path: str, body: bytes,
                          participant_id: str, request_id: str) -> httpx.Request:
        headers = [(k, v) for k, v in request.headers.raw
                   if (name := k.decode("latin-1").lower()) not in _DROP_REQUEST and not name.startswith("x-sandbox-")]
        headers += [
            (b"x-request-id", request_id.encode()),
            (b"x-sandbox-participant", participant_id.encode()),
            (b"x-forwarded-prefix", ("/" + service).encode()),
        ]
        # So a service's links (Links.Self, Location) name the gateway the caller reached, not
        # the upstream's own address; a proxy in front of the gateway keeps its own values.
        names = {k.decode("latin-1").lower() for k, _ in headers}
        if "x-forwarded-host" not in names and (host := request.headers.get("host")):
            headers.append((b"x-forwarded-host", host.encode("latin-1")))
        if "x-forwarded-proto" not in names:
            headers.append((b"x-forwarded-proto", request.url.scheme.encode()))
        url = self.upstreams[service] + path
        query = request.url.query
        if query:
            url += "?" + query
        return httpx.Request(request.method, url, headers=headers, content=body,
                             extensions={"timeout": self.timeout.as_dict()})

    async def _fill_owner_names(self, tx: Transaction, request_id: str) -> None:
        """Names of payments accounts for the sanctions rule, looked up once and cached."""
        for side in ("payer", "payee"):
            if getattr(tx, f"{side}_is_account") and getattr(tx, f"{side}_name") is None:
                setattr(tx, f"{side}_name", await self._owner_name(getattr(tx, side), request_id))

    async def _owner_name(self, account_id: str, request_id: str) -> str | None:
        cached = self.owner_names.get(account_id)
        if cached is not None:
            return cached
        try:
            response = await self.client.get(
                f"{self.upstreams['payments']}/accounts/{account_id}",
                headers={"x-request-id": request_id, PARTICIPANT_HEADER: LOOKUP_PARTICIPANT},
            )
        except httpx.HTTPError as exc:
            raise ScreeningUnavailable(f"account look-up failed: {exc!r}") from exc
        if response.status_code == 404 or response.status_code == 422:
            return None  # no such account: payments will refuse the movement itself
        if response.status_code != 200:
            raise ScreeningUnavailable(f"account look-up answered {response.status_code}")
        name = response.json()["owner_name"]
        if len(self.owner_names) > 100_000:
            self.owner_names.clear()
        self.owner_names[account_id] = name
        return name
