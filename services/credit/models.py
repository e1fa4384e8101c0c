"""Tables of the credit database. Money in integer minor units; decisions are never edited."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Column, Date, DateTime, UniqueConstraint
from sqlmodel import Field

from services.common.db import model_base
from services.common.outbox import outbox_table

CreditModel = model_base("CreditModel")
# Decisions, payouts and instalments, recorded with the change that made them (GET /_sandbox/events).
Events = outbox_table(CreditModel.metadata)


# An application and its automated decision, with the inputs exactly as scored.
class Application(CreditModel, table=True):
    __tablename__ = "applications"

    id: str = Field(primary_key=True, max_length=40)
    # The participant that applied through the gateway; null when called directly. Others get 404.
    participant_id: str | None = Field(default=None, max_length=40, index=True)
    applicant_type: str = Field(max_length=12)
    applicant_name: str = Field(max_length=100)
    account_id: str = Field(max_length=40)
    currency: str = Field(max_length=3)
    requested_minor: int = Field(sa_type=BigInteger)
    term_months: int
    data_source: str = Field(max_length=16)
    consent_id: str | None = Field(default=None, max_length=64)
    inputs: dict = Field(sa_column=Column(JSON, nullable=False))  # characteristic -> value string
    # Self-declared, for fairness monitoring only: the scorecard never reads these columns.
    monitoring_sex: str = Field(default="undisclosed", max_length=12)
    monitoring_age_band: str = Field(default="undisclosed", max_length=12)
    model_version: str = Field(max_length=20)
    score: int = Field(index=True)
    band: str = Field(max_length=12)
    probability_of_default: float
    points: list = Field(sa_column=Column(JSON, nullable=False))
    reasons: list = Field(sa_column=Column(JSON, nullable=False))
    outcome: str = Field(max_length=8)
    rule: str = Field(max_length=16)
    risk_tier: str | None = Field(default=None, max_length=2)
    apr_bps: int | None = None
    limit_minor: int | None = Field(default=None, sa_type=BigInteger)
    offered_minor: int | None = Field(default=None, sa_type=BigInteger)
    received_at: datetime = Field(sa_type=DateTime(timezone=True))
    decided_at: datetime = Field(sa_type=DateTime(timezone=True))


# A loan is created approved; `status` moves approved -> disbursing -> disbursed -> repaid, or
# back to approved when a payout fails (no money moved). `payout_attempt` names the payments
# Idempotency-Key: it changes only after a definitive refusal, so a retry after an unknown
# outcome reuses the key and can never pay twice.
class Loan(CreditModel, table=True):
    __tablename__ = "loans"

    id: str = Field(primary_key=True, max_length=40)
    application_id: str = Field(foreign_key="applications.id", unique=True, max_length=40)
    # The application's participant: the owner, and the originator every payments hop names.
    participant_id: str | None = Field(default=None, max_length=40, index=True)
    account_id: str = Field(max_length=40)
    lender_account_id: str = Field(max_length=40)
    # The borrower's owner's mandate to the lender: the authority for debiting `account_id`.
    repayment_mandate_id: str | None = Field(default=None, max_length=40)
    currency: str = Field(max_length=3)
    principal_minor: int = Field(sa_type=BigInteger)
    apr_bps: int
    term_months: int
    status: str = Field(max_length=12, index=True)
    payout_attempt: int = 0
    payout_started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_payout_error: dict | None = Field(default=None, sa_column=Column(JSON))
    disbursement_journal_id: str | None = Field(default=None, max_length=40)
    disbursement_fee_minor: int = Field(default=0, sa_type=BigInteger)
    disbursed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    repaid_minor: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


# `status` moves scheduled -> due (its due date came, by credit's clock) -> paid, or due ->
# overdue when payments refused its collection; a repayment can pay it at any point. Collection
# is a debit under the loan's repayment mandate with the Idempotency-Key
# `{loan_id}-instalment-{number}-attempt-{collection_attempt}`: the attempt number changes only
# after a final refusal, so a retry after an unknown outcome reuses the key and never debits twice.
class Instalment(CreditModel, table=True):
    __tablename__ = "instalments"

    id: int | None = Field(default=None, primary_key=True)
    loan_id: str = Field(foreign_key="loans.id", index=True, max_length=40)
    number: int
    due_date: date = Field(sa_type=Date)
    principal_minor: int = Field(sa_type=BigInteger)
    interest_minor: int = Field(sa_type=BigInteger)
    paid_minor: int = Field(default=0, sa_type=BigInteger)
    status: str = Field(default="scheduled", max_length=10, index=True)  # scheduled | due | paid | overdue
    collection_attempt: int = 0
    # Set while a collection's debit is out (a runner that vanished is taken over after a while).
    collecting_since: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Credit's date of the last collection that got an answer: an overdue one is retried once a day.
    last_attempt_on: date | None = Field(default=None, sa_type=Date)
    # Payments' last refusal of its collection (SQL NULL when there is none: it marks the overdue).
    last_collection_error: dict | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))


# A repayment is recorded (pending) before the transfer is sent, with its own id as the
# payments Idempotency-Key; a client's retry with the same Idempotency-Key finds it again.
class Repayment(CreditModel, table=True):
    __tablename__ = "repayments"
    __table_args__ = (UniqueConstraint("loan_id", "client_key", name="uq_repayment_client_key"),)

    id: str = Field(primary_key=True, max_length=40)
    loan_id: str = Field(foreign_key="loans.id", index=True, max_length=40)
    client_key: str | None = Field(default=None, max_length=255)
    # The Idempotency-Key sent to payments when it is not the repayment's id: an instalment's
    # scheduled collection (`{loan_id}-instalment-{n}-attempt-{k}`).
    payments_key: str | None = Field(default=None, max_length=80, index=True)
    amount_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    status: str = Field(max_length=10)  # pending | completed | failed
    journal_id: str | None = Field(default=None, max_length=40)
    error: dict | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


# A consent credit created at Sandbox Bank: which participant asked for it (the bank sees only
# credit's own registration, so telling one lender's consents from another's is credit's job),
# and the PKCE verifier credit sends with the applicant's code (the bank has only its digest).
class BankConsentLink(CreditModel, table=True):
    __tablename__ = "bank_consents"

    consent_id: str = Field(primary_key=True, max_length=64)
    participant_id: str | None = Field(default=None, max_length=40)
    code_verifier: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
