"""Every query the credit service makes."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import func, or_, select, update
from sqlmodel import Session

from services.credit.models import (
    Application,
    BankConsentLink,
    Instalment,
    Loan,
    Repayment,
)


class ApplicationsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, application: Application) -> Application:
        self.session.add(application)
        self.session.flush()
        return application

    def get(self, application_id: str) -> Application | None:
        return self.session.get(Application, application_id)

    def list(self, limit: int, after: str | None, participant_id: str | None = None) -> list[Application]:
        """A page of applications; only those `participant_id` made when it is given."""
        query = select(Application).order_by(Application.id).limit(limit + 1)
        if after:
            query = query.where(Application.id > after)
        if participant_id:
            query = query.where(Application.participant_id == participant_id)
        return list(self.session.execute(query).scalars())

    def recent(self, limit: int, participant_id: str | None = None) -> list[Application]:
        query = select(Application).order_by(Application.id.desc()).limit(limit)
        if participant_id:
            query = query.where(Application.participant_id == participant_id)
        return list(self.session.execute(query).scalars())


class LoansRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, loan: Loan) -> Loan:
        self.session.add(loan)
        self.session.flush()
        return loan

    def get(self, loan_id: str) -> Loan | None:
        return self.session.get(Loan, loan_id)

    def of_application(self, application_id: str) -> Loan | None:
        return self.session.execute(
            select(Loan).where(Loan.application_id == application_id)
        ).scalar_one_or_none()

    def outstanding_minor(self, account_id: str, currency: str) -> int:
        """What the borrower paid into `account_id` still owes (principal less repaid), over
        every loan not yet repaid, approved ones not yet paid out included."""
        owed = select(func.coalesce(func.sum(Loan.principal_minor - Loan.repaid_minor), 0)).where(
            Loan.account_id == account_id, Loan.currency == currency,
            Loan.status.in_(("approved", "disbursing", "disbursed")))
        return int(self.session.execute(owed).scalar_one())

    def claim_for_payout(self, loan_id: str, now: datetime, stale_before: datetime) -> bool:
        """approved -> disbursing, or take over a payout whose worker vanished; one winner."""
        result = self.session.execute(
            update(Loan)
            .where(
                Loan.id == loan_id,
                or_(
                    Loan.status == "approved",
                    (Loan.status == "disbursing") & (Loan.payout_started_at < stale_before),
                ),
            )
            .values(status="disbursing", payout_started_at=now)
        )
        return result.rowcount == 1

    def instalments(self, loan_id: str) -> list[Instalment]:
        query = select(Instalment).where(Instalment.loan_id == loan_id).order_by(Instalment.number)
        return list(self.session.execute(query).scalars())

    def add_instalments(self, instalments: list[Instalment]) -> None:
        self.session.add_all(instalments)
        self.session.flush()


class InstalmentsRepository:
    """The queries of instalments falling due and their collection: each move is a conditional
    update, so two runners at once find one winner."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def fallen_due(self, today: date) -> list[Instalment]:
        """Scheduled instalments of disbursed loans whose due date has come."""
        query = (select(Instalment).join(Loan, Loan.id == Instalment.loan_id)
                 .where(Instalment.status == "scheduled", Instalment.due_date <= today, Loan.status == "disbursed")
                 .order_by(Instalment.due_date, Instalment.id))
        return list(self.session.execute(query).scalars())

    def move(self, instalment_id: int, before: str, after: str) -> bool:
        """`before` -> `after`, if it still is `before`."""
        result = self.session.execute(update(Instalment).where(
            Instalment.id == instalment_id, Instalment.status == before).values(status=after))
        return result.rowcount == 1

    def to_collect(self, today: date, stale_before: datetime) -> list[int]:
        """Due or overdue instalments of disbursed loans not yet tried today, nobody collecting them."""
        query = (select(Instalment.id).join(Loan, Loan.id == Instalment.loan_id)
                 .where(Instalment.status.in_(("due", "overdue")), Loan.status == "disbursed",
                        or_(Instalment.last_attempt_on.is_(None), Instalment.last_attempt_on < today),
                        or_(Instalment.collecting_since.is_(None), Instalment.collecting_since < stale_before))
                 .order_by(Instalment.due_date, Instalment.id))
        return list(self.session.execute(query).scalars())

    def claim_for_collection(self, instalment_id: int, now: datetime, today: date, stale_before: datetime) -> bool:
        """Take the instalment's collection for this runner, or take over one whose runner vanished."""
        result = self.session.execute(update(Instalment).where(
            Instalment.id == instalment_id, Instalment.status.in_(("due", "overdue")),
            or_(Instalment.last_attempt_on.is_(None), Instalment.last_attempt_on < today),
            or_(Instalment.collecting_since.is_(None), Instalment.collecting_since < stale_before),
        ).values(collecting_since=now))
        return result.rowcount == 1

    def refused_while_due(self) -> list[Instalment]:
        """Due instalments whose collection payments refused: they are overdue."""
        query = (select(Instalment).where(Instalment.status == "due", Instalment.last_collection_error.is_not(None))
                 .order_by(Instalment.due_date, Instalment.id))
        return list(self.session.execute(query).scalars())


class RepaymentsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, repayment: Repayment) -> Repayment:
        self.session.add(repayment)
        self.session.flush()
        return repayment

    def by_client_key(self, loan_id: str, key: str) -> Repayment | None:
        return self.session.execute(
            select(Repayment).where(Repayment.loan_id == loan_id, Repayment.client_key == key)
        ).scalar_one_or_none()

    def by_payments_key(self, loan_id: str, key: str) -> Repayment | None:
        return self.session.execute(
            select(Repayment).where(Repayment.loan_id == loan_id, Repayment.payments_key == key)
        ).scalar_one_or_none()

    def complete(self, repayment_id: str, journal_id: str) -> bool:
        """pending -> completed with its journal, once: a second runner's answer changes nothing."""
        result = self.session.execute(update(Repayment).where(
            Repayment.id == repayment_id, Repayment.status == "pending").values(status="completed", journal_id=journal_id))
        return result.rowcount == 1

    def completed(self, loan_id: str) -> list[Repayment]:
        query = (
            select(Repayment)
            .where(Repayment.loan_id == loan_id, Repayment.status == "completed")
            .order_by(Repayment.id)
        )
        return list(self.session.execute(query).scalars())

    def pending_minor(self, loan_id: str) -> int:
        query = select(Repayment).where(Repayment.loan_id == loan_id, Repayment.status == "pending")
        return sum(r.amount_minor for r in self.session.execute(query).scalars())


class BankConsentLinksRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, link: BankConsentLink) -> None:
        self.session.add(link)
        self.session.flush()

    def get(self, consent_id: str) -> BankConsentLink | None:
        return self.session.get(BankConsentLink, consent_id)
