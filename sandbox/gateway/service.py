"""What the regulator can do: admit, suspend and inspect participants, work alerts, read and
verify the log, and report on a testing window."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from sandbox.gateway import repository
from sandbox.gateway.auditlog import verify_chain
from sandbox.gateway.events import own_event
from sandbox.gateway.limits import hash_key
from sandbox.gateway.models import Alert, AuditEntry, Participant
from sandbox.gateway.proxy import Gateway, iso
from sandbox.gateway.schemas import (
    ActivityReport,
    AlertPublic,
    AlertSummary,
    AuditEntryPublic,
    AuditHead,
    ChainBreakPublic,
    ExitReport,
    LimitsPublic,
    ParticipantAdmitted,
    ParticipantCreate,
    ParticipantPublic,
    RuleHitPublic,
    VerificationPublic,
)
from services.common.db import record_first
from services.common.demo import DEMO_PARTICIPANT_LIMITS, DEMO_PARTICIPANTS
from services.common.ids import new_id
from services.common.money import Money, to_minor
from services.common.problems import Problem, not_found

REPORTING = "CNY"
# Why a regulator's change commits before its unit of work ends: the handler then appends it to
# the audit log (its own transaction) and the gateway's memory follows it; neither may record a
# change the database might still lose, and on SQLite the log's writer would wait on ours.
CHANGE_BEFORE_LOG = "the change is durable before the audit log and the gateway's memory record it"


def _key_hint(api_key: str) -> str:
    return api_key[:8] + "…"


def seed_demo_participants(session: Session, now: datetime) -> None:
    """The demo world's firms and the services' own keys, once, windows opening today."""
    if repository.participant_count(session):
        # A database from before participants had a kind: the services' keys become services'.
        for demo in DEMO_PARTICIPANTS:
            row = repository.get_participant(session, demo.id)
            if row is not None and row.kind != demo.kind and row.key_hash == hash_key(demo.api_key):
                row.kind = demo.kind
        return
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for demo in DEMO_PARTICIPANTS:
        limits = DEMO_PARTICIPANT_LIMITS[demo.id]
        session.add(Participant(
            id=demo.id, name=demo.name, role=demo.role, kind=demo.kind, key_hash=hash_key(demo.api_key),
            key_hint=_key_hint(demo.api_key), services=",".join(demo.services),
            operations="\n".join(limits.operations), window_from=start,
            window_to=start + timedelta(days=limits.window_days),
            max_single_minor=to_minor(limits.max_single, REPORTING),
            daily_volume_minor=to_minor(limits.daily_volume, REPORTING),
            max_customers=limits.max_customers, rate_limit_per_minute=limits.rate_limit_per_minute,
            created_at=now,
        ))


def participant_public(row: Participant) -> ParticipantPublic:
    return ParticipantPublic(
        id=row.id, name=row.name, role=row.role, status=row.status, status_reason=row.status_reason,  # type: ignore[arg-type]
        kind=row.kind,  # type: ignore[arg-type]
        key_hint=row.key_hint, services=[s for s in row.services.split(",") if s],
        operations=[o for o in row.operations.split("\n") if o],
        window_from=row.window_from, window_to=row.window_to, limits=_limits(row), created_at=row.created_at,
    )


def _limits(row: Participant) -> LimitsPublic:
    return LimitsPublic(
        max_single_transaction=Money.of(row.max_single_minor, REPORTING),
        daily_volume=Money.of(row.daily_volume_minor, REPORTING),
        max_customers=row.max_customers, rate_limit_per_minute=row.rate_limit_per_minute,
    )


def admit_participant(session: Session, gateway: Gateway, body: ParticipantCreate, now: datetime) -> ParticipantAdmitted:
    """A new firm with a fresh random key; only the key's hash is kept."""
    api_key = "sbx_" + secrets.token_urlsafe(32)
    start = now + timedelta(days=body.starts_in_days)
    row = Participant(
        id=new_id("ptp"), name=body.name, role=body.role or "", key_hash=hash_key(api_key),
        key_hint=_key_hint(api_key), services=",".join(dict.fromkeys(body.services)),
        operations="\n".join(dict.fromkeys(body.operations)), window_from=start,
        window_to=start + timedelta(days=body.window_days),
        max_single_minor=to_minor(body.limits.max_single_transaction, REPORTING),
        daily_volume_minor=to_minor(body.limits.daily_volume, REPORTING),
        max_customers=body.limits.max_customers, rate_limit_per_minute=body.limits.rate_limit_per_minute,
        created_at=now,
    )
    session.add(row)
    record_first(session, CHANGE_BEFORE_LOG)
    gateway.remember(row)
    return ParticipantAdmitted(**participant_public(row).model_dump(), api_key=api_key)


def get_participant(session: Session, participant_id: str) -> Participant:
    row = repository.get_participant(session, participant_id)
    if row is None:
        raise not_found("Participant", participant_id)
    return row


def set_status(session: Session, gateway: Gateway, participant_id: str, status: str, reason: str,
               now: datetime | None = None) -> ParticipantPublic:
    """Suspend or reinstate; the change and its event (`sandbox.participant.suspended` or
    `.reinstated`) commit together."""
    with _events_writing(gateway):  # before the unit's transaction begins (sandbox/gateway/events.py)
        return _set_status(session, gateway, participant_id, status, reason, now or gateway.clock.now())


def _events_writing(gateway: Gateway) -> Any:
    return gateway.events.writing() if gateway.events is not None else contextlib.nullcontext()


def _set_status(session: Session, gateway: Gateway, participant_id: str, status: str, reason: str,
                now: datetime) -> ParticipantPublic:
    row = get_participant(session, participant_id)
    if row.kind == "service" and status != "active":
        # The sandbox's own services act for participants; stopping one would break every firm
        # that relies on it (a loan's disbursal, a bank's payment), not the one at fault.
        raise Problem(409, "sandbox-service", "The sandbox's own services cannot be suspended",
                      f"{row.id} ({row.name}) is one of the sandbox's services, acting for participants; "
                      "suspend the participant it acts for instead (the audit log names it).",
                      participant_id=row.id)
    changed = row.status != status
    row.status, row.status_reason = status, reason
    session.add(row)
    public = participant_public(row)
    if changed and gateway.events is not None:
        what = "suspended" if status == "suspended" else "reinstated"
        gateway.events.insert(session, [own_event(
            f"sandbox.participant.{what}", row.id, row.id, now,
            {"id": row.id, "name": row.name, "status": row.status, "reason": reason})])
    record_first(session, CHANGE_BEFORE_LOG)
    gateway.remember(row)
    return public


# -- audit log ---------------------------------------------------------------------------------

def audit_public(row: AuditEntry | dict[str, Any]) -> AuditEntryPublic:
    r = row if isinstance(row, dict) else row.model_dump()
    amount = Money(amount=r["amount"], currency=r["currency"]) if r["amount"] and r["currency"] else None
    value = Money.of(r["value_minor"], REPORTING) if r["value_minor"] is not None else None
    return AuditEntryPublic(
        index=r["idx"], at=r["at"], request_id=r["request_id"], participant_id=r["participant_id"],
        method=r["method"], path=r["path"], service=r["service"], operation=r["operation"],
        status=r["status"], latency_ms=round(r["latency_us"] / 1000, 3), decision=r["decision"],
        score=r["score"], rules=[x for x in (r["rules"] or "").split(",") if x],
        ruleset_version=r["ruleset_version"], limit=r["limit_name"], amount=amount, value_reporting=value,
        payer=r["payer"], payee=r["payee"], customer=r["customer"], card_last4=r["card_last4"],
        error=r["error"], alert_id=r["alert_id"], counts_toward=_counts_toward(r),
        phase=r.get("phase"), intent_index=r.get("intent_idx"), idempotency_key=r.get("idempotency_key"),
        via=r.get("via"), epoch=r.get("epoch"), trace_id=r.get("trace_id"), prev_hash=r["prev_hash"], hash=r["hash"],
    )


def _counts_toward(r: dict[str, Any]) -> list[str] | None:
    if r["value_minor"] is None or not 200 <= r["status"] < 300:
        return None
    counts = r.get("counts")
    return [k for k in ("limits", "history") if counts is None or counts == k]


def verify_log(gateway: Gateway, up_to: int | None = None) -> VerificationPublic:
    rows = repository.audit_rows(gateway.reader)
    if up_to is not None:
        rows = (r for r in rows if r["idx"] <= up_to)
    result = verify_chain(rows)
    broken = result.first_broken
    return VerificationPublic(
        ok=result.ok, size=result.size, head_hash=result.head_hash,
        first_broken=ChainBreakPublic(index=broken.index, reason=broken.reason) if broken else None,
    )


def audit_head(gateway: Gateway) -> AuditHead:
    head = repository.audit_head(gateway.reader)
    return AuditHead(size=head[0] + 1 if head else 0, head_hash=head[1] if head else "0" * 64)


def record_regulator_action(gateway: Gateway, method: str, path: str, status: int, request_id: str | None, now: datetime,
                            operation: str | None = None) -> None:
    """The regulator's own changes go into the same log as the participants' traffic
    (`operation`: what the change was, in words, when the path does not say it)."""
    gateway.audit({"at": iso(now), "request_id": request_id or new_id("req"), "participant_id": "regulator",
                   "method": method, "path": path[:500], "status": status, "latency_us": 0,
                   **({"operation": operation[:200]} if operation is not None else {})})


# -- alerts ------------------------------------------------------------------------------------

def alert_public(row: Alert) -> AlertPublic:
    return AlertPublic(
        id=row.id, created_at=row.created_at, participant_id=row.participant_id, audit_index=row.audit_index,
        request_id=row.request_id, operation=row.operation, decision=row.decision,  # type: ignore[arg-type]
        score=row.score, rules=[RuleHitPublic(**h) for h in json.loads(row.rules)],
        ruleset_version=row.ruleset_version, amount=Money(amount=row.amount, currency=row.currency),
        payer=row.payer, payee=row.payee, status=row.status, assignee=row.assignee,  # type: ignore[arg-type]
        resolution=row.resolution, note=row.note, closed_at=row.closed_at,  # type: ignore[arg-type]
    )


def get_alert(session: Session, alert_id: str) -> Alert:
    row = repository.get_alert(session, alert_id)
    if row is None:
        raise not_found("Alert", alert_id)
    return row


def _open_alert(session: Session, alert_id: str) -> Alert:
    row = get_alert(session, alert_id)
    if row.status == "closed":
        raise Problem(409, "alert-closed", "Alert already closed",
                      f"Alert {alert_id} was closed as {row.resolution}; open a new case instead.")
    return row


def assign_alert(session: Session, alert_id: str, assignee: str) -> AlertPublic:
    row = _open_alert(session, alert_id)
    row.status, row.assignee = "assigned", assignee
    session.add(row)
    record_first(session, CHANGE_BEFORE_LOG)
    return alert_public(row)


def close_alert(session: Session, gateway: Gateway, alert_id: str, resolution: str, note: str | None,
                now: datetime) -> AlertPublic:
    """Close an alert; its `sandbox.alert.closed` event commits with the change."""
    with _events_writing(gateway):  # before the unit's transaction begins (sandbox/gateway/events.py)
        row = _open_alert(session, alert_id)
        row.status, row.resolution, row.note, row.closed_at = "closed", resolution, note, now
        session.add(row)
        public = alert_public(row)
        if gateway.events is not None:
            gateway.events.insert(session, [own_event(
                "sandbox.alert.closed", row.participant_id, row.id, now,
                {"id": row.id, "participant_id": row.participant_id, "status": "closed",
                 "resolution": resolution, "closed_at": now})])
        record_first(session, CHANGE_BEFORE_LOG)
        return public


# -- reports -----------------------------------------------------------------------------------

def activity_report(session: Session, row: Participant, since: datetime, until: datetime,
                    from_idx: int = 0) -> ActivityReport:
    """One participant's traffic over a period, counted from log entry `from_idx` on (the
    current epoch's first: earlier epochs were reset away)."""
    summary = repository.activity_summary(session, row.id, iso(since), iso(until), from_idx)
    alerts = repository.alert_summary(session, row.id, since, until, from_idx)
    return ActivityReport(
        participant_id=row.id, name=row.name, status=row.status, period_from=since, period_to=until,
        requests=summary["requests"], succeeded=summary["succeeded"], refused=summary["refused"],
        failed=summary["failed"], screened=summary["screened"],
        decisions={"approve": summary["approved"], "review": summary["reviewed"], "block": summary["blocked"]},
        volume=Money.of(int(summary["volume_minor"]), REPORTING), customers=summary["customers"],
        limits=_limits(row), limit_breaches=summary["limit_breaches"],
        breaches_by_limit=summary["breaches_by_limit"], rate_limited=summary["rate_limited"],
        errors=summary["errors"], alerts=AlertSummary(**alerts),
        first_request_at=summary["first_at"], last_request_at=summary["last_at"],
    )


def today_activity(session: Session, gateway: Gateway, row: Participant, now: datetime) -> ActivityReport:
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return activity_report(session, row, start, start + timedelta(days=1), gateway.epoch_start)


def exit_report(session: Session, gateway: Gateway, row: Participant, now: datetime) -> ExitReport:
    activity = activity_report(session, row, row.window_from, row.window_to, gateway.epoch_start)
    return ExitReport(**activity.model_dump(), ruleset_version=gateway.rules.version, generated_at=now,
                      audit_head=audit_head(gateway))


def exit_report_csv(report: ExitReport) -> str:
    """One `metric,value` row per figure, flattened: easy to open in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["metric", "value"])

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            writer.writerow([prefix, "" if value is None else value])

    walk("", report.model_dump(mode="json"))
    return out.getvalue()
