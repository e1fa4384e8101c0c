"""The regulator API's request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from services.common.fields import Text
from services.common.money import Money, positive_amount_pattern


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 7 and 7.0, never true or "7" (pydantic's lax mode takes both)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
PARTICIPANT_PREFIX = "ptp"
ALERT_PREFIX = "alt"
ServiceName = Literal["payments", "credit", "advisor", "open-banking"]
AlertResolution = Literal["false_positive", "suspicious", "reported"]
_CNY_AMOUNT = positive_amount_pattern(2)
OPERATION_PATTERN = r"^(payments|credit|advisor|open-banking) (GET|POST|PUT|PATCH|DELETE) /[A-Za-z0-9_{}*.~/-]{0,150}$"


class LimitsIn(BaseModel):
    """Boundary conditions, in the gateway's reporting currency (CNY)."""

    model_config = ConfigDict(extra="forbid")

    max_single_transaction: str = Field(pattern=_CNY_AMOUNT, max_length=19, examples=["20000.00"],
                                        description="Largest single money movement, CNY.")
    daily_volume: str = Field(pattern=_CNY_AMOUNT, max_length=19, examples=["200000.00"],
                              description="Most money moved per UTC day, CNY.")
    max_customers: JsonInt = Field(ge=1, le=1_000_000, description="Distinct paying customers over the window.")
    rate_limit_per_minute: JsonInt = Field(ge=1, le=100_000, description="Requests a minute, every operation.")


class ParticipantCreate(BaseModel):
    """Admit a firm to the sandbox: its restricted authorisation and its limits."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "name": "Acme Pay", "services": ["payments"], "operations": ["payments POST /transfers"],
            "window_days": 180,
            "limits": {"max_single_transaction": "5000.00", "daily_volume": "50000.00",
                       "max_customers": 10, "rate_limit_per_minute": 120},
        }]},
    )

    name: str = Text(100, "The firm's name.", ["Acme Pay"])
    role: str | None = Text(200, "What it tests in the sandbox.", optional=True)
    services: list[ServiceName] = Field(min_length=1, max_length=4, description="Services it may call.")
    operations: list[Annotated[str, StringConstraints(pattern=OPERATION_PATTERN)]] = Field(
        default_factory=list, max_length=50,
        description="Operation allow-list, `service METHOD /path` (`{param}` and `**` allowed); "
        "empty allows every operation of the allowed services.",
    )
    starts_in_days: JsonInt = Field(0, ge=0, le=365, description="Days from now until the testing window opens.")
    window_days: JsonInt = Field(180, ge=1, le=730, description="Length of the testing window.")
    limits: LimitsIn


class LimitsPublic(BaseModel):
    max_single_transaction: Money
    daily_volume: Money
    max_customers: int
    rate_limit_per_minute: int


class ParticipantPublic(BaseModel):
    """An admitted firm. Its key is never shown again after admission; `key_hint` tells keys apart."""

    id: str = Field(examples=["ptp_00000000000000000000000001"])
    name: str
    role: str
    status: Literal["active", "suspended"]
    status_reason: str | None
    kind: Literal["participant", "service"] = Field(description=(
        "`service`: one of the sandbox's own services. Its calls may name the participant they act "
        "for (`X-Sandbox-On-Behalf-Of`), whose limits and screening then apply; a participant's may not."))
    key_hint: str
    services: list[str]
    operations: list[str]
    window_from: datetime
    window_to: datetime
    limits: LimitsPublic
    created_at: datetime


class ParticipantAdmitted(ParticipantPublic):
    """The new participant and its API key, shown this once (only its hash is stored)."""

    api_key: str


class StatusChange(BaseModel):
    """Why the participant is suspended or reinstated (kept on the participant and in the log)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Text(200, "Why.", ["Breached its customer limit twice"])


class AuditEntryPublic(BaseModel):
    """One request through the gateway, chained to the one before by `hash`."""

    index: int
    at: str
    request_id: str
    participant_id: str | None
    method: str
    path: str
    service: str | None
    operation: str | None
    status: int
    latency_ms: float
    decision: str | None
    score: int | None
    rules: list[str]
    ruleset_version: str | None
    limit: str | None
    amount: Money | None
    value_reporting: Money | None
    payer: str | None
    payee: str | None
    customer: str | None
    card_last4: str | None
    error: str | None
    alert_id: str | None
    counts_toward: list[Literal["limits", "history"]] | None = Field(description=(
        "For an accepted money movement, what it counts toward: the participant's `limits` "
        "(daily volume, customers) and the screening `history` (structuring, velocity, "
        "pass-through). An idempotent replay counts toward neither; an open-banking payment "
        "counts toward the initiating TPP's limits and, through the bank's ledger transfer, "
        "toward the history once. Null for other entries."))
    phase: Literal["intent", "outcome", "unanswered", "reconciled", "reset"] | None = Field(description=(
        "Write-ahead entries of a money movement: `intent` is appended before the request is "
        "forwarded (status 0, its usage held); `outcome` when the service answered; `unanswered` when "
        "the gateway gave up (504) and the hold stays; `reconciled` when the service's record of the "
        "idempotency key was read back later (status 0 with error `not-applied`: it never ran). "
        "`reset`: the regulator reset the sandbox here and epoch `epoch` began. Null for a request "
        "that moves no money."))
    intent_index: int | None = Field(description="The `intent` entry this entry closes or follows.")
    idempotency_key: str | None = Field(description=(
        "The key the movement was forwarded with: the participant's, or one the gateway assigned."))
    via: str | None = Field(description=(
        "The sandbox service whose key sent this hop on `participant_id`'s behalf (advisor funding, "
        "credit collection, an open-banking payment's ledger transfer)."))
    epoch: int | None = Field(default=None, description=(
        "On a `reset` entry: the epoch it starts (1 for the first reset). Counts, reports and limits "
        "take only the entries from the latest reset on; the log itself is never erased."))
    trace_id: str | None = Field(default=None, description=(
        "The W3C trace id of the request (32 hex digits, as in its `X-Trace-Id` and its problem "
        "documents): the participant's own when it sent a `traceparent`. Every hop of one request "
        "shares it; with traces exported, Jaeger shows them as one trace. Null on entries written "
        "before traces, or with tracing disabled."))
    prev_hash: str
    hash: str


class ServiceResetPublic(BaseModel):
    """What one service's reset removed and seeded again, table by table."""

    service: str
    deleted: dict[str, int] = Field(description="Rows removed, per table.")
    seeded: dict[str, int] = Field(description="Rows of the seeded demo state, per table.")
    clock: datetime = Field(description="The service's time after the reset.")
    took_ms: float


class SandboxReset(BaseModel):
    """The sandbox is back to its seeded demo state; a new epoch of the audit log began."""

    epoch: int = Field(description="The epoch that began (1 after the first reset).")
    audit_index: int = Field(description="The log entry that records the reset (phase `reset`).")
    reset_at: datetime = Field(description="The gateway's time after the reset (its clock is back to real time).")
    participants: int = Field(description="Participants now admitted: the seeded set.")
    participants_removed: int = Field(description="Participants admitted since the last reset, now gone.")
    intents_reconciled: dict[str, int] = Field(description=(
        "Money movements whose outcome was still open, reconciled with their service before the "
        "reset, by verdict (`applied`, `refused`, `not-applied`)."))
    services: list[ServiceResetPublic]
    took_ms: float = Field(description="The whole reset, services included, in milliseconds.")


class DoorBudgetIn(BaseModel):
    """A budget for requests without a valid key, per client address, for a while: raised for a
    contract-testing run (`make fuzz` sends thousands of keyless cases on purpose), or lowered to
    show a class what a flood looks like. It lapses on its own."""

    model_config = ConfigDict(extra="forbid")

    per_minute: JsonInt = Field(ge=1, le=1_000_000, description="Refusals an address may earn per minute (401) "
                                "before the door answers 429.")
    burst: JsonInt = Field(ge=1, le=1_000_000, description="How many it may earn at once.")
    for_seconds: JsonInt = Field(ge=1, le=24 * 3600, description="How long the budget holds; then the "
                                 "configured one is back.")


class DoorBudgetPublic(BaseModel):
    """The budget in force for requests without a valid key (per client address), and the
    configured one it returns to."""

    per_minute: float
    burst: int
    until: datetime | None = Field(description="When an override lapses; null: the configured budget is in force.")
    configured_per_minute: float
    configured_burst: int


class AuditPage(BaseModel):
    """Entries oldest first; pass `next_after` as `after` to follow the live log."""

    data: list[AuditEntryPublic]
    next_after: int | None
    has_more: bool


class AuditHead(BaseModel):
    """The log's size and its last hash: publish it, and a later rewrite cannot match it."""

    size: int
    head_hash: str


class ChainBreakPublic(BaseModel):
    index: int
    reason: str


class VerificationPublic(BaseModel):
    """Whether every entry's hash matches its contents and its predecessor."""

    ok: bool
    size: int
    head_hash: str
    first_broken: ChainBreakPublic | None


class ReceiptCheck(BaseModel):
    """A receipt is good when the entry still has that hash and the chain up to it verifies."""

    index: int
    hash: str
    receipt_hash: str | None
    matches: bool | None = Field(description="Whether `receipt_hash` (when given) equals the stored hash.")
    chain_ok: bool
    entry: AuditEntryPublic


class RuleHitPublic(BaseModel):
    rule: str
    score: int
    reason: str


class AlertPublic(BaseModel):
    """A `review` or `block` decision waiting for, or closed by, the regulator."""

    id: str = Field(examples=["alt_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    created_at: datetime
    participant_id: str
    audit_index: int
    request_id: str
    operation: str
    decision: Literal["review", "block"]
    score: int
    rules: list[RuleHitPublic]
    ruleset_version: str
    amount: Money
    payer: str | None
    payee: str | None
    status: Literal["open", "assigned", "closed"]
    assignee: str | None
    resolution: AlertResolution | None
    note: str | None
    closed_at: datetime | None


class AlertAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: str = Text(100, "The investigator.", ["case officer 7"])


class AlertClose(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: AlertResolution
    note: str | None = Text(500, "What the investigation found.", optional=True)


class AlertSummary(BaseModel):
    opened: int
    open: int
    assigned: int
    closed: int
    false_positive: int
    suspicious: int
    reported: int


class ActivityReport(BaseModel):
    """A participant's traffic over a period, against its limits."""

    participant_id: str
    name: str
    status: str
    period_from: datetime
    period_to: datetime
    requests: int
    succeeded: int
    refused: int
    failed: int
    screened: int
    decisions: dict[str, int]
    volume: Money
    customers: int
    limits: LimitsPublic
    limit_breaches: int
    breaches_by_limit: dict[str, int]
    rate_limited: int
    errors: int
    alerts: AlertSummary
    first_request_at: str | None
    last_request_at: str | None


class ExitReport(ActivityReport):
    """The testing window's record, for the regulator's exit decision."""

    ruleset_version: str
    generated_at: datetime
    audit_head: AuditHead


class RuleSetPublic(BaseModel):
    """The screening rule set in force."""

    version: str
    reporting_currency: str
    thresholds: dict[str, int]
    screened_operations: list[str]
    rules: dict[str, Any]
    watch_list_version: str


# -- events and webhooks (docs/events.md) --------------------------------------------------------

ENDPOINT_PREFIX = "whe"
DELIVERY_PREFIX = "whd"
# An event type or every type under one: `payments.transfer.completed`, `payments.transfer`,
# `payments` or `payments.*` (sandbox/gateway/webhook_rules.py).
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,39}(\.[a-z][a-z0-9_]{0,39}){0,4}(\.\*)?$"
WEBHOOK_URL_PATTERN = r"^https?://[^\s/?#]+([/?#]\S*)?$"  # the host is checked against the allow-list
EventTypePattern = Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN, max_length=80)]


class EventPublic(BaseModel):
    """Something that happened in the sandbox, as a participant's events API and webhooks show it."""

    seq: int = Field(description="Its place in the gateway's store: the cursor (`after`) to read on from.")
    id: str = Field(examples=["evt_01m98j2x4h2qta9mk9rdkjhs71"], description="Stable: the same on every "
                    "read and every delivery (`webhook-id`); deduplicate on it.")
    type: str = Field(examples=["payments.transfer.completed"])
    source: str = Field(description="The service it happened in, or `sandbox` (the gateway's own: alerts, "
                        "suspensions).", examples=["payments"])
    participant_id: str | None = Field(description="The participant whose resource it is about: only it "
                                       "sees the event (the regulator sees every one).")
    subject_id: str = Field(description="The resource it is about (tr_…, loan_…, alt_…).")
    occurred_at: datetime = Field(description="When it happened, by the sandbox clock.")
    stored_at: datetime = Field(description="When the gateway stored it (wall clock).")
    data: dict[str, Any] = Field(description="The resource as its service's API shows it.")


class EventPage(BaseModel):
    """Events after the cursor, oldest first. Poll again with `after=next_after` (it stays put
    when nothing new came): nothing is skipped, whatever order the writers committed in."""

    data: list[EventPublic]
    next_after: int = Field(ge=0)
    has_more: bool


def _no_duplicates(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


EventTypes = Annotated[list[EventTypePattern], Field(max_length=20), BeforeValidator(
    lambda v: _no_duplicates(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v)]


class WebhookEndpointCreate(BaseModel):
    """Where to deliver this participant's events, and which."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "url": "http://127.0.0.1:9000/webhooks", "event_types": ["payments.transfer.completed", "credit.*"]}]})

    url: str = Field(min_length=1, max_length=2000, pattern=WEBHOOK_URL_PATTERN, description=(
        "http(s) URL on a host the sandbox allows (loopback unless the operator set "
        "`GATEWAY_WEBHOOK_ALLOWED_HOSTS`); a private address is never reached unless listed."))
    event_types: EventTypes = Field(default_factory=list, description=(
        "Types or prefixes (`payments.transfer.completed`, `payments`, `credit.*`); empty: every event."))
    description: str | None = Text(200, "What it is for.", ["Ledger sync"], optional=True)


class WebhookEndpointUpdate(BaseModel):
    """Change what is set; `enabled: true` re-enables an endpoint disabled after failing."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, min_length=1, max_length=2000, pattern=WEBHOOK_URL_PATTERN)
    event_types: EventTypes | None = None
    description: str | None = Text(200, "What it is for.", optional=True)
    enabled: bool | None = Field(None, description="false disables it now; true re-enables it and "
                                 "clears its failure count.")


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: JsonInt = Field(86_400, ge=0, le=7 * 86_400, description=(
        "How long the previous secret still signs too (both signatures in `webhook-signature`)."))


class WebhookEndpointPublic(BaseModel):
    """A webhook endpoint. Its secret is shown only when it is created or rotated."""

    id: str = Field(examples=["whe_01m98j2x4h2qta9mk9rdkjhs71"])
    participant_id: str
    url: str
    description: str
    event_types: list[str]
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    consecutive_failures: int
    previous_secret_until: datetime | None = Field(description="Until when the previous secret signs "
                                                   "too (after a rotation); null when only one signs.")
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointPublic):
    secret: str = Field(description="`whsec_…`: verify deliveries with it (Standard Webhooks); shown this once.")


class WebhookAttemptPublic(BaseModel):
    number: int
    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null when none came.")
    latency_ms: float
    error: str | None
    signed_with: int = Field(description="How many secrets signed it: 2 during a rotation's grace period.")


class WebhookDeliveryPublic(BaseModel):
    """One event owed to one endpoint: tried until the receiver answers 2xx, with backoff."""

    id: str = Field(examples=["whd_01m98j2x4h2qta9mk9rdkjhs71"])
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: list[WebhookAttemptPublic]
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class ServiceClockMove(BaseModel):
    reached: bool
    now: datetime | None = None
    fired: dict[str, int] = Field(default_factory=dict)
    error: str | None = None


class SandboxClockMoved(BaseModel):
    """The sandbox clock moved: the gateway's and every service's, what fell due, what was relayed."""

    now: datetime = Field(description="The gateway's new time.")
    services: dict[str, ServiceClockMove]
    events_relayed: int = Field(description="Events stored from the services' outboxes right after the move.")
