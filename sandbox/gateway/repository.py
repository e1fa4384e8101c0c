"""Every query the gateway makes against its own database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, Select, Table, and_, case, delete, exists, func, insert, or_, select, true
from sqlmodel import Session

from sandbox.gateway.events import EventStore, own_event
from sandbox.gateway.models import Alert, AuditEntry, Participant
from services.common.prepared import Prepared

AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]
ALERTS = Alert.__table__  # type: ignore[attr-defined]


# What the log's `counts` column says an accepted movement counts toward (NULL: both).
COUNTS_FOR_LIMITS = (None, "limits")
COUNTS_FOR_HISTORY = (None, "history")


def _counts_in(allowed: tuple[str | None, ...]) -> Any:
    named = [v for v in allowed if v is not None]
    return or_(AUDIT.c.counts.is_(None), AUDIT.c.counts.in_(named)) if None in allowed else AUDIT.c.counts.in_(named)


# -- participants ------------------------------------------------------------------------------

def all_participants(session: Session) -> list[Participant]:
    return list(session.execute(select(Participant).order_by(Participant.id)).scalars())


def participant_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Participant)).scalar_one()


def get_participant(session: Session, participant_id: str) -> Participant | None:
    return session.get(Participant, participant_id)


def delete_participants(session: Session) -> int:
    """Every participant gone (the sandbox's reset seeds the demo set again); how many there were."""
    return session.execute(delete(Participant)).rowcount


def list_participants(session: Session, limit: int, after: str | None, status: str | None) -> list[Participant]:
    query = select(Participant).order_by(Participant.id).limit(limit + 1)
    if after:
        query = query.where(Participant.id > after)
    if status:
        query = query.where(Participant.status == status)
    return list(session.execute(query).scalars())


# -- audit log ---------------------------------------------------------------------------------

def audit_head(engine: Engine) -> tuple[int, str] | None:
    with engine.connect() as conn:
        row = conn.execute(select(AUDIT.c.idx, AUDIT.c.hash).order_by(AUDIT.c.idx.desc()).limit(1)).first()
    return (row.idx, row.hash) if row else None


@lru_cache(maxsize=64)
def _insert(table: Table, keys: tuple[str, ...]) -> Prepared:
    """An INSERT of these columns, compiled once (the log's append is on every request)."""
    return Prepared(insert(table).inline(), list(keys))


def append_audit(engine: Engine, entry: dict[str, Any], alert: dict[str, Any] | None,
                 events: EventStore | None = None) -> None:
    """One short transaction of its own: `insert_audit` (the offline reset's; the gateway's
    appends catch up with other replicas under the log lock first, `Gateway.audit`)."""
    with engine.begin() as conn:
        insert_audit(conn, entry, alert, events)


def insert_audit(conn: Any, entry: dict[str, Any], alert: dict[str, Any] | None,
                 events: EventStore | None = None) -> None:
    """The entry, and the alert it opened if any with its `sandbox.alert.opened` event
    (`events`, whose lock the caller holds), in the caller's transaction."""
    _insert(AUDIT, tuple(entry)).execute(conn, entry).close()
    if alert is not None:
        _insert(ALERTS, tuple(alert)).execute(conn, alert).close()
        if events is not None:
            events.insert(conn, [alert_opened_event(alert)])


def alert_opened_event(alert: dict[str, Any]) -> dict[str, Any]:
    data = {key: alert[key] for key in ("id", "participant_id", "audit_index", "request_id", "operation",
                                        "decision", "score", "ruleset_version", "status", "created_at")}
    data["rules"] = [hit["rule"] for hit in json.loads(alert["rules"])]
    data["amount"] = {"amount": alert["amount"], "currency": alert["currency"]}
    return own_event("sandbox.alert.opened", alert["participant_id"], alert["id"], alert["created_at"], data)


# `up_to`: the log as of an index (start-up reads the head first, then everything up to it, so
# what other replicas append meanwhile is caught up after, never counted twice).
NO_LIMIT = 2**62


def last_reset(engine: Engine, up_to: int = NO_LIMIT) -> tuple[int, int] | None:
    """(index, epoch) of the latest `reset` entry: the current epoch counts from that index on."""
    query = (select(AUDIT.c.idx, AUDIT.c.epoch).where(AUDIT.c.phase == "reset", AUDIT.c.idx <= up_to)
             .order_by(AUDIT.c.idx.desc()).limit(1))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return (row.idx, row.epoch) if row else None


def audit_rows(engine: Engine, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """The whole log in index order, a batch at a time (for verification)."""
    after = -1
    while True:
        with engine.connect() as conn:
            rows = conn.execute(select(AUDIT).where(AUDIT.c.idx > after).order_by(AUDIT.c.idx).limit(batch)).mappings().all()
        if not rows:
            return
        for row in rows:
            yield dict(row)
        after = rows[-1]["idx"]


def clock_moves(engine: Engine, from_idx: int, up_to: int) -> list[str]:
    """The regulator's clock moves logged in the epoch from `from_idx` (their `operation`s)."""
    query = (select(AUDIT.c.operation)
             .where(AUDIT.c.idx >= from_idx, AUDIT.c.idx <= up_to, AUDIT.c.participant_id == "regulator",
                    AUDIT.c.status == 200, AUDIT.c.operation.like("advance_%clock +%"))
             .order_by(AUDIT.c.idx))
    with engine.connect() as conn:
        return [row.operation for row in conn.execute(query)]


def accepted_money_movements(engine: Engine, since_iso: str, from_idx: int = 0, up_to: int = NO_LIMIT) -> list[Any]:
    """Screened requests the services accepted since a time, in the epoch that starts at
    `from_idx`: to rebuild screening history and today's volumes (`counts` says which of the
    two each one counts toward)."""
    query = (select(AUDIT.c.at, AUDIT.c.participant_id, AUDIT.c.value_minor, AUDIT.c.payer,
                    AUDIT.c.payee, AUDIT.c.customer, AUDIT.c.counts)
             .where(AUDIT.c.idx >= from_idx, AUDIT.c.idx <= up_to, AUDIT.c.at >= since_iso,
                    AUDIT.c.value_minor.is_not(None), AUDIT.c.status >= 200, AUDIT.c.status < 300)
             .order_by(AUDIT.c.idx))
    with engine.connect() as conn:
        return list(conn.execute(query))


CLOSING_PHASES = ("outcome", "reconciled")  # an intent followed by one of these is settled


def money_intents(engine: Engine, since_iso: str, from_idx: int = 0, up_to: int = NO_LIMIT) -> list[Any]:
    """Intents logged since a time, and every intent still open whenever it was logged, each with
    the status of the entry that closed it (NULL: still open); in the epoch from `from_idx` (a
    reset waits until none is open)."""
    closing = AUDIT.alias("closing")
    closed_by = and_(closing.c.intent_idx == AUDIT.c.idx, closing.c.phase.in_(CLOSING_PHASES), closing.c.idx <= up_to)
    closed_status = select(closing.c.status).where(closed_by).order_by(closing.c.idx).limit(1).scalar_subquery()
    query = (select(AUDIT.c.idx, AUDIT.c.at, AUDIT.c.request_id, AUDIT.c.participant_id, AUDIT.c.via,
                    AUDIT.c.method, AUDIT.c.path, AUDIT.c.service, AUDIT.c.operation, AUDIT.c.decision,
                    AUDIT.c.score, AUDIT.c.rules, AUDIT.c.ruleset_version, AUDIT.c.amount, AUDIT.c.currency,
                    AUDIT.c.value_minor, AUDIT.c.payer, AUDIT.c.payee, AUDIT.c.customer, AUDIT.c.card_last4,
                    AUDIT.c.alert_id, AUDIT.c.counts, AUDIT.c.idempotency_key, AUDIT.c.fingerprint,
                    AUDIT.c.deadline_ms, closed_status.label("closed_status"))
             .where(AUDIT.c.idx >= from_idx, AUDIT.c.idx <= up_to, AUDIT.c.phase == "intent",
                    or_(AUDIT.c.at >= since_iso, ~exists().where(closed_by)))
             .order_by(AUDIT.c.idx))
    with engine.connect() as conn:
        return list(conn.execute(query))


def customers_by_participant(engine: Engine, from_idx: int = 0, up_to: int = NO_LIMIT) -> list[Any]:
    query = (select(AUDIT.c.participant_id, AUDIT.c.customer)
             .where(AUDIT.c.idx >= from_idx, AUDIT.c.idx <= up_to, AUDIT.c.customer.is_not(None), AUDIT.c.value_minor.is_not(None),
                    AUDIT.c.status >= 200, AUDIT.c.status < 300, _counts_in(COUNTS_FOR_LIMITS))
             .group_by(AUDIT.c.participant_id, AUDIT.c.customer))
    with engine.connect() as conn:
        return list(conn.execute(query))


def list_audit(session: Session, limit: int, after: int | None, filters: dict[str, Any]) -> list[AuditEntry]:
    query: Select = select(AuditEntry).order_by(AuditEntry.idx).limit(limit + 1)
    if after is not None:
        query = query.where(AuditEntry.idx > after)
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(AuditEntry, name) == value)
    return list(session.execute(query).scalars())


def get_audit(session: Session, idx: int) -> AuditEntry | None:
    return session.get(AuditEntry, idx)


def activity_summary(session: Session, participant_id: str, since_iso: str | None = None,
                     until_iso: str | None = None, from_idx: int = 0) -> dict[str, Any]:
    """Counts and volumes of one participant's traffic over a period, in one query; only the
    entries of the epoch that starts at `from_idx`."""
    a = AUDIT.c
    ok = and_(a.status >= 200, a.status < 300)
    counted = and_(ok, a.value_minor.is_not(None), _counts_in(COUNTS_FOR_LIMITS))  # what the limits count
    # One request is one entry: its intent (written ahead) and a later reconciliation are not
    # requests of their own, though a reconciled movement counts toward the volume.
    request = or_(a.phase.is_(None), a.phase.in_(("outcome", "unanswered")))
    conditions = [a.participant_id == participant_id, a.idx >= from_idx]
    if since_iso:
        conditions.append(a.at >= since_iso)
    if until_iso:
        conditions.append(a.at < until_iso)

    def count_if(cond: Any) -> Any:
        return func.coalesce(func.sum(case((and_(request, cond), 1), else_=0)), 0)

    query = select(
        count_if(true()).label("requests"),
        count_if(ok).label("succeeded"),
        count_if(and_(a.status >= 400, a.status < 500)).label("refused"),
        count_if(a.status >= 500).label("failed"),
        count_if(a.value_minor.is_not(None)).label("screened"),
        count_if(a.decision == "approve").label("approved"),
        count_if(a.decision == "review").label("reviewed"),
        count_if(a.decision == "block").label("blocked"),
        count_if(a.limit_name.is_not(None)).label("limit_breaches"),
        count_if(a.status == 429).label("rate_limited"),
        count_if(a.error.is_not(None)).label("errors"),
        func.coalesce(func.sum(case((counted, a.value_minor), else_=0)), 0).label("volume_minor"),
        func.count(func.distinct(case((counted, a.customer), else_=None))).label("customers"),
        func.min(a.at).label("first_at"),
        func.max(a.at).label("last_at"),
    ).where(*conditions)
    row = session.execute(query).mappings().one()
    breaches = session.execute(
        select(a.limit_name, func.count()).where(*conditions, a.limit_name.is_not(None)).group_by(a.limit_name)
    ).all()
    return {**dict(row), "breaches_by_limit": {name: n for name, n in breaches}}


# -- alerts --------------------------------------------------------------------------------

def list_alerts(session: Session, limit: int, after: str | None, status: str | None,
                participant_id: str | None, from_idx: int = 0) -> list[Alert]:
    query = select(Alert).where(Alert.audit_index >= from_idx).order_by(Alert.id).limit(limit + 1)
    if after:
        query = query.where(Alert.id > after)
    if status:
        query = query.where(Alert.status == status)
    if participant_id:
        query = query.where(Alert.participant_id == participant_id)
    return list(session.execute(query).scalars())


def get_alert(session: Session, alert_id: str) -> Alert | None:
    return session.get(Alert, alert_id)


def alert_summary(session: Session, participant_id: str, since: Any = None, until: Any = None,
                  from_idx: int = 0) -> dict[str, int]:
    query = select(Alert.status, Alert.resolution, func.count()).where(
        Alert.participant_id == participant_id, Alert.audit_index >= from_idx)
    if since is not None:
        query = query.where(Alert.created_at >= since)
    if until is not None:
        query = query.where(Alert.created_at < until)
    summary = {"opened": 0, "open": 0, "assigned": 0, "closed": 0,
               "false_positive": 0, "suspicious": 0, "reported": 0}
    for status, resolution, n in session.execute(query.group_by(Alert.status, Alert.resolution)):
        summary["opened"] += n
        summary[status] += n
        if resolution:
            summary[resolution] += n
    return summary
