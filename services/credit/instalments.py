"""Instalments that fall due by credit's clock, collected under the loan's repayment mandate.

On its due date an instalment becomes `due` (event `credit.instalment.due`), and credit debits
what is left of it from the borrower's wallet, through payments, as the lender's debit under the
loan's `repayment_mandate_id`. Collected, it is `paid` (`credit.instalment.paid`); refused for
good (the wallet cannot pay, the mandate is not live), it is `overdue` (`credit.instalment.overdue`)
and collection is tried again once a day, by credit's clock, until it is paid: by a collection or
by a repayment. A wallet that holds part of it is not debited in part; the lender can take a
repayment of what the borrower has.

These are the kit's due work (main.py): they run after every move of the clock and every second.
Each step is a unit of work of its own that moves its row with a conditional update, so two
runners at once, or one after a crash, never collect an instalment twice. The collection is
recorded (a pending repayment) before the debit is sent, and the debit's Idempotency-Key comes
from the instalment row, `{loan_id}-instalment-{n}-attempt-{k}`; `k` changes only after a final
refusal, so a retry after an unknown outcome reuses the key and payments applies it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import anyio
from sqlmodel import Session

from services.common.db import Database
from services.common.duework import DueWork
from services.common.ids import new_id
from services.common.money import Money
from services.common.payments_client import (
    PaymentRefused,
    PaymentsClient,
    PaymentsUnavailable,
)
from services.credit.models import Instalment, Loan, Repayment
from services.credit.repository import (
    InstalmentsRepository,
    LoansRepository,
    RepaymentsRepository,
)
from services.credit.service import apply_to_schedule, record_instalment

log = logging.getLogger("sandbox.credit")

# A collection whose runner has not answered for this long (it crashed) is taken over, same key.
COLLECTION_STALE_AFTER = timedelta(seconds=60)


def collection_key(loan: Loan, instalment: Instalment) -> str:
    return f"{loan.id}-instalment-{instalment.number}-attempt-{instalment.collection_attempt}"


@dataclass(frozen=True)
class Collection:
    """One collection, as recorded before its debit is sent."""

    instalment_id: int
    repayment_id: str
    key: str
    loan_id: str
    participant_id: str | None
    from_account: str
    to_account: str
    mandate_id: str | None
    amount_minor: int
    currency: str
    number: int

    @property
    def amount(self) -> Money:
        return Money.of(self.amount_minor, self.currency)


def mark_fallen_due(session: Session, now: datetime) -> int:
    """scheduled -> due for every instalment whose date has come; each with its event."""
    instalments, loans = InstalmentsRepository(session), LoansRepository(session)
    moved = 0
    for instalment in instalments.fallen_due(now.date()):
        assert instalment.id is not None
        if not instalments.move(instalment.id, "scheduled", "due"):
            continue  # another runner moved it a moment ago
        instalment.status = "due"
        loan = loans.get(instalment.loan_id)
        assert loan is not None
        record_instalment(session, "credit.instalment.due", loan, instalment, now)
        moved += 1
    return moved


def mark_overdue(session: Session, now: datetime) -> int:
    """due -> overdue for every instalment whose collection payments refused; each with its event."""
    instalments, loans = InstalmentsRepository(session), LoansRepository(session)
    moved = 0
    for instalment in instalments.refused_while_due():
        assert instalment.id is not None
        if not instalments.move(instalment.id, "due", "overdue"):
            continue
        instalment.status = "overdue"
        loan = loans.get(instalment.loan_id)
        assert loan is not None
        record_instalment(session, "credit.instalment.overdue", loan, instalment, now)
        moved += 1
    return moved


def claim_collection(session: Session, instalment_id: int, now: datetime) -> Collection | None:
    """The intent: this runner takes the collection and the repayment it will be is written down
    (pending: a repayment asked meanwhile cannot take the same money twice). None: nothing to do."""
    instalments = InstalmentsRepository(session)
    if not instalments.claim_for_collection(instalment_id, now, now.date(), now - COLLECTION_STALE_AFTER):
        return None
    instalment = session.get(Instalment, instalment_id)
    assert instalment is not None
    session.refresh(instalment)
    loan = LoansRepository(session).get(instalment.loan_id)
    assert loan is not None
    key = collection_key(loan, instalment)
    repayments = RepaymentsRepository(session)
    repayment = repayments.by_payments_key(loan.id, key)  # a collection a crashed runner began
    if repayment is None:
        left = instalment.principal_minor + instalment.interest_minor - instalment.paid_minor
        owed = sum(i.principal_minor + i.interest_minor for i in LoansRepository(session).instalments(loan.id))
        amount = min(left, owed - loan.repaid_minor - repayments.pending_minor(loan.id))
        if amount <= 0:  # a repayment in flight covers it: leave it to that one
            instalment.collecting_since = None
            session.add(instalment)
            return None
        repayment = repayments.add(Repayment(
            id=new_id("rep"), loan_id=loan.id, payments_key=key, amount_minor=amount, currency=loan.currency,
            status="pending", created_at=now))
    elif repayment.status != "pending":  # its outcome is recorded (and the attempt moved on)
        instalment.collecting_since = None
        session.add(instalment)
        return None
    return Collection(
        instalment_id=instalment_id, repayment_id=repayment.id, key=key, loan_id=loan.id,
        participant_id=loan.participant_id, from_account=loan.account_id, to_account=loan.lender_account_id,
        mandate_id=loan.repayment_mandate_id, amount_minor=repayment.amount_minor,
        currency=repayment.currency, number=instalment.number)


def record_collected(session: Session, collection: Collection, journal_id: str, now: datetime) -> int:
    """The debit went through: the repayment completes and goes to the schedule (paid events)."""
    if not RepaymentsRepository(session).complete(collection.repayment_id, journal_id):
        return 0  # another runner recorded this same debit (same key, same journal)
    instalment = session.get(Instalment, collection.instalment_id)
    loan = session.get(Loan, collection.loan_id)
    assert instalment is not None and loan is not None
    instalment.collecting_since, instalment.last_attempt_on = None, now.date()
    instalment.collection_attempt += 1  # the key is spent: a later collection of a rest needs a new one
    session.add(instalment)
    apply_to_schedule(session, loan, collection.amount_minor, now)
    return 1


def record_refused(session: Session, collection: Collection, refused: PaymentRefused, today: date) -> None:
    """Payments said no for good: the repayment failed, the next attempt needs a new key, and the
    instalment waits for tomorrow (`mark_overdue` makes a due one overdue)."""
    error = {"status": refused.status, "type": str(refused.problem.get("type", "about:blank")),
             "title": str(refused.problem.get("title", "")), "detail": refused.problem.get("detail")}
    repayment = session.get(Repayment, collection.repayment_id)
    instalment = session.get(Instalment, collection.instalment_id)
    assert repayment is not None and instalment is not None
    if repayment.status != "pending":
        return
    repayment.status, repayment.error = "failed", error
    instalment.collection_attempt += 1
    instalment.collecting_since, instalment.last_attempt_on = None, today
    instalment.last_collection_error = error
    session.add_all([repayment, instalment])


def release(session: Session, collection: Collection) -> None:
    """No answer from payments: the collection is free again, with the same key (it may have
    moved money; the retry finds out without moving it twice)."""
    instalment = session.get(Instalment, collection.instalment_id)
    assert instalment is not None
    instalment.collecting_since = None
    session.add(instalment)


@dataclass
class InstalmentCollector:
    """The three due works, in the order they run: fall due, collect, mark the refused overdue."""

    db: Database
    payments: PaymentsClient

    def due_work(self) -> list[DueWork]:
        return [DueWork("instalments-due", self._in_thread(self.fall_due)),
                DueWork("instalments-collected", self._in_thread(self.collect_due)),
                DueWork("instalments-overdue", self._in_thread(self.go_overdue))]

    @staticmethod
    def _in_thread(work):  # type: ignore[no-untyped-def]
        # Off the event loop: a collection waits on payments through the gateway, which may be
        # served by this very loop (the tests, one process), and a blocked loop would never answer.
        async def run(now: datetime) -> int:
            return await anyio.to_thread.run_sync(work, now)
        return run

    def fall_due(self, now: datetime) -> int:
        return self.db.unit_of_work(lambda session: mark_fallen_due(session, now))

    def go_overdue(self, now: datetime) -> int:
        return self.db.unit_of_work(lambda session: mark_overdue(session, now))

    def collect_due(self, now: datetime) -> int:
        stale_before = now - COLLECTION_STALE_AFTER
        ids = self.db.unit_of_work(lambda session: InstalmentsRepository(session).to_collect(now.date(), stale_before))
        return sum(self.collect(instalment_id, now) for instalment_id in ids)

    def collect(self, instalment_id: int, now: datetime) -> int:
        """One instalment: the intent committed, the debit, then its outcome in a unit of its own."""
        collection = self.db.unit_of_work(lambda session: claim_collection(session, instalment_id, now))
        if collection is None:
            return 0
        try:
            journal = self.payments.transfer(
                from_account=collection.from_account, to_account=collection.to_account, amount=collection.amount,
                description=f"Loan {collection.loan_id} instalment {collection.number}", key=collection.key,
                mandate_id=collection.mandate_id, on_behalf_of=collection.participant_id)
        except PaymentRefused as refused:
            answer = refused  # the lambda runs here, but outlives the name `except` unbinds
            self.db.unit_of_work(lambda session: record_refused(session, collection, answer, now.date()))
            return 0
        except PaymentsUnavailable as down:
            log.warning("collecting %s: %s; tried again with the same key", collection.key, down)
            self.db.unit_of_work(lambda session: release(session, collection))
            return 0
        return self.db.unit_of_work(lambda session: record_collected(session, collection, journal["id"], now))
