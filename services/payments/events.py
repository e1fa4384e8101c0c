"""What payments tells the world happened: its domain events, written to its outbox
(`services/common/outbox.py`) in the unit of work of the change they are about.

Whose event it is: the participant owning the resource, for a movement the payer's (for a
top-up or a payout, the wallet's: its other side is the sandbox's own card funding or bank
payout account). When the payee belongs to another participant, that one gets an event too
(`payments.transfer.received`): a wallet provider learns of money arriving without polling.
The gateway's relay shows each participant only the events carrying its id.

`data` is the resource as the API shows it to that participant (the journal's JSON, as its
own GET would answer), so a receiver acts on it without a second call. Each recipient's copy
shows the balances of its own customers' accounts only (`presenters.seen_by`): the payee's
firm never learns the payer's balance, nor the payer's firm the payee's.

A movement's events go in through `fastpath.insert_events` (one prepared statement, next to
the journal's); the rarer ones (a cross-border payment settling or coming back) through the
kit's `record_event`. `PAYMENTS_RECORD_EVENTS=false` turns all of it off for one database, so
the benchmark can measure what the outbox costs (`fintech-sandbox bench payments`).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from services.common.caller import Caller
from services.common.ids import new_id
from services.common.outbox import record_event
from services.payments import fastpath
from services.payments.fastpath import AccountRef
from services.payments.models import Account, Events
from services.payments.presenters import seen_by
from services.payments.schemas import JournalPublic

# Databases whose service was started with PAYMENTS_RECORD_EVENTS=false (the benchmark's "without").
_NOT_RECORDING: weakref.WeakSet[Engine] = weakref.WeakSet()


def stop_recording(engine: Engine) -> None:
    """This database's service records no events (PAYMENTS_RECORD_EVENTS=false)."""
    _NOT_RECORDING.add(engine)


def recording(session: Session) -> bool:
    return not _NOT_RECORDING or session.get_bind() not in _NOT_RECORDING


def _as_seen_by(movement: JournalPublic, participant_id: str | None,
                accounts: Mapping[str, Account | AccountRef]) -> JournalPublic:
    return seen_by(movement, Caller(participant_id), accounts) if participant_id else movement


def movement_events(session: Session, resource: str, movement: JournalPublic, now: datetime,
                    accounts: Mapping[str, Account | AccountRef], owner: str | None,
                    payee_owner: str | None = None) -> None:
    """`payments.<resource>.completed` for the owner of the money that moved, and
    `payments.<resource>.received` for the payee's participant when it is another one, each
    with the movement as that participant may see it."""
    if not recording(session):
        return
    rows = [fastpath.NewEvent(new_id("evt"), f"payments.{resource}.completed", owner, movement.id, now,
                              _as_seen_by(movement, owner, accounts).model_dump_json())]
    if payee_owner is not None and payee_owner != owner:
        rows.append(fastpath.NewEvent(new_id("evt"), f"payments.{resource}.received", payee_owner, movement.id,
                                      now, _as_seen_by(movement, payee_owner, accounts).model_dump_json()))
    fastpath.insert_events(session, rows)


def cross_border_event(session: Session, what: str, payment: JournalPublic, now: datetime,
                       accounts: Mapping[str, Account | AccountRef], owner: str | None,
                       payee_owner: str | None = None) -> None:
    """`payments.cross_border.<what>` (pending, settled, returned) for the payer's participant;
    on settlement also `payments.cross_border.received` for the payee's, when it is another."""
    if not recording(session):
        return
    record_event(session, Events, f"payments.cross_border.{what}", subject_id=payment.id,
                 participant_id=owner, occurred_at=now,
                 data=json.loads(_as_seen_by(payment, owner, accounts).model_dump_json()))
    if what == "settled" and payee_owner is not None and payee_owner != owner:
        record_event(session, Events, "payments.cross_border.received", subject_id=payment.id,
                     participant_id=payee_owner, occurred_at=now,
                     data=json.loads(_as_seen_by(payment, payee_owner, accounts).model_dump_json()))
