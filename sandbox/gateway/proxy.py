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
from contextlib import nullcontext, suppress
from dataclasses import MISSING, dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sandbox.gateway import repository, shared
from sandbox.gateway.auditlog import ChainHead
from sandbox.gateway.door import FloodSummary, UnauthenticatedLimiter, json_depth_exceeds
from sandbox.gateway.events import EventStore, Relay
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
    rate_state,
    rate_window,
    record_usage,
    release_usage,
)
from sandbox.gateway.models import Participant
from sandbox.gateway.screening import (
    LOOKUP,
    Decision,
    History,
    Recorded,
    RuleHit,
    RuleSet,
    ScreenedOperation,
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
from services.common.tracing import current_trace_id, traced_transport

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


# How the regulator's clock moves are logged (endpoints.advance_clock, events_api.advance_sandbox_clock):
# another replica reads the seconds back from the entry and moves its own clock as far.
CLOCK_MOVE = re.compile(r"^advance_(?:sandbox_)?clock \+(\d+) s\b")


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

    def retried_by(self, fingerprint: str) -> bool:
        """Whether a request with this body retries the attempt (not yet lost) that left the key."""
        return self.fingerprint == fingerprint and self.state in ("in_flight", "counted")


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


@dataclass
class RequestEntry:
    """The entry one request leaves in the audit log, filled in as it passes the door. Its
    fields are the log's columns; the hash covers every one (unset ones None)."""

    at: str
    request_id: str
    method: str
    path: str
    service: str | None = None
    trace_id: str | None = None  # W3C trace id: every hop of the request in one trace
    participant_id: str | None = None
    via: str | None = None  # the sandbox service whose key acted for participant_id
    operation: str | None = None
    status: int | None = None
    latency_us: int | None = None
    limit_name: str | None = None
    error: str | None = None
    # What a money movement moves.
    amount: str | None = None
    currency: str | None = None
    value_minor: int | None = None
    payer: str | None = None
    payee: str | None = None
    customer: str | None = None
    card_last4: str | None = None
    # What screening decided.
    decision: str | None = None
    score: int | None = None
    rules: str = ""
    ruleset_version: str | None = None
    alert_id: str | None = None
    # The write-ahead: an intent, then its outcome (or `unanswered`, later `reconciled`).
    phase: str | None = None
    intent_idx: int | None = None
    idempotency_key: str | None = None
    fingerprint: str | None = None
    deadline_ms: int | None = None
    counts: str | None = None

    def row(self) -> dict[str, Any]:
        """The entry as the log stores and hashes it (a copy: sealing adds idx and hashes)."""
        return dict(self.__dict__)

    def moves(self, tx: Transaction) -> None:
        self.amount, self.currency, self.value_minor = tx.amount, tx.currency, tx.value
        self.payer, self.payee, self.customer, self.card_last4 = tx.payer, tx.payee, tx.customer, tx.card_last4

    def decided(self, decision: Decision) -> None:
        self.decision, self.score = decision.outcome, decision.score
        self.rules, self.ruleset_version = ",".join(decision.rules), decision.ruleset_version


# Every column an entry may leave unset, with the value it is logged with then.
_UNSET_COLUMNS = {f.name: f.default for f in dataclass_fields(RequestEntry) if f.default is not MISSING}


def complete_entry(fields: dict[str, Any]) -> dict[str, Any]:
    """Every column of an audit entry present (unset ones None), as the hash covers them."""
    for name, default in _UNSET_COLUMNS.items():
        fields.setdefault(name, default)
    return fields


@dataclass
class Call:
    """One request on its way through the door: what it asks, who sent it, the rate headers its
    answer carries, and the audit entry it leaves."""

    request: Request
    service: str
    path: str  # below the service's prefix
    entry: RequestEntry
    started: float  # perf_counter at arrival: the entry's latency counts from it
    now: datetime
    policy: Policy | None = None  # the participant key that sent it (None: the regulator's, or none)
    originator: Policy | None = None  # the participant a service's key acts for
    rate_headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def sender_id(self) -> str:
        """Who the service is told sent it: the participant whose key it was, else the regulator."""
        return self.policy.id if self.policy is not None else "regulator"

    @property
    def sender(self) -> Policy:
        """The participant whose key sent the call (it is authenticated)."""
        assert self.policy is not None, "only a participant's call has a sender"
        return self.policy

    @property
    def counted(self) -> Policy:
        """Whose limits and screening apply: the participant a service acts for, else the sender."""
        return self.originator or self.sender

    def key_scope(self, key: str) -> tuple[str, str, str]:
        """Idempotency keys are scoped to the key that sent them, as the services scope them."""
        return (self.sender_id, self.service, key)


@dataclass
class Movement:
    """A money movement on its way through the door: its transaction and idempotency key, what
    screening decided, and what it holds until the service answers."""

    tx: Transaction
    fingerprint: str  # of the body as parsed for screening
    key: str | None  # the idempotency key it is forwarded with
    known: KeyRecord | None = None  # the key as an earlier attempt left it
    replay: bool = False  # a retry of a key already answered: the service replays, nothing moves
    link: Hop | None = None  # the payment this request is the ledger hop of
    decision: Decision | None = None
    alert: dict[str, Any] | None = None  # the alert its screening opened
    hold: Hold | None = None
    assigned: bool = False  # `key` is the gateway's own: the participant sent none
    deadline_ms: int | None = None
    intent: OpenIntent | None = None
    record: KeyRecord | None = None  # its key, remembered for its retries
    hop: Hop | None = None  # its service's own hop may continue it


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


def _logged_decision(fields: Mapping[str, Any]) -> Decision:
    """The decision an entry records (its rules by name: the reasons are in the alert)."""
    return Decision(fields["decision"], fields["score"] or 0,
                    tuple(RuleHit(r, 0, "") for r in (fields["rules"] or "").split(",") if r),
                    fields["ruleset_version"] or "")


class _Row:
    """An entry's fields as attributes, as `_movement_of` reads a row."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.__dict__.update(fields)


class Gateway:
    """The proxy's state: who may call, what they used, the screening history, the chain head,
    and the one shared HTTP client."""

    faults: Any = None  # the regulator's fault flags (faults.FaultFlags), set by create_app

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
        # The events store (events.py), set by create_app: an alert's opening is one of its events.
        self.events: EventStore | None = None
        self.relay: Relay | None = None  # the services' outboxes into the store
        self.dispatcher: Any = None  # webhooks.Dispatcher: the store out to participants' endpoints
        self.webhook_allow: Any = None  # webhook_rules.AllowList: where deliveries may go
        self.head = ChainHead()
        # Regulator handlers append from worker threads; a catch-up and the decision around it
        # take it too, so it is re-entrant.
        self._audit_lock = threading.RLock()
        # Replicas (sandbox/gateway/shared.py): `applied` is the last log index this memory
        # reflects; entries after it are other processes' and are applied by `catch_up`.
        self.applied = -1
        self.replicated = shared.is_postgres(db.engine)  # several processes may share the log
        self.decisions = shared.DecisionLock(db.engine)
        shared.bound_waits(db.engine)
        self.rates = shared.RateCounter(db.engine)
        self.foreign: dict[int, OpenIntent] = {}  # other replicas' intents, forwarded, not answered yet
        self.reconciled: dict[int, None] = {}  # intents closed by a `reconciled` entry (latest, in order)
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
        # The gateway's traces (set by create_app; None: tracing disabled): each forwarded
        # request and look-up is a client span, with traceparent on the hop to the service.
        self.tracer_provider: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        """One client for every upstream, created in the loop that serves requests."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, limits=self.limits, follow_redirects=False, trust_env=False,
                mounts={url: traced_transport(t, self.tracer_provider) for url, t in self.mounts.items()},
                transport=traced_transport(httpx.AsyncHTTPTransport(limits=self.limits, trust_env=False),
                                          self.tracer_provider),
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
            transport = self._transports[url] = traced_transport(transport, self.tracer_provider)
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
        keys of the last day and the intents still open, from the database: the log as of its
        head, read first (other replicas may append meanwhile; `catch_up` applies those after)."""
        head = repository.audit_head(self.db.engine)
        up_to = head[0] if head is not None else -1
        if head is not None:
            self.head = ChainHead(head[0] + 1, head[1])
            self.applied = head[0]
        self._remember_all(self._participants())  # after the head: an admission is logged after its row
        reset = repository.last_reset(self.db.engine, up_to)
        if reset is not None:
            self.epoch_start, self.epoch = reset
        if self.replicated:  # the live replicas' clock: the regulator's moves since the reset
            for operation in repository.clock_moves(self.db.engine, self.epoch_start, up_to):
                self._move_clock_as_logged(operation)
        now = self.clock.now()
        day = now.astimezone(UTC).toordinal()
        since = iso(now - timedelta(seconds=self.rules.horizon_s))
        for row in repository.accepted_money_movements(self.db.engine, since, self.epoch_start, up_to):
            moment = _parse_iso(row.at)
            if row.counts in repository.COUNTS_FOR_HISTORY:
                self.history.record(_movement_of(row), moment.timestamp())
            usage = self._usage(row.participant_id)
            if moment.toordinal() == day and row.counts in repository.COUNTS_FOR_LIMITS:
                if usage.day != day:
                    usage.day, usage.day_volume = day, 0
                usage.day_volume += row.value_minor
        for row in repository.customers_by_participant(self.db.engine, self.epoch_start, up_to):
            self._usage(row.participant_id).customers.add(row.customer)
        self._load_intents(now, up_to)

    def _load_intents(self, now: datetime, up_to: int) -> None:
        """Open intents hold their usage again; keys of the last day are remembered again. With
        replicas, an open intent still within its deadline may be another live replica's, on
        its way: it is held as theirs (`foreign`), and reconciled only if it is abandoned."""
        day = now.astimezone(UTC).toordinal()
        since = iso(now - RETENTION)
        now_ms = time.time() * 1000
        for row in repository.money_intents(self.db.engine, since, self.epoch_start, up_to):
            fields = dict(row._mapping)
            closed_status = fields.pop("closed_status")
            intent = None
            if closed_status is None:  # open: hold its usage (today's) and history until reconciled
                intent = self._logged_intent(fields, day)
                in_flight = self.replicated and now_ms < (fields["deadline_ms"] or 0) + ABSENT_AFTER_MS
                (self.foreign if in_flight else self.open_intents)[intent.idx] = intent
                if in_flight and fields["counts"] is None and fields["service"] in self.service_participants:
                    self._expect_hop(fields, intent.hold)  # its ledger hop may still come
            if fields["idempotency_key"] is None or fields["at"] < since:
                continue
            state = ("in_flight" if intent.idx in self.foreign else "open") if intent is not None \
                else ("counted" if 200 <= closed_status < 300 else None)
            if state is not None:
                self._remember_logged_key(fields, state, intent)

    def forget_activity(self, participants: list[Participant]) -> None:
        """The reset's new epoch: only `participants` may call; usage, rate and customer counts,
        the screening history, remembered keys and account names start empty. (Open intents
        were reconciled before; the reset refuses while any is left.)"""
        self._remember_all(participants)
        self.usage = {}
        self.history = History(self.rules.horizon_s)
        self.keys = {}
        self.hops = {}
        self.foreign = {}
        self.owner_names = {}

    def begin_epoch(self, fields: dict[str, Any]) -> int:
        """Append the `reset` entry of the next epoch; from it on, the epoch's entries count."""
        epoch = self.epoch + 1
        self.rates.forget()
        idx, _ = self.audit({**fields, "phase": "reset", "epoch": epoch})  # type: ignore[misc]
        self.epoch, self.epoch_start = epoch, idx
        return idx

    def _participants(self) -> list[Participant]:
        with self.db.session(self.reader) as session:
            return repository.all_participants(session)

    def _remember_all(self, participants: list[Participant]) -> None:
        """Exactly these participants may call."""
        self.policies, self.policies_by_id = {}, {}
        for row in participants:
            self.remember(row)

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

    def audit(self, fields: dict[str, Any], alert: dict[str, Any] | None = None,
              guard: Callable[[], bool] | None = None) -> tuple[int, str] | None:
        """Seal and write one entry (and its alert, with its `sandbox.alert.opened` event, in the
        same transaction), on the log's true head: under the log lock, the entries other
        replicas appended are applied first (shared.py). `guard`, asked after them: whether the
        entry is still to be written (None returned when not)."""
        complete_entry(fields)
        # The events store's lock first, before the transaction begins (sandbox/gateway/events.py).
        opens_alert = alert is not None and self.events is not None
        with self.events.writing() if opens_alert else nullcontext(), self._audit_lock:  # type: ignore[union-attr]
            try:
                with self.db.engine.begin() as conn:
                    shared.lock_log(conn)
                    if self.replicated:  # (an embedded SQLite file has one gateway process: no one else appends)
                        self._apply_foreign(shared.entries_after(conn, self.applied))
                    if guard is not None and not guard():
                        return None
                    if alert is not None:
                        alert["audit_index"] = self.head.next_idx
                    self.head.seal(fields)
                    repository.insert_audit(conn, fields, alert, self.events if opens_alert else None)
            except BaseException:
                if fields.get("idx") == self.head.next_idx - 1:
                    self.head.rewind(fields)
                raise
            self.applied = fields["idx"]
        return fields["idx"], fields["hash"]

    # -- replicas: the entries other processes appended -------------------------------------

    def catch_up(self, conn: Any = None) -> None:
        """Apply what other replicas logged since this process last looked (PostgreSQL only:
        an embedded SQLite file has one gateway process, and its appends catch up anyway), on
        `conn` if given (the decision lock's)."""
        if not self.replicated:
            return
        with self._audit_lock, nullcontext(conn) if conn is not None else shared.autocommit(self.db.engine) as reading:
            self._apply_foreign(shared.entries_after(reading, self.applied))

    def _apply_foreign(self, rows: list[dict[str, Any]]) -> None:
        """Another process's entries, in log order, into this one's memory: as if it had made
        them (an intent holds, an outcome settles, a regulator's change is read again)."""
        for row in rows:
            try:
                self._apply_one(row)
            except Exception:  # one entry's effect failing must not stop the log's projection
                log.exception("could not apply entry %s logged by another replica", row["idx"])
            self.head = ChainHead(row["idx"] + 1, row["hash"])
            self.applied = row["idx"]

    def _apply_one(self, row: dict[str, Any]) -> None:
        """One entry another process logged."""
        phase = row["phase"]
        if phase == "reset":
            self.clock.reset()
            self.forget_activity(self._participants())
            self.epoch, self.epoch_start = row["epoch"], row["idx"]
        elif row["participant_id"] == "regulator" and row["method"] not in ("GET", "HEAD"):
            # The regulator moved the sandbox's time on another replica (here too), or changed
            # who may call.
            if row["status"] != 200 or not self._move_clock_as_logged(row["operation"] or ""):
                self._remember_all(self._participants())
        elif phase == "intent":
            self._foreign_intent(row)
        elif phase in repository.CLOSING_PHASES and row["intent_idx"] is not None:
            self._foreign_close(row)
        elif phase == "unanswered" and row["intent_idx"] in self.foreign:
            intent = self.foreign.pop(row["intent_idx"])
            self.open_intents[intent.idx] = intent  # any replica may reconcile it now
            record = self.keys.get((intent.scope, intent.service, intent.key or ""))
            if record is not None and record.intent is intent:
                record.state = "open"
            self._drop_hop(row["request_id"], intent.hold)

    def _move_clock_as_logged(self, operation: str) -> bool:
        """Move the clock as far as a logged clock move did; whether `operation` was one."""
        moved = CLOCK_MOVE.match(operation)
        if moved:
            self.clock.advance(timedelta(seconds=int(moved.group(1))))
        return moved is not None

    def _logged_intent(self, fields: dict[str, Any], today: int) -> OpenIntent:
        """A logged intent, holding again what it held: its usage if it is today's and counts
        toward the limits, its entries in the screening history if it counts toward those."""
        moment = _parse_iso(fields["at"])
        tx = _movement_of(_Row(fields))
        counts = fields["counts"]
        usage = self._usage(fields["participant_id"])
        limits = counts in repository.COUNTS_FOR_LIMITS and moment.toordinal() == today
        hold = Hold(usage, hold_usage(usage, tx, moment) if limits else None,
                    self.history.record(tx, moment.timestamp()) if counts in repository.COUNTS_FOR_HISTORY else None)
        return OpenIntent(fields["idx"], fields, fields["service"], fields["via"] or fields["participant_id"],
                          fields["idempotency_key"], fields["fingerprint"], fields["deadline_ms"], hold)

    def _remember_logged_key(self, fields: dict[str, Any], state: str, intent: OpenIntent | None) -> None:
        self.keys[(fields["via"] or fields["participant_id"], fields["service"], fields["idempotency_key"])] = KeyRecord(
            fields["fingerprint"], state, _parse_iso(fields["at"]).timestamp(), _logged_decision(fields),
            fields["alert_id"], intent)

    def _expect_hop(self, fields: dict[str, Any], hold: Hold) -> None:
        """A logged payment whose service may move its money in a hop of its own: that hop
        continues it, as when the payment was forwarded."""
        self.hops[fields["request_id"]] = Hop(fields["participant_id"], fields["service"], fields["value_minor"],
                                              hold, _logged_decision(fields), fields["alert_id"])

    def _foreign_intent(self, row: dict[str, Any]) -> None:
        """Another replica's movement on its way: its usage and history held, its key in flight,
        its ledger hop expected (or, for a hop, the payment it continues linked)."""
        fields = {k: v for k, v in row.items() if k not in ("hash", "prev_hash")}
        intent = self.foreign[row["idx"]] = self._logged_intent(fields, self.clock.now().astimezone(UTC).toordinal())
        if row["idempotency_key"] is not None:
            self._remember_logged_key(fields, "in_flight", intent)
        if row["counts"] == "history":  # the ledger hop of a payment: the payment's history is the hop's
            link = self.hops.get(row["request_id"])
            if link is not None and not link.linked:
                link.linked = True
                if link.hold.history is not None:
                    self.history.forget(link.hold.history)
                    link.hold.history = None
        elif row["service"] in self.service_participants:
            self._expect_hop(fields, intent.hold)

    def _foreign_close(self, row: dict[str, Any]) -> None:
        """An outcome or reconciliation another replica logged: the movement's hold is kept or
        given back, its key counted or forgotten."""
        idx = row["intent_idx"]
        intent = self.foreign.pop(idx, None) or self.open_intents.pop(idx, None)
        ok = 200 <= row["status"] < 300
        if row["phase"] == "reconciled":
            self._note_reconciled(idx)
        if intent is None:
            # A retry the service ran afresh (its key had expired): the money moved now. (Not a
            # late outcome of an intent a `reconciled` entry already counted: that one is "none".)
            if ok and row["phase"] == "outcome" and row["value_minor"] is not None and row["counts"] is None \
                    and idx not in self.reconciled:
                record_usage(self._usage(row["participant_id"]), _movement_of(_Row(row)), _parse_iso(row["at"]))
            return
        accepted = ok and row["counts"] != "none"
        if accepted and row["counts"] == "limits" and intent.hold.history is not None:
            # A payment whose ledger hop holds its history (linked where this replica did not see it).
            self.history.forget(intent.hold.history)
            intent.hold.history = None
        if accepted and intent.hold.limits is None and row["customer"] is not None \
                and intent.fields.get("counts") in repository.COUNTS_FOR_LIMITS:
            intent.hold.usage.customers.add(row["customer"])  # held on another day: its customer still counts
        self._settle_hold(intent.hold, accepted)
        self._close_key(intent, ok)
        self._drop_hop(row["request_id"], intent.hold)

    def _note_reconciled(self, intent_idx: int) -> None:
        self.reconciled[intent_idx] = None
        if len(self.reconciled) > KEY_MEMORY:
            del self.reconciled[next(iter(self.reconciled))]

    def _drop_hop(self, request_id: str, hold: Hold) -> None:
        hop = self.hops.get(request_id)
        if hop is not None and hop.hold is hold:
            del self.hops[request_id]

    def adopt_abandoned(self, now_ms: float) -> None:
        """Other replicas' intents past their deadline with no outcome: their process is gone
        (a live one answers or logs `unanswered` by then), so this one reconciles them."""
        for idx, intent in list(self.foreign.items()):
            if now_ms >= intent.deadline_ms + ABSENT_AFTER_MS:
                self.open_intents[idx] = self.foreign.pop(idx)

    # -- the request path: authenticate, check limits, screen, forward, record ----------------

    async def handle(self, request: Request, service: str, prefix: str) -> Response:
        """One request through the door; every way out records its entry in the audit log."""
        call = self._arrive(request, service, prefix)
        self.catch_up()  # another replica's suspension, admission or movement counts here too
        api_key = request.headers.get("x-api-key")
        if not self._authenticate(call, api_key):
            return await self._without_participant_key(call, api_key)
        refusal = self._check_access(call) or self._act_for_originator(call) or self._take_rate(call)
        if refusal is not None:
            return refusal
        call.body = await request.body()
        operation = self.rules.screened_operation(service, request.method, call.path)
        if operation is None:  # it moves no money: nothing to screen
            return await self._forward(call)
        return await self._movement(call, operation)

    def _arrive(self, request: Request, service: str, prefix: str) -> Call:
        started = time.perf_counter()
        now = self.clock.now()
        entry = RequestEntry(at=iso(now), request_id=current_request_id() or new_id("req"),
                             method=request.method, path=request.url.path[:500], service=service,
                             trace_id=current_trace_id())
        return Call(request, service, request.url.path[len(prefix):] or "/", entry, started, now)

    def _authenticate(self, call: Call, api_key: str | None) -> bool:
        """Whether a participant's key sent the call; its policy applies from here on."""
        call.policy = self.policy_for_key(api_key)
        if call.policy is None:
            return False
        call.entry.participant_id = call.policy.id
        return True

    async def _without_participant_key(self, call: Call, api_key: str | None) -> Response:
        """The regulator's key, which reaches only a service's own sandbox controls; or no valid key."""
        if not self.is_regulator(api_key):
            return self._unauthenticated(call, api_key)
        call.entry.participant_id = "regulator"
        if not is_sandbox_control(call.path):
            return self._refuse(call, 403, "regulator-key-not-a-participant", "The regulator key cannot call services",
                                "Use a participant's key for /payments, /credit, /advisor and /open-banking.")
        call.body = await call.request.body()  # a teacher moving a service's clock: forwarded, logged
        return await self._forward(call)

    def _check_access(self, call: Call) -> Response | None:
        """The sender's standing, testing window, services and operations; never a service's clock."""
        policy = call.sender
        if is_sandbox_control(call.path):
            # Moving a service's clock would start a new day for its limits and age its history.
            call.entry.limit_name = "sandbox_controls"
            return self._refuse(call, 403, "sandbox-controls-regulator-only", "Sandbox controls are the regulator's",
                                f"{call.request.url.path} reaches the {call.service} service's own sandbox controls "
                                "(its clock). Moving time would reset daily limits and age the screening windows, "
                                "so the gateway forwards it only with the regulator's key.",
                                limit="sandbox_controls", participant_id=policy.id)
        breach = check_access(policy, call.service, call.request.method, call.path, call.now)
        return None if breach is None else self._breach(call, breach, policy)

    def _act_for_originator(self, call: Call) -> Response | None:
        """A sandbox service acting for a participant: that participant's status, window, limits
        and screening apply, and the entry names both (participant_id, via)."""
        on_behalf = call.request.headers.get(ON_BEHALF_HEADER)
        if not on_behalf:
            return None
        policy = call.sender
        if policy.kind != "service":
            call.entry.limit_name = "on_behalf"
            return self._refuse(call, 403, "on-behalf-not-allowed", "Only the sandbox's services act for others",
                                f"{ON_BEHALF_HEADER} is honoured from the sandbox's own services only; "
                                f"{policy.id} is a participant and acts for itself.",
                                limit="on_behalf", participant_id=policy.id)
        originator = self.policies_by_id.get(on_behalf)
        if originator is None:
            return self._refuse(call, 403, "unknown-originator", "The participant acted for is not admitted",
                                f"{ON_BEHALF_HEADER} names {on_behalf[:40]!r}, which is no admitted participant.",
                                participant_id=policy.id)
        call.originator = originator
        call.entry.participant_id, call.entry.via = originator.id, policy.id
        breach = check_standing(originator, call.now)
        return None if breach is None else self._breach(call, breach, originator)

    def _take_rate(self, call: Call) -> Response | None:
        """The sender's requests a minute (its own, also when it acts for another)."""
        policy = call.sender
        now_s = call.now.timestamp()
        rate = rate_state(policy, self.rates.take(policy.id, rate_window(now_s)), now_s)
        call.rate_headers = rate.headers()
        if rate.allowed:
            return None
        call.entry.limit_name = "rate_limit"
        return self._refuse(call, 429, "rate-limited", "Too many requests",
                            f"{policy.rate_limit_per_minute} requests a minute; retry in {rate.reset_s} s.",
                            headers={"Retry-After": str(rate.reset_s)}, limit="rate_limit")

    # -- a money movement: read, limited, screened, written ahead --------------------------------

    async def _movement(self, call: Call, operation: ScreenedOperation) -> Response:
        """A money-moving request: read, answered as a retry or checked against the limits,
        screened, held and written ahead, forwarded, settled on the answer."""
        call.entry.operation = f"{call.service} {operation.label}"
        if json_depth_exceeds(call.body, self.max_json_depth):
            call.entry.error = "json-too-deep"
            return self._refuse(call, 422, "json-too-deep", "The request body is nested too deeply",
                                f"JSON nested deeper than {self.max_json_depth} levels is refused before "
                                "screening; money-moving bodies are a few levels deep.")
        try:
            move = await self._read_movement(call, operation)
        except ScreeningUnavailable as exc:
            return self._screening_unavailable(call, exc)
        except (Unscreenable, ValueError, RecursionError) as exc:
            call.entry.error = "unscreenable"
            return self._refuse(call, 422, "unscreenable-request", "The gateway cannot screen this request",
                                f"{exc}. Money-moving requests must carry a readable amount.")
        if move is None:  # nothing to move: no such quote or journal; the service says so
            return await self._forward(call)
        answer = await self._earlier_attempt(call, move, reconcile=True)
        if answer is not None:
            return answer
        refusal = self._check_amounts(call, move)
        if refusal is not None:
            return refusal
        try:
            await self._fill_owner_names(move.tx, call.entry.request_id)
        except Exception as exc:
            return self._screening_unavailable(call, exc)
        if move.key is not None and move.known is None:
            # A duplicate sent at the same moment may have been forwarded during that look-up
            # (and may even have timed out meanwhile: then its outcome comes first).
            answer = await self._earlier_attempt(call, move, reconcile=False)
            if answer is not None:
                return answer
        # From here until the request is on its way there is no await: the limits are checked
        # again (others may have held usage meanwhile), the transaction is screened and its
        # usage and history are held, as one step no parallel request can interleave with,
        # nor another replica's (the decision lock; what they held is caught up first).
        try:
            locked = await self.decisions.acquire()
        except Exception as exc:  # another replica held it past the lock timeout
            log.warning("decision lock not obtained: %r", exc)
            call.entry.error = "gateway-busy"
            return self._refuse(call, 503, "gateway-busy", "The gateway is busy",
                                "Another gateway replica held the limits' lock too long; nothing was "
                                "forwarded. Retry in a moment.", headers={"Retry-After": "1"})
        try:
            # The events store's turn first, as every writer takes them (sandbox/gateway/events.py).
            with self.events.writing() if self.events is not None else nullcontext(), self._audit_lock:
                self.catch_up(locked)
                refusal = self._check_amounts(call, move) or self._screen(call, move)
                if refusal is not None:
                    return refusal
                self._write_ahead(call, move)
        finally:
            self.decisions.release(locked)
        return await self._forward(call, move)

    async def _read_movement(self, call: Call, operation: ScreenedOperation) -> Movement | None:
        """The movement the body describes, with the amount and parties of the quote or journal
        it names (looked up); None when it names none the service has: nothing can move."""
        document = parsed = json.loads(call.body or b"null")
        if operation.lookup is not None:
            looked_up = await self._look_up(operation.lookup, document, call.service, call.entry.request_id)
            if looked_up is None:
                return None
            document = {**document, LOOKUP: looked_up}  # the gateway's, never the sender's
        tx = self.rules.transaction(operation, document, call.counted.id)
        call.entry.moves(tx)
        return Movement(tx, fingerprint_of(call.request.method, call.path, parsed),
                        call.request.headers.get(_key_header(call.service)) or None)

    async def _earlier_attempt(self, call: Call, move: Movement, *, reconcile: bool) -> Response | None:
        """The answer to a retry of a key the gateway forwarded before; None for a first attempt
        (or a key remembered with another body: the service refuses that itself, 409).
        `reconcile`: a first attempt whose outcome was never heard is asked after, briefly."""
        if move.key is None:
            return None
        move.known = self._known_key(call.key_scope(move.key), call.now.timestamp())
        if reconcile and move.known is not None and move.known.state == "open":
            # The first attempt's outcome was never heard (timeout, crash): find it out first,
            # within a short bound (the retry itself should not wait out a slow service).
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.reconcile(move.known.intent)), RETRY_RECONCILE_S)
            move.known = self._known_key(call.key_scope(move.key), call.now.timestamp())
        record = move.known
        if record is None:
            return None
        if record.state == "open":
            return self._refuse(call, 409, "idempotency-key-in-flight", "The first attempt's outcome is not known yet",
                                f"A request with key {move.key!r} was forwarded and its outcome is still being "
                                "reconciled with the service. Retry shortly with the same key.",
                                headers={"Retry-After": "5"})
        if not record.retried_by(move.fingerprint):
            return None
        if record.state == "in_flight":
            # Refused here, as the service would (409), so only one attempt is ever in flight.
            return self._refuse(call, 409, "idempotency-key-in-flight",
                                "A request with this idempotency key is still running",
                                f"Retry after the first request with key {move.key!r} has finished.",
                                headers={"Retry-After": "1"})
        return await self._forward_replay(call, move, record)

    async def _forward_replay(self, call: Call, move: Movement, record: KeyRecord) -> Response:
        """A retry of a key whose first attempt was answered: the service answers with the first
        response and moves nothing, so it is neither limited, screened nor counted again; it
        carries the first decision and alert, and points at the first intent."""
        move.replay, move.decision = True, record.decision
        entry = call.entry
        entry.decided(record.decision)
        entry.alert_id, entry.phase, entry.idempotency_key = record.alert_id, "outcome", move.key
        entry.intent_idx = record.intent.idx if record.intent else None
        return await self._forward(call, move)

    def _check_amounts(self, call: Call, move: Movement) -> Response | None:
        """The single-transaction, daily-volume and customer limits of whoever the movement counts for."""
        counted = call.counted
        breach = check_amounts(counted, self._usage(counted.id), move.tx, call.now, self.rules.money)
        return None if breach is None else self._breach(call, breach, counted)

    def _screen(self, call: Call, move: Movement) -> Response | None:
        """The AML decision (a ledger hop of a payment screened a moment ago is screened as that
        payment's, its parties the ledger's); the alert it opens; a refusal if it is blocked."""
        entry, request_id = call.entry, call.entry.request_id
        link = move.link = self._continued_hop(call, move.tx)
        if self._starts_hop(call, move) and request_id in self.hops:
            # Its service's ledger hop is linked by the request id: two at once would be confused.
            return self._refuse(call, 409, "request-id-in-flight", "A request with this X-Request-ID is in flight",
                                f"Another payment with X-Request-ID {request_id!r} is still on its way; send each "
                                "request with an id of its own (or none: the gateway makes one).")
        if link is not None:
            # The payment's history entries become this hop's (its parties are the ledger's), never both.
            link.linked = True
            if link.hold.history is not None:
                self.history.forget(link.hold.history)
                link.hold.history = None
        try:
            decision = move.decision = self.rules.screen(move.tx, self.history, call.now.timestamp())
        except Exception as exc:
            return self._screening_unavailable(call, exc)
        entry.decided(decision)
        if decision.outcome == "review" and link is not None and link.alert_id is not None \
                and set(decision.rules) <= set(link.decision.rules):
            entry.alert_id = link.alert_id  # the same payment's alert is already open
        elif decision.outcome != "approve":
            move.alert = self._alert(call, decision, move.tx)
            entry.alert_id = move.alert["id"]
        if decision.outcome != "block":
            return None
        return self._refuse(call, 403, "transaction-blocked", "Transaction blocked by AML screening",
                            "The transaction was not forwarded: " + "; ".join(h.reason for h in decision.hits),
                            headers={DECISION_HEADER: self._decision_header(decision)}, alert=move.alert,
                            decision="block", score=decision.score,
                            rules=[{"rule": h.rule, "score": h.score, "reason": h.reason} for h in decision.hits],
                            ruleset_version=decision.ruleset_version, alert_id=move.alert["id"] if move.alert else None)

    def _write_ahead(self, call: Call, move: Movement) -> None:
        """Hold the movement's usage and history, give it a key and a deadline, and log its intent
        before it leaves; remember its key for retries and, if its service may hop, the hop."""
        # A service's hop on behalf of another participant's payment counts toward that
        # participant's limits (already held), not the service's own.
        move.hold = self._hold(self._usage(call.counted.id), move.tx, call.now, limits=move.link is None)
        if move.key is None and call.service in ASSIGNS_KEYS:
            move.key, move.assigned = f"{ASSIGNED_KEY_PREFIX}{uuid.uuid4().hex}", True
        move.deadline_ms = int((time.time() + self.timeout.connect + self.timeout.read + DEADLINE_GRACE_S) * 1000)
        try:
            move.intent = self._write_intent(call, move)
        except BaseException:
            self._settle_hold(move.hold, False)
            raise
        now_s = call.now.timestamp()
        if move.key is not None and move.known is None:
            # (A remembered key with another body is not replaced: the service refuses it, 409.)
            move.record = self.keys[call.key_scope(move.key)] = KeyRecord(
                move.fingerprint, "in_flight", now_s, move.decision, call.entry.alert_id, move.intent)  # type: ignore[arg-type]
            self._prune_keys(now_s)
        if self._starts_hop(call, move):
            move.hop = self.hops[call.entry.request_id] = Hop(
                call.counted.id, call.service, move.tx.value, move.hold, move.decision, call.entry.alert_id)  # type: ignore[arg-type]

    def _write_intent(self, call: Call, move: Movement) -> OpenIntent:
        """Append the movement's intent (and the alert its screening opened) before forwarding it;
        the call's entry, now its outcome, points back to it."""
        fields = call.entry.row()
        fields.update(phase="intent", status=0, latency_us=0, idempotency_key=move.key, fingerprint=move.fingerprint,
                      deadline_ms=move.deadline_ms, counts="history" if move.link is not None else None)
        idx, _ = self.audit(fields, move.alert)
        call.entry.phase, call.entry.intent_idx, call.entry.idempotency_key = "outcome", idx, move.key
        return OpenIntent(idx, fields, call.service, call.sender_id, move.key, move.fingerprint,
                          move.deadline_ms, move.hold)  # type: ignore[arg-type]

    # -- forward and record ----------------------------------------------------------------------

    async def _forward(self, call: Call, move: Movement | None = None) -> Response:
        """Send, settle what the movement holds on the answer (None: no answer), record, send back.

        A small answer of known size is read whole before anything is settled or logged, so an
        answer lost half-way is an unanswered request (504, may or may not have been applied),
        as a timeout is, never a 2xx logged and then a crash."""
        if self.resetting:  # the regulator's reset waits for what is already on its way; nothing new goes
            self._settle_answer(call, move, None, sent=False)
            call.entry.error = "sandbox-resetting"
            return self._refuse(call, 503, "sandbox-resetting", "The sandbox is being reset",
                                "The regulator is putting the sandbox back to its seeded demo state; nothing "
                                "was forwarded. Retry in a few seconds.", headers={"Retry-After": "2"})
        upstream = self._upstream_request(call, move)
        answered = False  # the service's status line and headers arrived
        # A movement's answer is waited for until its deadline at most, whatever httpx's
        # per-phase timeouts add up to: past it, another replica may reconcile it.
        patience = move.deadline_ms / 1000 - DEADLINE_GRACE_S - time.time() \
            if move is not None and move.deadline_ms is not None else None
        self.forwarding += 1
        try:
            transport = self.transport(call.service)
            if self.faults is not None:  # an injected fault takes the path a real one takes (faults.py)
                transport = self.faults.transport(call, transport)
            async with asyncio.timeout(patience):
                response = await transport.handle_async_request(upstream)
                answered = True
                body = await _small_body(response)
        except (httpx.TimeoutException, httpx.TransportError, TimeoutError) as exc:
            if answered:
                await response.aclose()
            sent = answered or not isinstance(exc, NOT_SENT)
            self._settle_answer(call, move, None, sent)
            return self._upstream_failed(call, sent, exc)
        except BaseException:
            self._settle_answer(call, move, None, True)
            raise
        finally:
            self.forwarding -= 1
        self._settle_answer(call, move, response, True)
        try:
            idx, digest = self._record(call, response.status_code)
        except BaseException:
            await response.aclose()
            raise
        headers = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in _DROP_RESPONSE]
        extra = {**call.rate_headers, RECEIPT_HEADER: f"index={idx}; hash={digest}"}
        if move is not None and move.decision is not None:
            extra[DECISION_HEADER] = self._decision_header(move.decision)
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        if body is not None:
            whole = Response(content=body, status_code=response.status_code)
            whole.raw_headers = headers
            return whole
        streamed = StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                     background=BackgroundTask(response.aclose))
        streamed.raw_headers = headers
        return streamed

    def _settle_answer(self, call: Call, move: Movement | None, response: httpx.Response | None,
                       sent: bool) -> None:
        """Keep or give back what a movement holds by the service's answer (None: none came)."""
        if move is None:
            return
        if move.hop is not None:
            self.catch_up()  # its ledger hop may have passed another replica
        if move.replay:
            self._settle_replay(call, move, response)
        else:
            self._settle_movement(call, move, response, sent)

    def _settle_movement(self, call: Call, move: Movement, response: httpx.Response | None, sent: bool) -> None:
        """An accepted movement keeps its hold, a refused one gives it back; an unanswered one
        stays open (hold and intent) until reconciliation hears its outcome."""
        entry, request_id = call.entry, call.entry.request_id
        if move.hop is not None and self.hops.get(request_id) is move.hop:
            del self.hops[request_id]
        if response is not None and self.replicated and time.time() * 1000 > (move.deadline_ms or 0):
            # Answered past its deadline (this process was stopped?): another replica may have
            # reconciled it meanwhile, and counted it; then this outcome counts toward nothing.
            self.catch_up()
            if move.intent is not None and move.intent.idx in self.reconciled:
                self._settle_hold(move.hold, 200 <= response.status_code < 300)  # type: ignore[arg-type]
                entry.counts = "none"
                return
        if response is None and sent:
            # Forwarded, never answered: it may have been applied. The hold stays, the intent
            # stays open, and reconciliation asks the service for the key's outcome.
            entry.phase = "unanswered"
            self.open_intents[move.intent.idx] = move.intent  # type: ignore[union-attr]
            if move.record is not None:
                move.record.state = "open"
            return
        ok = response is not None and 200 <= response.status_code < 300
        # A replay moved nothing now: the first answer is already counted (or is an intent's).
        replayed = ok and response.headers.get(REPLAY_HEADER, "").lower() == "true"  # type: ignore[union-attr]
        self._settle_hold(move.hold, ok and not replayed)  # type: ignore[arg-type]
        if replayed:
            entry.counts = "none"
        elif ok and move.hop is not None and move.hop.linked:
            entry.counts = "limits"
        elif ok and move.link is not None:
            entry.counts = "history"
        if move.record is not None and self.keys.get(call.key_scope(move.key)) is move.record:  # type: ignore[arg-type]
            if ok:
                move.record.state = "counted"
            else:
                del self.keys[call.key_scope(move.key)]  # type: ignore[arg-type]

    def _settle_replay(self, call: Call, move: Movement, response: httpx.Response | None) -> None:
        """A replayed answer moved nothing; one the service ran afresh moved the money now."""
        if response is None or not 200 <= response.status_code < 300:
            return
        if response.headers.get(REPLAY_HEADER, "").lower() == "true":
            call.entry.counts = "none"
            return
        # The service ran it afresh (its key had expired): the money moved now, so it counts.
        log.warning("%s: key retried after the service forgot it; counted now", call.entry.request_id)
        self._settle_hold(self._hold(self._usage(call.counted.id), move.tx, call.now, limits=True), True)

    def _record(self, call: Call, status: int, alert: dict[str, Any] | None = None) -> tuple[int, str]:
        """Append the call's entry with its answer's status and latency: (index, hash), its receipt."""
        call.entry.status = status
        call.entry.latency_us = int((time.perf_counter() - call.started) * 1e6)
        return self.audit(call.entry.row(), alert)

    def _refuse(self, call: Call, status: int, slug: str, title: str, detail: str,
                headers: dict[str, str] | None = None, alert: dict[str, Any] | None = None,
                **extras: Any) -> Response:
        """Record the call as refused, and answer with the problem and its receipt."""
        idx, digest = self._record(call, status, alert)
        out = {**call.rate_headers, **(headers or {}), RECEIPT_HEADER: f"index={idx}; hash={digest}"}
        body = problem_body(status, slug, title, detail, instance=call.request.url.path, **extras)
        return Response(json.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=out)

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
        with self._audit_lock:  # the check (after the other replicas' entries), the entry and the settling: one step
            if self.audit(fields, guard=lambda: intent.idx in self.open_intents) is None:
                return "closed"  # another replica reconciled it meanwhile
            self._settle_hold(intent.hold, applied)
            del self.open_intents[intent.idx]
            self._note_reconciled(intent.idx)
            self._close_key(intent, applied)
            self._drop_hop(intent.fields.get("request_id") or "", intent.hold)
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
                    self._log_flood(summary, iso(self.clock.now()), new_id("req"))
            self.catch_up()
            self.adopt_abandoned(time.time() * 1000)
            if self.open_intents:
                try:
                    await self.reconcile_open()
                except Exception:  # keep the timer alive; the next round tries again
                    log.exception("reconciliation round failed")

    # -- unauthenticated requests ---------------------------------------------------------------

    def _unauthenticated(self, call: Call, api_key: str | None) -> Response:
        """401, or 429 for an address past the unauthenticated rate; a flood is logged as a few
        entries and one summary per address and window, not one hash-chain entry per request."""
        slug, title = ("missing-api-key", "API key required") if not api_key else \
            ("invalid-api-key", "API key not recognised")
        detail = "Send a participant's key in the X-API-Key header."
        headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}
        if self.door is None:
            return self._refuse(call, 401, slug, title, detail, headers=headers)
        request = call.request
        address = request.client.host if request.client else "unknown"
        verdict = self.door.take(address, time.time())
        if verdict.summary is not None:
            self._log_flood(verdict.summary, call.entry.at, call.entry.request_id)
        status = 401
        if not verdict.allowed:
            status, slug, title = 429, "rate-limited", "Too many unauthenticated requests"
            detail = (f"Too many requests without a valid key from {address}; retry in "
                      f"{verdict.retry_after_s} s.")
            headers["Retry-After"] = str(verdict.retry_after_s)
            call.entry.limit_name = "unauthenticated_rate"
        if verdict.log_now:
            return self._refuse(call, status, slug, title, detail, headers=headers)
        body = problem_body(status, slug, title, detail + " (Counted in the gateway's flood summary for "
                            "this address, not logged one by one.)", instance=request.url.path)
        return Response(json.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)

    def _log_flood(self, summary: FloodSummary, at: str, request_id: str) -> None:
        """One entry for the refusals of one address in one window that were not logged one by one."""
        self.audit({"at": at, "request_id": request_id, "participant_id": None,
                    "method": "-", "path": summary.describe()[:500], "service": None,
                    "status": 429 if summary.limited else 401, "latency_us": 0,
                    "limit_name": "unauthenticated_rate", "error": "flood-summary"})

    # -- holds, idempotency keys and linked hops --------------------------------------------

    def _hold(self, usage: Usage, tx: Transaction, now: datetime, *, limits: bool) -> Hold:
        return Hold(usage, hold_usage(usage, tx, now) if limits else None,
                    self.history.record(tx, now.timestamp()))

    def _settle_hold(self, hold: Hold, accepted: bool) -> None:
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

    def _known_key(self, scoped: tuple[str, str, str], now_s: float) -> KeyRecord | None:
        """The key as the gateway remembers it (per key holder and service), within retention."""
        record = self.keys.get(scoped)
        if record is not None and record.at < now_s - RETENTION.total_seconds() and record.state != "open":
            del self.keys[scoped]
            return None
        return record

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

    def _continued_hop(self, call: Call, tx: Transaction) -> Hop | None:
        """The screened request this one continues: still in flight, to a service that calls
        the gateway as this participant, for the participant that made it, with the same request
        id and the same value."""
        hop = self.hops.get(call.entry.request_id)
        participant_id = call.sender.id
        if hop is None or hop.linked or hop.participant_id == participant_id or hop.value != tx.value:
            return None
        if call.originator is not None and call.originator.id != hop.participant_id:
            return None
        return hop if self.service_participants.get(hop.service) == participant_id else None

    def _starts_hop(self, call: Call, move: Movement) -> bool:
        """Whether the movement's service may move its money in a hop of its own, linked by the request id."""
        return move.link is None and call.service in self.service_participants

    # -- helpers -----------------------------------------------------------------------------

    def _breach(self, call: Call, breach: Breach, policy: Policy) -> Response:
        call.entry.limit_name = breach.limit
        if breach.limit == "status":
            return self._refuse(call, 403, "participant-suspended", "Participant suspended", breach.detail,
                                limit="status", participant_id=policy.id)
        return self._refuse(call, 403, "sandbox-limit", "Refused by the participant's sandbox limits", breach.detail,
                            limit=breach.limit, participant_id=policy.id)

    def _upstream_failed(self, call: Call, sent: bool, exc: Exception) -> Response:
        service = call.service
        log.warning("upstream %s failed: %r", service, exc)
        if not sent:
            call.entry.error = "upstream-unavailable"
            return self._refuse(call, 503, "upstream-unavailable", "Service unavailable",
                                f"The {service} service could not be reached; nothing was forwarded.",
                                headers={"Retry-After": "5"}, service=service)
        # Timed out, or the connection broke before the answer was whole: either way it is unknown
        # whether the service applied it.
        call.entry.error = "upstream-timeout"
        assigned = (call.entry.idempotency_key or "").startswith(ASSIGNED_KEY_PREFIX)
        retry = ("the gateway asks the service what became of it and logs the outcome" if assigned
                 else "retry with the same Idempotency-Key")
        return self._refuse(call, 504, "upstream-timeout", "Service timed out",
                            f"The {service} service did not answer in time; the request may or may not have "
                            f"been applied: {retry}.", service=service)

    def _screening_unavailable(self, call: Call, exc: Exception) -> Response:
        """Fail closed: money never moves unscreened."""
        log.warning("screening failed for %s: %r", call.entry.request_id, exc)
        call.entry.error = "screening-failed"
        return self._refuse(call, 503, "screening-unavailable", "Screening is unavailable",
                            "The transaction could not be screened, so it was not forwarded. "
                            "Nothing moved; retry later.", headers={"Retry-After": "5"})

    @staticmethod
    def _decision_header(decision: Decision) -> str:
        rules = ",".join(decision.rules) or "none"
        return f"{decision.outcome}; score={decision.score}; rules={rules}; ruleset={decision.ruleset_version}"

    def _alert(self, call: Call, decision: Decision, tx: Transaction) -> dict[str, Any]:
        entry = call.entry
        return {
            "id": new_id("alt"), "created_at": call.now, "participant_id": entry.participant_id,
            "audit_index": self.head.next_idx, "request_id": entry.request_id,
            "operation": entry.operation, "decision": decision.outcome, "score": decision.score,
            "rules": json.dumps([{"rule": h.rule, "score": h.score, "reason": h.reason} for h in decision.hits]),
            "ruleset_version": decision.ruleset_version, "amount": tx.amount, "currency": tx.currency,
            "payer": tx.payer, "payee": tx.payee, "status": "open", "assignee": None,
            "resolution": None, "note": None, "closed_at": None,
        }

    def _upstream_request(self, call: Call, move: Movement | None) -> httpx.Request:
        request, service, path = call.request, call.service, call.path
        headers = [(k, v) for k, v in request.headers.raw
                   if (name := k.decode("latin-1").lower()) not in _DROP_REQUEST and not name.startswith("x-sandbox-")]
        headers += [
            (b"x-request-id", call.entry.request_id.encode()),
            (b"x-sandbox-participant", call.sender_id.encode()),
            (b"x-forwarded-prefix", ("/" + service).encode()),
        ]
        if call.originator is not None:  # honoured from service keys only (_act_for_originator)
            headers.append((b"x-sandbox-on-behalf-of", call.originator.id.encode()))
        if move is not None and move.assigned:
            headers.append((_key_header(service).encode(), move.key.encode()))  # type: ignore[union-attr]
        if move is not None and move.deadline_ms is not None:  # the service claims no key after this
            headers.append((b"x-sandbox-deadline", f"{move.deadline_ms / 1000:.3f}".encode()))
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
        return httpx.Request(request.method, url, headers=headers, content=call.body,
                             extensions={"timeout": self.timeout.as_dict()})

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
