"""Every query the credit service makes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlmodel import Session

from services.credit.models import Application, BankConsentLink, Instalment, Loan, Repayment


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
