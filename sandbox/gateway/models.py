"""Tables of the gateway's own database: participants, alerts and the audit log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index
from sqlmodel import Field

from services.common.db import UTCDateTime, model_base

GatewayModel = model_base("GatewayModel")


# An admitted firm. The API key is stored only as its SHA-256 (see service.hash_key for why).
class Participant(GatewayModel, table=True):
    __tablename__ = "participants"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=100)
    role: str = Field(default="", max_length=200)
    key_hash: str = Field(max_length=64, unique=True)
    key_hint: str = Field(max_length=12)  # the key's first characters, to tell keys apart
    services: str = Field(max_length=200)  # comma-separated service names
    operations: str = Field(default="", max_length=4000)  # newline-separated "service METHOD /path"
    window_from: datetime = Field(sa_type=UTCDateTime)
    window_to: datetime = Field(sa_type=UTCDateTime)
    max_single_minor: int = Field(sa_type=BigInteger)
    daily_volume_minor: int = Field(sa_type=BigInteger)
    max_customers: int
    rate_limit_per_minute: int
    status: str = Field(default="active", max_length=12)  # active | suspended
    # participant | service: a sandbox service's key may name the participant it acts for
    # (X-Sandbox-On-Behalf-Of); a participant's may not.
    kind: str = Field(default="participant", max_length=12)
    status_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)


# A review or block decision opened for the regulator: open → assigned → closed.
class Alert(GatewayModel, table=True):
    __tablename__ = "alerts"

    id: str = Field(primary_key=True, max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)
    participant_id: str = Field(max_length=40, index=True)
    audit_index: int = Field(sa_type=BigInteger)
    request_id: str = Field(max_length=128)
    operation: str = Field(max_length=200)
    decision: str = Field(max_length=8)
    score: int
    rules: str = Field(max_length=8000)  # JSON list of {rule, score, reason}
    ruleset_version: str = Field(max_length=40)
    amount: str = Field(max_length=40)
    currency: str = Field(max_length=3)
    payer: str | None = Field(default=None, max_length=100)
    payee: str | None = Field(default=None, max_length=100)
    status: str = Field(default="open", max_length=10, index=True)  # open | assigned | closed
    assignee: str | None = Field(default=None, max_length=100)
    resolution: str | None = Field(default=None, max_length=20)
    note: str | None = Field(default=None, max_length=500)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# One request through the gateway. Timestamps are ISO strings so the hash is the same on every
# backend; `hash` chains the entry to the one before it (auditlog.py).
class AuditEntry(GatewayModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_participant_idx", "participant_id", "idx"),)

    idx: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    at: str = Field(max_length=32, index=True)
    request_id: str = Field(max_length=128)
    participant_id: str | None = Field(default=None, max_length=40)
    method: str = Field(max_length=10)
    path: str = Field(max_length=500)
    service: str | None = Field(default=None, max_length=20)
    operation: str | None = Field(default=None, max_length=200)
    status: int
    latency_us: int = Field(sa_type=BigInteger)
    decision: str | None = Field(default=None, max_length=8)
    score: int | None = None
    rules: str = Field(default="", max_length=400)
    ruleset_version: str | None = Field(default=None, max_length=40)
    limit_name: str | None = Field(default=None, max_length=40)
    amount: str | None = Field(default=None, max_length=40)
    currency: str | None = Field(default=None, max_length=3)
    value_minor: int | None = Field(default=None, sa_type=BigInteger)
    payer: str | None = Field(default=None, max_length=100)
    payee: str | None = Field(default=None, max_length=100)
    customer: str | None = Field(default=None, max_length=100)
    card_last4: str | None = Field(default=None, max_length=4)
    error: str | None = Field(default=None, max_length=40)
    alert_id: str | None = Field(default=None, max_length=40)
    # What an accepted money movement counts toward when not both the participant's limits and
    # the screening history: "limits" (a payment initiation whose ledger hop holds its history),
    # "history" (that ledger hop, made by a service on the initiator's behalf), "none" (an
    # idempotent replay). NULL: both (or not a money movement). Added after the first log format.
    counts: str | None = Field(default=None, max_length=8)
    # Write-ahead: a money movement leaves an `intent` (before it is forwarded, with the usage
    # it holds), then its `outcome` (the service answered), or `unanswered` (the gateway gave up:
    # 504) and later `reconciled` (the service's record for its idempotency key, read back).
    # NULL: a request that moves no money, logged once. Added with the write-ahead log format.
    phase: str | None = Field(default=None, max_length=12)
    intent_idx: int | None = Field(default=None, sa_type=BigInteger, index=True)
    idempotency_key: str | None = Field(default=None, max_length=255)
    fingerprint: str | None = Field(default=None, max_length=64)
    deadline_ms: int | None = Field(default=None, sa_type=BigInteger)  # wall clock, epoch ms
    # The sandbox service whose key sent this hop for `participant_id` (X-Sandbox-On-Behalf-Of).
    via: str | None = Field(default=None, max_length=40)
    # On a `reset` entry (phase "reset"): the epoch the regulator's reset began. The regulator's
    # counts and the gateway's limits take entries from the latest reset on. Added with resets.
    epoch: int | None = Field(default=None)
    # The W3C trace id of the request (32 hex digits): its spans at every hop share it, and so do
    # the entries of a service's own hops through the gateway. Added with traces.
    trace_id: str | None = Field(default=None, max_length=32, index=True)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


# -- events and webhooks (docs/events.md) --------------------------------------------------------

# An event the gateway stores: relayed from a service's outbox, or the gateway's own
# (`sandbox.alert.opened`, …). `seq` is the events API's cursor. The gateway assigns it itself,
# under one lock held until the insert commits (events.EventStore), so seq order is commit order
# on every backend: a reader that has seen seq n can never later find a committed n-1.
class StoredEvent(GatewayModel, table=True):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_participant_seq", "participant_id", "seq"),)

    seq: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    id: str = Field(max_length=40, unique=True)  # evt_…, the service's: storing one twice is refused
    type: str = Field(max_length=80, index=True)
    source: str = Field(max_length=20)  # the service it came from, or "sandbox" (the gateway's own)
    participant_id: str | None = Field(default=None, max_length=40)
    subject_id: str = Field(max_length=80)
    occurred_at: datetime = Field(sa_type=UTCDateTime)  # by the source's (sandbox) clock
    stored_at: datetime = Field(sa_type=UTCDateTime)  # wall clock: when the gateway committed it
    data: str  # JSON object


# A participant's webhook endpoint. The secret is kept as it is (it must sign); during a
# rotation's grace period the previous one signs too.
class WebhookEndpoint(GatewayModel, table=True):
    __tablename__ = "webhook_endpoints"

    id: str = Field(primary_key=True, max_length=40)  # whe_…
    participant_id: str = Field(max_length=40, index=True)
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=200)
    event_types: str = Field(default="", max_length=4000)  # newline-separated patterns; empty: all
    secret: str = Field(max_length=80)
    previous_secret: str | None = Field(default=None, max_length=80)
    previous_secret_until: datetime | None = Field(default=None, sa_type=UTCDateTime)  # wall clock
    status: str = Field(default="enabled", max_length=10)  # enabled | disabled
    disabled_reason: str | None = Field(default=None, max_length=200)
    # Events after this seq are delivered to it: none from before it was registered.
    from_seq: int = Field(sa_type=BigInteger)
    consecutive_failures: int = 0
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)  # wall clock
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


# One event owed to one endpoint, tried until it succeeds or runs out of attempts.
class WebhookDelivery(GatewayModel, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),
                      Index("ix_deliveries_endpoint", "endpoint_id", "id"))

    id: str = Field(primary_key=True, max_length=40)  # whd_…
    endpoint_id: str = Field(max_length=40)
    participant_id: str = Field(max_length=40)
    event_seq: int = Field(sa_type=BigInteger)
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=80)
    status: str = Field(default="pending", max_length=10)  # pending | succeeded | failed
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # wall clock
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookAttempt(GatewayModel, table=True):
    __tablename__ = "webhook_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=40, index=True)
    number: int
    at: datetime = Field(sa_type=UTCDateTime)
    status_code: int | None = None  # None: no answer (refused connection, timeout, host not allowed)
    latency_ms: float
    error: str | None = Field(default=None, max_length=200)
    signed_with: int = 1  # how many secrets signed it (2 during a rotation's grace period)


# Where the webhook fan-out has read the events store up to (one row, name "webhooks").
class EventCursor(GatewayModel, table=True):
    __tablename__ = "event_cursors"

    name: str = Field(primary_key=True, max_length=20)
    seq: int = Field(sa_type=BigInteger)


# -- fault flags (docs/faults.md) ----------------------------------------------------------------

# A fault the regulator injects into the gateway's forwarding (sandbox/gateway/faults.py): kept
# here, not in one process's memory, so every gateway replica on this database applies it, and a
# fault set for "the next n requests" counts them down once across all of them.
class FaultFlag(GatewayModel, table=True):
    __tablename__ = "fault_flags"

    id: str = Field(primary_key=True, max_length=40)  # the regulator's name for it
    service: str = Field(max_length=20)  # a gateway prefix: payments, credit, advisor, open-banking
    method: str | None = Field(default=None, max_length=10)  # with path: one operation; NULL: all
    path: str | None = Field(default=None, max_length=200)  # a template, as the allow-list writes it
    participant_id: str | None = Field(default=None, max_length=40)  # NULL: every participant
    kind: str = Field(max_length=12)  # latency | error | unavailable | timeout
    latency_ms: int = 0
    error_rate: float | None = None
    error_status: int | None = None
    remaining: int | None = None  # requests it still applies to; NULL: until it expires
    expires_at: datetime = Field(sa_type=UTCDateTime)  # wall clock
    note: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)  # wall clock
