"""The door: every participant request passes key → limits → rate limit → screening → the
service, and leaves one entry in the audit log. Small answers of known size are sent back whole,
larger or open-ended ones streamed."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sandbox.gateway import repository
from sandbox.gateway.auditlog import ChainHead
from sandbox.gateway.door import FloodSummary, UnauthenticatedLimiter, json_depth_exceeds
from sandbox.gateway.limits import (
    AllowedOperation,
    Breach,
    Policy,
    Usage,
    UsageHold,
    check_access,
    check_amounts,
    check_standing,
    commit_usage,
    hash_key,
    hold_usage,
    release_usage,
    take_rate,
)
from sandbox.gateway.models import Participant
from sandbox.gateway.screening import (
    LOOKUP,
    Decision,
    History,
    Recorded,
    RuleHit,
    RuleSet,
    Transaction,
    Unscreenable,
    lookup_path,
)
from services.common.clock import Clock
from services.common.db import Database
from services.common.idempotency import REPLAY_HEADER, RETENTION, fingerprint_of
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
# The idempotency header each service honours: the kit's Idempotency-Key, OBIE's x-idempotency-key.
# Only that one is read as the key: a header the service ignores would log a key it never saw.
KEY_HEADER = {"open-banking": "x-idempotency-key"}
DEFAULT_KEY_HEADER = "idempotency-key"
KEY_MEMORY = 100_000  # idempotency keys remembered at most (each for RETENTION)
ON_BEHALF_HEADER = "X-Sandbox-On-Behalf-Of"
# Services whose money-moving requests take an optional key: the gateway assigns one when the
# participant sent none, so every forwarded movement can be reconciled. (Open banking requires
# OBIE's x-idempotency-key and refuses a request without one before anything moves.)
ASSIGNS_KEYS = frozenset({"payments"})
ASSIGNED_KEY_PREFIX = "sbx-gw-"
# The deadline sent with a movement: the gateway's own patience plus a little. A service claims
# no idempotency key after it, so a request that sat in a stopped service never moves unseen.
DEADLINE_GRACE_S = 1.0
# An intent forwarded without a key (a service that requires one refuses it unread) is "not
# applied" once this long past its deadline. Keyed intents are fenced instead: no clock involved.
ABSENT_AFTER_MS = 2_000
RECONCILE_TIMEOUT_S = 5.0
RETRY_RECONCILE_S = 2.0  # how long a retry of an open intent waits for its reconciliation
# Raised before a single byte of the request left the gateway: certainly not applied.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
MAX_JSON_DEPTH = 32  # money-moving bodies are three or four levels deep


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
class OpenIntent:
    """A movement written ahead (its `intent` entry) whose outcome is not logged yet: forwarded
    and unanswered, or found open in the log at start-up. It keeps its hold until reconciled."""

    idx: int
    fields: dict[str, Any]  # the intent entry as logged
    service: str
    scope: str  # whose key it is at the service: the participant whose key sent the request
    key: str | None
    fingerprint: str
    deadline_ms: int
    hold: Hold
    reconciling: bool = False


@dataclass
class KeyRecord:
    """An idempotency key the gateway forwarded a money movement with (per key holder and
    service, as the services scope them). `counted`: the service accepted it and it counts;
    `in_flight`: forwarded, no answer yet; `open`: the answer never came (timeout, crash), the
    hold is kept and the intent is reconciled with the service before a retry goes on."""

    fingerprint: str
    state: str
    at: float  # gateway clock, epoch seconds
    decision: Decision
    alert_id: str | None
    intent: OpenIntent | None = None


@dataclass
class Call:
    """One money-moving request on its way through the door: who sent it, for whom, and what
    the proxy has already decided about it."""

    request: Request
    service: str
    path: str
    body: bytes
    policy: Policy  # the key that sent it
    originator: Policy | None  # the participant a service's key acts for
    entry: dict[str, Any]  # the audit entry being built
    started: float
    now: datetime
    refuse: Callable[..., Response]
    rate_headers: dict[str, str]
    label: str

    @property
    def counted(self) -> Policy:
        """Whose limits and screening apply: the participant a service acts for, else the sender."""
        return self.originator or self.policy


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


def complete_entry(fields: dict[str, Any]) -> dict[str, Any]:
    """Every column of an audit entry present (unset ones None), as the hash covers them."""
    fields.setdefault("rules", "")
    for name in ("participant_id", "service", "operation", "decision", "score", "ruleset_version",
                 "limit_name", "amount", "currency", "value_minor", "payer", "payee", "customer",
                 "card_last4", "error", "alert_id", "counts", "phase", "intent_idx", "idempotency_key",
                 "fingerprint", "deadline_ms", "via"):
        fields.setdefault(name, None)
    return fields


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def policy_of(row: Participant) -> Policy:
    return Policy(
        id=row.id, name=row.name, status=row.status,
        services=frozenset(s for s in row.services.split(",") if s),
        operations=tuple(AllowedOperation.parse(o) for o in row.operations.split("\n") if o),
        window_from=row.window_from, window_to=row.window_to, max_single=row.max_single_minor,
        daily_volume=row.daily_volume_minor, max_customers=row.max_customers,
        rate_limit_per_minute=row.rate_limit_per_minute, kind=row.kind,
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


_LOOKUP_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # what an id the gateway looks up may look like


def _key_header(service: str) -> str:
    return KEY_HEADER.get(service, DEFAULT_KEY_HEADER)


def _lease_over(expires_at: str | None) -> bool:
    """Whether a claim's lease (an ISO time from the service; None: it has none) has run out."""
    if expires_at is None:
        return True
    return datetime.fromisoformat(expires_at.replace("Z", "+00:00")) <= datetime.now(UTC)


def _parse_iso(at: str) -> datetime:
    return datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _movement_of(row: Any) -> Transaction:
    """What a logged money movement contributes to the limits and the screening history."""
    return Transaction(row.participant_id, "", "", "", "", 0, row.value_minor, payer=row.payer,
                       payee=row.payee, customer=row.customer)


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
        self.open_intents: dict[int, OpenIntent] = {}  # intent index → movement awaiting reconciliation
        self.max_json_depth = MAX_JSON_DEPTH
        self.door: UnauthenticatedLimiter | None = None  # unauthenticated requests per address
        self.head = ChainHead()
        self._audit_lock = threading.Lock()  # regulator handlers append from worker threads
        # The regulator's reset (sandbox/gateway/reset.py) starts a new epoch: what the gateway
        # counts (limits, screening history, reports) starts at the epoch's `reset` entry.
        self.epoch = 0
        self.epoch_start = 0  # index of the current epoch's first entry (its `reset` entry)
        self.resetting = False  # while true, nothing is forwarded (503 sandbox-resetting)
        self.forwarding = 0  # requests sent upstream whose answer has not been read yet
        self.reset_lock = asyncio.Lock()
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
        """Participants, the chain head, the screening history, today's usage, the idempotency
        keys of the last day and the intents still open, from the database."""
        with self.db.session() as session:
            for row in repository.all_participants(session):
                self.remember(row)
        head = repository.audit_head(self.db.engine)
        if head is not None:
            self.head = ChainHead(head[0] + 1, head[1])
        reset = repository.last_reset(self.db.engine)
        if reset is not None:
            self.epoch_start, self.epoch = reset
        now = self.clock.now()
        day = now.astimezone(UTC).toordinal()
        since = iso(now - timedelta(seconds=self.rules.horizon_s))
        for row in repository.accepted_money_movements(self.db.engine, since, self.epoch_start):
            moment = _parse_iso(row.at)
            if row.counts in repository.COUNTS_FOR_HISTORY:
                self.history.record(_movement_of(row), moment.timestamp())
            usage = self._usage(row.participant_id)
            if moment.toordinal() == day and row.counts in repository.COUNTS_FOR_LIMITS:
                if usage.day != day:
                    usage.day, usage.day_volume = day, 0
                usage.day_volume += row.value_minor
        for row in repository.customers_by_participant(self.db.engine, self.epoch_start):
            self._usage(row.participant_id).customers.add(row.customer)
        self._load_intents(now)

    def _load_intents(self, now: datetime) -> None:
        """Open intents hold their usage again; keys of the last day are remembered again."""
        day = now.astimezone(UTC).toordinal()
        since = iso(now - RETENTION)
        for row in repository.money_intents(self.db.engine, since, self.epoch_start):
            fields = dict(row._mapping)
            closed_status = fields.pop("closed_status")
            key_holder = fields["via"] or fields["participant_id"]
            intent = None
            if closed_status is None:  # open: hold its usage (today's) and history until reconciled
                moment = _parse_iso(fields["at"])
                tx = _movement_of(row)
                usage = self._usage(fields["participant_id"])
                limits = moment.toordinal() == day and fields["counts"] in repository.COUNTS_FOR_LIMITS
                hold = Hold(usage, hold_usage(usage, tx, moment) if limits else None,
                            self.history.record(tx, moment.timestamp())
                            if fields["counts"] in repository.COUNTS_FOR_HISTORY else None)
                intent = self.open_intents[fields["idx"]] = OpenIntent(
                    fields["idx"], fields, fields["service"], key_holder, fields["idempotency_key"],
                    fields["fingerprint"], fields["deadline_ms"], hold)
            if fields["idempotency_key"] is None or fields["at"] < since:
                continue
            state = "open" if intent is not None else ("counted" if 200 <= closed_status < 300 else None)
            if state is None:
                continue
            decision = Decision(fields["decision"], fields["score"] or 0,
                                tuple(RuleHit(r, 0, "") for r in (fields["rules"] or "").split(",") if r),
                                fields["ruleset_version"] or "")
            self.keys[(key_holder, fields["service"], fields["idempotency_key"])] = KeyRecord(
                fields["fingerprint"], state, _parse_iso(fields["at"]).timestamp(), decision,
                fields["alert_id"], intent)

    def forget_activity(self, participants: list[Participant]) -> None:
        """The reset's new epoch: only `participants` may call; usage, rate and customer counts,
        the screening history, remembered keys and account names start empty. (Open intents
        were reconciled before; the reset refuses while any is left.)"""
        self.policies, self.policies_by_id = {}, {}
        for row in participants:
            self.remember(row)
        self.usage = {}
        self.history = History(self.rules.horizon_s)
        self.keys = {}
        self.hops = {}
        self.owner_names = {}

    def begin_epoch(self, fields: dict[str, Any]) -> int:
        """Append the `reset` entry of the next epoch; from it on, the epoch's entries count."""
        epoch = self.epoch + 1
        idx, _ = self.audit({**fields, "phase": "reset", "epoch": epoch})
        self.epoch, self.epoch_start = epoch, idx
        return idx

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
        complete_entry(fields)
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
                    upstream = self._upstream_request(request, service, path, body, "regulator", None, request_id)
                    return await self._forward(upstream, entry, started, refuse, service, {}, None,
                                               lambda _response, _sent: None)
                return refuse(403, "regulator-key-not-a-participant", "The regulator key cannot call services",
                              "Use a participant's key for /payments, /credit, /advisor and /open-banking.")
            return self._unauthenticated(request, entry, refuse, api_key)
        entry["participant_id"] = policy.id
        usage = self._usage(policy.id)

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

        # A sandbox service acting for a participant: that participant's status, window, limits
        # and screening apply, and the entry names both (participant_id, via).
        originator: Policy | None = None
        if on_behalf := request.headers.get(ON_BEHALF_HEADER):
            if policy.kind != "service":
                entry["limit_name"] = "on_behalf"
                return refuse(403, "on-behalf-not-allowed", "Only the sandbox's services act for others",
                              f"{ON_BEHALF_HEADER} is honoured from the sandbox's own services only; "
                              f"{policy.id} is a participant and acts for itself.",
                              limit="on_behalf", participant_id=policy.id)
            originator = self.policies_by_id.get(on_behalf)
            if originator is None:
                return refuse(403, "unknown-originator", "The participant acted for is not admitted",
                              f"{ON_BEHALF_HEADER} names {on_behalf[:40]!r}, which is no admitted participant.",
                              participant_id=policy.id)
            entry["participant_id"], entry["via"] = originator.id, policy.id
            breach = check_standing(originator, now)
            if breach is not None:
                entry["limit_name"] = breach.limit
                return self._breach(refuse, breach, originator)

        rate = take_rate(policy, usage, now.timestamp())
        if not rate.allowed:
            entry["limit_name"] = "rate_limit"
            return refuse(429, "rate-limited", "Too many requests",
                          f"{policy.rate_limit_per_minute} requests a minute; retry in {rate.reset_s} s.",
                          headers={**rate.headers(), "Retry-After": str(rate.reset_s)}, limit="rate_limit")
        rate_headers = rate.headers()

        body = await request.body()
        operation = self.rules.screened_operation(service, method, path)
        if operation is None:
            upstream = self._upstream_request(request, service, path, body, policy.id,
                                              originator.id if originator else None, request_id)
            return await self._forward(upstream, entry, started, refuse, service, rate_headers, None,
                                       lambda _response, _sent: None)
        return await self._movement(request, Call(
            request=request, service=service, path=path, body=body, policy=policy, originator=originator,
            entry=entry, started=started, now=now, refuse=refuse, rate_headers=rate_headers,
            label=operation.label), operation)

    async def _movement(self, request: Request, call: Call, operation: Any) -> Response:
        """A money-moving request: screened, held and written ahead, forwarded, settled."""
        entry, refuse, now, rate_headers = call.entry, call.refuse, call.now, call.rate_headers
        counted = call.counted
        usage = self._usage(counted.id)
        request_id = entry["request_id"]
        entry["operation"] = f"{call.service} {call.label}"
        if json_depth_exceeds(call.body, self.max_json_depth):
            entry["error"] = "json-too-deep"
            return refuse(422, "json-too-deep", "The request body is nested too deeply",
                          f"JSON nested deeper than {self.max_json_depth} levels is refused before "
                          "screening; money-moving bodies are a few levels deep.", headers=rate_headers)
        try:
            document = parsed = json.loads(call.body or b"null")
            if operation.lookup is not None:
                looked_up = await self._look_up(operation.lookup, document, call.service, request_id)
                if looked_up is None:  # nothing to move: no such quote or journal; the service says so
                    return await self._forward(self._upstream_request(
                        request, call.service, call.path, call.body, call.policy.id,
                        call.originator.id if call.originator else None, request_id), entry, call.started,
                        refuse, call.service, rate_headers, None, lambda _response, _sent: None)
                document = {**document, LOOKUP: looked_up}  # the gateway's, never the sender's
            tx = self.rules.transaction(operation, document, counted.id)
        except ScreeningUnavailable as exc:
            return self._screening_unavailable(refuse, entry, rate_headers, exc)
        except (Unscreenable, ValueError, RecursionError) as exc:
            entry["error"] = "unscreenable"
            return refuse(422, "unscreenable-request", "The gateway cannot screen this request",
                          f"{exc}. Money-moving requests must carry a readable amount.",
                          headers=rate_headers)
        entry.update(amount=tx.amount, currency=tx.currency, value_minor=tx.value, payer=tx.payer,
                     payee=tx.payee, customer=tx.customer, card_last4=tx.card_last4)

        # Idempotency keys are scoped to the key that sent them, as the services scope them.
        fp = fingerprint_of(request.method, call.path, parsed)  # the body as parsed for screening
        key_value = self._idempotency_key_value(request, call.service)
        known = self._known_key((call.policy.id, call.service, key_value), fp, now.timestamp()) \
            if key_value else None
        if known is not None and known[0].state == "open":
            # The first attempt's outcome was never heard (timeout, crash): find it out first,
            # within a short bound (the retry itself should not wait out a slow service).
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.reconcile(known[0].intent)), RETRY_RECONCILE_S)
            known = self._known_key((call.policy.id, call.service, key_value), fp, now.timestamp())  # type: ignore[arg-type]
            if known is not None and known[0].state == "open":
                return self._outcome_unknown(call, key_value)
        if known is not None and known[1] is not None:
            return await self._retry(call, usage, tx, known[1], key_value)  # type: ignore[arg-type]

        breach = check_amounts(counted, usage, tx, now, self.rules.money)
        if breach is not None:
            entry["limit_name"] = breach.limit
            return self._breach(refuse, breach, counted, rate_headers)

        try:
            await self._fill_owner_names(tx, request_id)
        except Exception as exc:
            return self._screening_unavailable(refuse, entry, rate_headers, exc)
        if key_value is not None and known is None:
            # A duplicate sent at the same moment may have been forwarded during that look-up
            # (and may even have timed out meanwhile: then its outcome comes first).
            known = self._known_key((call.policy.id, call.service, key_value), fp, now.timestamp())
            if known is not None and known[0].state == "open":
                return self._outcome_unknown(call, key_value)
            if known is not None and known[1] is not None:
                return await self._retry(call, usage, tx, known[1], key_value)

        # From here until the request is on its way there is no await: the limits are checked
        # again (others may have held usage meanwhile), the transaction is screened and its
        # usage and history are held, as one step no parallel request can interleave with.
        breach = check_amounts(counted, usage, tx, now, self.rules.money)
        if breach is not None:
            entry["limit_name"] = breach.limit
            return self._breach(refuse, breach, counted, rate_headers)
        link = self._continued_hop(request_id, call.policy.id, call.originator, tx)
        starts_hop = link is None and call.service in self.service_participants
        if starts_hop and request_id in self.hops:
            # Its service's ledger hop is linked by the request id: two at once would be confused.
            return refuse(409, "request-id-in-flight", "A request with this X-Request-ID is in flight",
                          f"Another payment with X-Request-ID {request_id!r} is still on its way; send each "
                          "request with an id of its own (or none: the gateway makes one).",
                          headers=rate_headers)
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
            return self._screening_unavailable(refuse, entry, rate_headers, exc)
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
        assigned = None
        if key_value is None and call.service in ASSIGNS_KEYS:
            key_value = assigned = f"{ASSIGNED_KEY_PREFIX}{uuid.uuid4().hex}"
        deadline_ms = int((time.time() + self.timeout.connect + self.timeout.read + DEADLINE_GRACE_S) * 1000)
        try:
            intent = self._write_intent(entry, alert, hold, call.service, call.policy.id, key_value, fp,
                                        deadline_ms, counts="history" if link is not None else None)
        except BaseException:
            self._settle(hold, False)
            raise
        record: KeyRecord | None = None
        record_key = (call.policy.id, call.service, key_value)
        if key_value is not None and known is None:
            # (A remembered key with another body is not replaced: the service refuses it, 409.)
            record = self.keys[record_key] = KeyRecord(fp, "in_flight", now.timestamp(), decision,
                                                       entry.get("alert_id"), intent)
            self._prune_keys(now.timestamp())
        hop: Hop | None = None
        if starts_hop:
            hop = self.hops[request_id] = Hop(counted.id, call.service, tx.value, hold, decision, entry.get("alert_id"))

        def settle(response: httpx.Response | None, sent: bool) -> None:
            if hop is not None and self.hops.get(request_id) is hop:
                del self.hops[request_id]
            if response is None and sent:
                # Forwarded, never answered: it may have been applied. The hold stays, the intent
                # stays open, and reconciliation asks the service for the key's outcome.
                entry["phase"] = "unanswered"
                self.open_intents[intent.idx] = intent
                if record is not None:
                    record.state = "open"
                return
            ok = response is not None and 200 <= response.status_code < 300
            # A replay moved nothing now: the first answer is already counted (or is an intent's).
            replayed = ok and response.headers.get(REPLAY_HEADER, "").lower() == "true"  # type: ignore[union-attr]
            self._settle(hold, ok and not replayed)
            if replayed:
                entry["counts"] = "none"
            elif ok and hop is not None and hop.linked:
                entry["counts"] = "limits"
            elif ok and link is not None:
                entry["counts"] = "history"
            if record is not None and self.keys.get(record_key) is record:
                if ok:
                    record.state = "counted"
                else:
                    del self.keys[record_key]

        upstream = self._upstream_request(request, call.service, call.path, call.body, call.policy.id,
                                          call.originator.id if call.originator else None, request_id,
                                          key_value if assigned else None, deadline_ms)
        return await self._forward(upstream, entry, call.started, call.refuse, call.service, rate_headers,
                                   decision, settle)

    def _write_intent(self, entry: dict[str, Any], alert: dict[str, Any] | None, hold: Hold, service: str,
                      scope: str, key: str | None, fp: str, deadline_ms: int, counts: str | None) -> OpenIntent:
        """Append the movement's intent (and the alert its screening opened) before forwarding it;
        the entry that follows (`entry`, now the outcome) points back to it."""
        fields = {**entry, "phase": "intent", "status": 0, "latency_us": 0, "idempotency_key": key,
                  "fingerprint": fp, "deadline_ms": deadline_ms, "counts": counts}
        idx, _ = self.audit(fields, alert)
        entry.update(phase="outcome", intent_idx=idx, idempotency_key=key)
        return OpenIntent(idx, fields, service, scope, key, fp, deadline_ms, hold)

    @staticmethod
    def _outcome_unknown(call: Call, key_value: str) -> Response:
        return call.refuse(409, "idempotency-key-in-flight", "The first attempt's outcome is not known yet",
                           f"A request with key {key_value!r} was forwarded and its outcome is still being "
                           "reconciled with the service. Retry shortly with the same key.",
                           headers={**call.rate_headers, "Retry-After": "5"})

    async def _retry(self, call: Call, usage: Usage, tx: Transaction, record: KeyRecord,
                     key_value: str) -> Response:
        """A retry of a key the gateway forwarded: while the first attempt is still on its way it
        is refused here (as the service would: 409), so only one attempt is ever in flight;
        once the first was answered, the service replays its answer."""
        if record.state == "in_flight":
            return call.refuse(409, "idempotency-key-in-flight", "A request with this idempotency key is still running",
                               f"Retry after the first request with key {key_value!r} has finished.",
                               headers={**call.rate_headers, "Retry-After": "1"})
        return await self._forward_replay(call, usage, tx, record, key_value)

    async def _forward_replay(self, call: Call, usage: Usage, tx: Transaction, record: KeyRecord,
                              key_value: str) -> Response:
        """A retry with an idempotency key the gateway already forwarded: the service answers
        with the first response and moves nothing, so it is neither limited, screened nor
        counted again; it carries the first decision and alert, and points at the first intent."""
        entry = call.entry
        decision = record.decision
        entry.update(decision=decision.outcome, score=decision.score, rules=",".join(decision.rules),
                     ruleset_version=decision.ruleset_version, alert_id=record.alert_id, phase="outcome",
                     idempotency_key=key_value, intent_idx=record.intent.idx if record.intent else None)

        def settle(response: httpx.Response | None, _sent: bool) -> None:
            if response is None or not 200 <= response.status_code < 300:
                return
            if response.headers.get(REPLAY_HEADER, "").lower() == "true":
                entry["counts"] = "none"
                return
            # The service ran it afresh (its key had expired): the money moved now, so it counts.
            log.warning("%s: key retried after the service forgot it; counted now", entry["request_id"])
            self._settle(self._hold(usage, tx, call.now, limits=True), True)

        upstream = self._upstream_request(call.request, call.service, call.path, call.body, call.policy.id,
                                          call.originator.id if call.originator else None,
                                          entry["request_id"], None, None)
        return await self._forward(upstream, entry, call.started, call.refuse, call.service,
                                   call.rate_headers, decision, settle)

    async def _forward(self, upstream: httpx.Request, entry: dict[str, Any], started: float, refuse: Any,
                       service: str, rate_headers: dict[str, str], decision: Decision | None,
                       settle: Callable[[httpx.Response | None, bool], None]) -> Response:
        """Send, settle what the request holds on the answer (None: no answer), log, send back.

        A small answer of known size is read whole before anything is settled or logged, so an
        answer lost half-way is an unanswered request (504, may or may not have been applied),
        as a timeout is, never a 2xx logged and then a crash."""
        if self.resetting:  # the regulator's reset waits for what is already on its way; nothing new goes
            settle(None, False)
            entry["error"] = "sandbox-resetting"
            return refuse(503, "sandbox-resetting", "The sandbox is being reset",
                          "The regulator is putting the sandbox back to its seeded demo state; nothing "
                          "was forwarded. Retry in a few seconds.", headers={**rate_headers, "Retry-After": "2"})
        answered = False  # the service's status line and headers arrived
        self.forwarding += 1
        try:
            response = await self.transport(service).handle_async_request(upstream)
            answered = True
            body = await _small_body(response)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            sent = answered or not isinstance(exc, NOT_SENT)
            settle(None, sent)
            return self._upstream_failed(refuse, entry, rate_headers, service, sent, exc)
        except BaseException:
            settle(None, True)
            raise
        finally:
            self.forwarding -= 1
        settle(response, True)

        entry["status"] = response.status_code
        entry["latency_us"] = int((time.perf_counter() - started) * 1e6)
        try:
            idx, digest = self.audit(entry)
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

    # -- reconciliation: intents whose outcome the gateway never heard ----------------------

    async def reconcile(self, intent: OpenIntent | None) -> str:
        """Ask the service what became of an open intent's idempotency key, and close it:
        `applied` (counted), `refused` or `not-applied` (released), or `pending` (ask again later:
        the service is unreachable, still working on it, or the deadline has not passed)."""
        if intent is None or intent.idx not in self.open_intents:
            return "closed"
        if intent.reconciling:
            return "pending"
        intent.reconciling = True
        try:
            outcome = await self._outcome_of(intent)
        finally:
            intent.reconciling = False
        if outcome is None or intent.idx not in self.open_intents:
            return "pending"
        state, status = outcome
        if state == "in_flight":
            return "pending"
        applied = state == "done" and 200 <= status < 300
        fields = {k: v for k, v in intent.fields.items()
                  if k not in ("idx", "hash", "prev_hash", "fingerprint", "deadline_ms", "counts")}
        fields.update(at=iso(self.clock.now()), phase="reconciled", intent_idx=intent.idx, latency_us=0,
                      status=status if state == "done" else 0, alert_id=intent.fields.get("alert_id"),
                      error=None if state == "done" else "not-applied",
                      counts=intent.fields.get("counts") if applied else None)
        self._settle(intent.hold, applied)
        del self.open_intents[intent.idx]
        self.audit(fields)
        self._close_key(intent, applied)
        verdict = "applied" if applied else ("refused" if state == "done" else "not-applied")
        log.info("reconciled intent %s (%s key %s): %s", intent.idx, intent.service, intent.key, verdict)
        return verdict

    async def reconcile_open(self) -> dict[str, int]:
        """Every open intent, once (at start-up and on the reconciler's timer)."""
        tally: dict[str, int] = {}
        for intent in list(self.open_intents.values()):
            verdict = await self.reconcile(intent)
            tally[verdict] = tally.get(verdict, 0) + 1
        return tally

    async def _outcome_of(self, intent: OpenIntent) -> tuple[str, int] | None:
        """(state, status) of the intent's key at the service, or None when it cannot say.
        Unless the request is done or still running within its lease, the gateway fences the
        key (`POST /_sandbox/idempotency-fences/…`): the attempt it gave up on can then never be
        applied, so "fenced" is a safe "not applied", whatever the clocks say."""
        if intent.key is None:
            # No key (a service that requires one refused it unread): nothing can have moved.
            return ("absent", 0) if time.time() * 1000 >= intent.deadline_ms + ABSENT_AFTER_MS else None
        # Dots encoded too: a key "." or ".." must not read as a path segment on the way.
        base, key = self.upstreams[intent.service], quote(intent.key, safe="").replace(".", "%2E")
        params = {"fingerprint": intent.fingerprint, "scope": intent.scope}
        data = await self._ask(intent, "GET", f"{base}/_sandbox/idempotency-keys/{key}", params)
        if data is None:
            return None
        state = data.get("state")
        # A fence already there may be an earlier attempt's: raise it to this one's deadline.
        if state != "done" and not (state == "in_flight" and not _lease_over(data.get("lease_expires_at"))):
            data = await self._ask(intent, "POST", f"{base}/_sandbox/idempotency-fences/{key}",
                                   {**params, "deadline": f"{intent.deadline_ms / 1000:.3f}"})
            if data is None:
                return None
        return data.get("state", ""), int(data.get("status_code") or 0)

    async def _ask(self, intent: OpenIntent, method: str, url: str, params: dict[str, str]) -> dict[str, Any] | None:
        try:
            response = await self.client.request(method, url, params=params,
                                                 headers={"x-request-id": intent.fields["request_id"]},
                                                 timeout=RECONCILE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            log.warning("reconciling intent %s: %s unreachable: %r", intent.idx, intent.service, exc)
            return None
        if response.status_code != 200:
            log.warning("reconciling intent %s: %s answered %s", intent.idx, intent.service, response.status_code)
            return None
        return response.json()

    def _close_key(self, intent: OpenIntent, applied: bool) -> None:
        scoped = (intent.scope, intent.service, intent.key)
        record = self.keys.get(scoped)  # type: ignore[arg-type]
        if record is not None and record.intent is intent:
            if applied:
                record.state = "counted"
            else:
                del self.keys[scoped]  # type: ignore[arg-type]

    async def run_reconciler(self, interval_s: float) -> None:
        """Reconcile open intents every `interval_s` until cancelled; log floods that stopped."""
        while True:
            await asyncio.sleep(interval_s)
            if self.door is not None:
                for summary in self.door.due_summaries(time.time()):
                    self._log_flood(summary, {"at": iso(self.clock.now()), "request_id": new_id("req")})
            if self.open_intents:
                try:
                    await self.reconcile_open()
                except Exception:  # keep the timer alive; the next round tries again
                    log.exception("reconciliation round failed")

    # -- unauthenticated requests ---------------------------------------------------------------

    def _unauthenticated(self, request: Request, entry: dict[str, Any], refuse: Any, api_key: str | None) -> Response:
        """401, or 429 for an address past the unauthenticated rate; a flood is logged as a few
        entries and one summary per address and window, not one hash-chain entry per request."""
        slug, title = ("missing-api-key", "API key required") if not api_key else \
            ("invalid-api-key", "API key not recognised")
        detail = "Send a participant's key in the X-API-Key header."
        headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}
        if self.door is None:
            return refuse(401, slug, title, detail, headers=headers)
        address = request.client.host if request.client else "unknown"
        verdict = self.door.take(address, time.time())
        if verdict.summary is not None:
            self._log_flood(verdict.summary, entry)
        status = 401
        if not verdict.allowed:
            status, slug, title = 429, "rate-limited", "Too many unauthenticated requests"
            detail = (f"Too many requests without a valid key from {address}; retry in "
                      f"{verdict.retry_after_s} s.")
            headers["Retry-After"] = str(verdict.retry_after_s)
            entry["limit_name"] = "unauthenticated_rate"
        if verdict.log_now:
            return refuse(status, slug, title, detail, headers=headers)
        body = problem_body(status, slug, title, detail + " (Counted in the gateway's flood summary for "
                            "this address, not logged one by one.)", instance=request.url.path)
        return Response(json.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)

    def _log_flood(self, summary: FloodSummary, entry: dict[str, Any]) -> None:
        """One entry for the refusals of one address in one window that were not logged one by one."""
        self.audit({"at": entry["at"], "request_id": entry["request_id"], "participant_id": None,
                    "method": "-", "path": summary.describe()[:500], "service": None,
                    "status": 429 if summary.limited else 401, "latency_us": 0,
                    "limit_name": "unauthenticated_rate", "error": "flood-summary"})


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

    def _usage(self, participant_id: str) -> Usage:
        usage = self.usage.get(participant_id)
        if usage is None:
            usage = self.usage[participant_id] = Usage()
        return usage

    @staticmethod
    def _idempotency_key_value(request: Request, service: str) -> str | None:
        return request.headers.get(_key_header(service)) or None

    def _known_key(self, scoped: tuple[str, str, str], fp: str, now_s: float) -> tuple[KeyRecord, KeyRecord | None] | None:
        """(the record, itself again when this request retries it) for a remembered key."""
        record = self.keys.get(scoped)
        if record is None:
            return None
        if record.at < now_s - RETENTION.total_seconds() and record.state != "open":
            del self.keys[scoped]
            return None
        retry = record.fingerprint == fp and record.state in ("in_flight", "counted")
        return record, record if retry else None

    def _prune_keys(self, now_s: float) -> None:
        """Oldest first: drop keys past the services' retention, and the oldest beyond the cap
        (an open intent's key stays, moved to the back, until it is reconciled)."""
        cutoff = now_s - RETENTION.total_seconds()
        for _ in range(len(self.keys)):
            oldest = next(iter(self.keys))
            record = self.keys[oldest]
            if record.at >= cutoff and len(self.keys) <= KEY_MEMORY:
                break
            del self.keys[oldest]
            if record.state == "open":
                self.keys[oldest] = record

    def _continued_hop(self, request_id: str, participant_id: str, originator: Policy | None,
                       tx: Transaction) -> Hop | None:
        """The screened request this one continues: still in flight, to a service that calls
        the gateway as this participant, for the participant that made it, with the same request
        id and the same value."""
        hop = self.hops.get(request_id)
        if hop is None or hop.linked or hop.participant_id == participant_id or hop.value != tx.value:
            return None
        if originator is not None and originator.id != hop.participant_id:
            return None
        return hop if self.service_participants.get(hop.service) == participant_id else None

    # -- helpers -----------------------------------------------------------------------------

    def _breach(self, refuse: Any, breach: Breach, policy: Policy, headers: dict[str, str] | None = None) -> Response:
        if breach.limit == "status":
            return refuse(403, "participant-suspended", "Participant suspended", breach.detail,
                          headers=headers, limit="status", participant_id=policy.id)
        return refuse(403, "sandbox-limit", "Refused by the participant's sandbox limits", breach.detail,
                      headers=headers, limit=breach.limit, participant_id=policy.id)

    def _upstream_failed(self, refuse: Any, entry: dict[str, Any], headers: dict[str, str], service: str,
                         sent: bool, exc: Exception) -> Response:
        log.warning("upstream %s failed: %r", service, exc)
        if not sent:
            entry["error"] = "upstream-unavailable"
            return refuse(503, "upstream-unavailable", "Service unavailable",
                          f"The {service} service could not be reached; nothing was forwarded.",
                          headers={**headers, "Retry-After": "5"}, service=service)
        # Timed out, or the connection broke before the answer was whole: either way it is unknown
        # whether the service applied it.
        entry["error"] = "upstream-timeout"
        assigned = str(entry.get("idempotency_key") or "").startswith(ASSIGNED_KEY_PREFIX)
        retry = ("the gateway asks the service what became of it and logs the outcome" if assigned
                 else "retry with the same Idempotency-Key")
        return refuse(504, "upstream-timeout", "Service timed out",
                      f"The {service} service did not answer in time; the request may or may not have "
                      f"been applied: {retry}.", headers=headers, service=service)

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
                          participant_id: str, originator: str | None, request_id: str,
                          assigned_key: str | None = None, deadline_ms: int | None = None) -> httpx.Request:
        headers = [(k, v) for k, v in request.headers.raw
                   if (name := k.decode("latin-1").lower()) not in _DROP_REQUEST and not name.startswith("x-sandbox-")]
        headers += [
            (b"x-request-id", request_id.encode()),
            (b"x-sandbox-participant", participant_id.encode()),
            (b"x-forwarded-prefix", ("/" + service).encode()),
        ]
        if originator is not None:  # honoured from service keys only (checked in handle)
            headers.append((b"x-sandbox-on-behalf-of", originator.encode()))
        if assigned_key is not None:
            headers.append((_key_header(service).encode(), assigned_key.encode()))
        if deadline_ms is not None:  # the service claims no key after this (nothing moves unseen)
            headers.append((b"x-sandbox-deadline", f"{deadline_ms / 1000:.3f}".encode()))
        # So a service's links (Links.Self, Location) name the gateway the caller reached, not
        # the upstream's own address; a proxy in front of the gateway keeps its own values.
        names = {k.decode("latin-1").lower() for k, _ in headers}
        if "x-forwarded-host" not in names and (host := request.headers.get("host")):
            headers.append((b"x-forwarded-host", host.encode("latin-1")))
        if "x-forwarded-proto" not in names:
            headers.append((b"x-forwarded-proto", request.url.scheme.encode()))
        # The path as the client sent it (still percent-encoded), so an encoded control character
        # reaches the service, which answers for it, instead of failing the gateway's URL.
        raw = (request.scope.get("raw_path") or b"").split(b"?", 1)[0]  # (some servers keep the query)
        prefix = b"/" + service.encode()
        if raw.startswith(prefix):
            path = raw[len(prefix):].decode("latin-1") or "/"
        url = self.upstreams[service] + path
        query = request.url.query
        if query:
            url += "?" + query
        return httpx.Request(request.method, url, headers=headers, content=body,
                             extensions={"timeout": self.timeout.as_dict()})

    @staticmethod
    def _screening_unavailable(refuse: Any, entry: dict[str, Any], rate_headers: dict[str, str],
                               exc: Exception) -> Response:
        """Fail closed: money never moves unscreened."""
        log.warning("screening failed for %s: %r", entry["request_id"], exc)
        entry["error"] = "screening-failed"
        return refuse(503, "screening-unavailable", "Screening is unavailable",
                      "The transaction could not be screened, so it was not forwarded. "
                      "Nothing moved; retry later.", headers={**rate_headers, "Retry-After": "5"})

    async def _look_up(self, template: str, body: Any, service: str, request_id: str) -> dict[str, Any] | None:
        """The resource an operation's amount or parties come from (a quote, a journal), read on
        the service's own port as the gateway's look-up participant; None when the body names
        none the service has (it will refuse the request itself: nothing can move)."""
        path = lookup_path(template, body)
        if path is None:
            return None
        try:
            response = await self.client.get(f"{self.upstreams[service]}{path}", headers={
                "x-request-id": request_id, PARTICIPANT_HEADER: LOOKUP_PARTICIPANT})
        except httpx.HTTPError as exc:
            raise ScreeningUnavailable(f"look-up of {path} failed: {exc!r}") from exc
        if response.status_code in (404, 422):
            return None
        if response.status_code != 200:
            raise ScreeningUnavailable(f"look-up of {path} answered {response.status_code}")
        found = response.json()
        return found if isinstance(found, dict) else None

    async def _fill_owner_names(self, tx: Transaction, request_id: str) -> None:
        """Names of payments accounts for the sanctions rule, looked up once and cached."""
        for side in ("payer", "payee"):
            if getattr(tx, f"{side}_is_account") and getattr(tx, f"{side}_name") is None:
                setattr(tx, f"{side}_name", await self._owner_name(getattr(tx, side), request_id))

    async def _owner_name(self, account_id: str, request_id: str) -> str | None:
        cached = self.owner_names.get(account_id)
        if cached is not None:
            return cached
        if not _LOOKUP_ID.fullmatch(account_id):
            return None  # no account has such an id (empty, a slash...): payments refuses it itself
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
