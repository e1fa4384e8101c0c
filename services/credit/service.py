"""The credit rules: score, decide, disburse through payments, schedule, take repayments, monitor.
Consents and the bank's errors live in consents.py.

Cross-service money movement records its intent first and sends an Idempotency-Key derived from
our own row, so a retry can never pay twice; the database is never locked during a remote call.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from statistics import mean, pstdev
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session

from services.common.caller import Caller
from services.common.db import record_first
from services.common.ids import new_id
from services.common.money import Money, to_minor
from services.common.outbox import record_event
from services.common.payments_client import (
    PaymentRefused,
    PaymentsClient,
    PaymentsUnavailable,
)
from services.common.problems import Problem, not_found
from services.credit import monitoring, policy
from services.credit.bank import SandboxBank
from services.credit.consents import (
    consent_link,
    no_such_consent,
    owner_of,
    pull_transactions,
)
from services.credit.models import Application, Events, Instalment, Loan, Repayment
from services.credit.repository import (
    ApplicationsRepository,
    LoansRepository,
    RepaymentsRepository,
)
from services.credit.schedule import equal_instalments
from services.credit.schemas import (
    ApplicationCreate,
    ApplicationPublic,
    AttributeFairness,
    CollectionError,
    DecisionPublic,
    DisbursementPublic,
    FairnessReport,
    GroupFairness,
    InlineCashFlow,
    InstalmentPublic,
    LoanPublic,
    PayoutError,
    PointsLine,
    PsiBin,
    ReasonPublic,
    Records,
    RepaymentCreate,
    RepaymentPublic,
    ScorePublic,
    StabilityPublic,
    Timings,
)
from services.credit.scorecard import Scorecard, Scored

PAYOUT_STALE_AFTER = timedelta(seconds=60)
RECENT_APPLICATIONS = 500
FLOW_MONTHS = 12


# --- events ----------------------------------------------------------------------------------

def record(session: Session, type: str, subject_id: str, owner: str | None, now: datetime,
           resource: BaseModel | dict[str, Any]) -> None:
    """An event in the caller's unit of work: the resource as the API shows it, for its owner."""
    data = resource.model_dump(mode="json") if isinstance(resource, BaseModel) else resource
    record_event(session, Events, type, subject_id=subject_id, participant_id=owner, occurred_at=now, data=data)


# --- scoring ---------------------------------------------------------------------------------

def _check_currency(card: Scorecard, *amounts: Any) -> None:
    expected = card.policy["currency"]
    for amount in amounts:
        if amount is not None and amount.currency != expected:
            raise Problem(
                409, "currency-not-supported", "Currency not supported",
                f"This scorecard lends and scores in {expected}; got {amount.currency}.",
                supported_currency=expected,
            )


def scorecard_inputs(inflow_minor: int, volatility_pct: int, records: Records) -> dict[str, Decimal | None]:
    """The scorecard's inputs and nothing else: no protected attribute can reach the model."""
    debt_minor = records.existing_monthly_debt_payments.minor if records.existing_monthly_debt_payments else 0
    if inflow_minor > 0:
        debt_ratio = min(Decimal(debt_minor) * 100 / Decimal(inflow_minor), Decimal(999))
    else:
        debt_ratio = Decimal(999 if debt_minor else 0)
    return {
        "monthly_inflow": Decimal(inflow_minor).scaleb(-2),
        "inflow_volatility_pct": Decimal(volatility_pct),
        "months_in_business": Decimal(records.months_in_business),
        "tax_filings_on_time_pct": _dec(records.tax_filings_on_time_pct),
        "utility_bills_on_time_pct": _dec(records.utility_bills_on_time_pct),
        "customer_rating": _dec(records.customer_rating),
        "debt_service_ratio_pct": debt_ratio.quantize(Decimal("0.1")),
    }


def _dec(value: float | int | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def score_public(card: Scorecard, scored: Scored) -> ScorePublic:
    return ScorePublic(
        model_version=card.version,
        score=scored.score,
        score_range=[card.score_min, card.score_max],
        band=scored.band,
        probability_of_default=round(scored.probability_of_default, 4),
        points=[
            PointsLine(
                characteristic=line.characteristic.name,
                value=None if line.value is None else str(line.value),
                bin=line.bin.label,
                points=line.points,
                max_points=line.characteristic.max_points,
            )
            for line in scored.lines
        ],
        reasons=[ReasonPublic(**vars(r)) for r in scored.reasons()],
    )


def what_if(card: Scorecard, cash_flow: InlineCashFlow, records: Records) -> ScorePublic:
    _check_currency(card, cash_flow.monthly_inflow, records.existing_monthly_debt_payments)
    inputs = scorecard_inputs(cash_flow.monthly_inflow.minor, cash_flow.inflow_volatility_pct, records)
    return score_public(card, card.score(inputs))


def flow_from_transactions(transactions: list[dict[str, Any]], now: datetime, currency: str) -> tuple[int, int]:
    """Average monthly inflow (minor units) and its coefficient of variation (%) over 12 months."""
    start = now - timedelta(days=365)
    by_month: dict[str, int] = defaultdict(int)
    for tx in transactions:
        if tx.get("CreditDebitIndicator") != "Credit" or tx.get("Status", "Booked") != "Booked":
            continue
        amount = tx.get("Amount") or {}
        if amount.get("Currency") != currency:
            continue
        booked = datetime.fromisoformat(str(tx.get("BookingDateTime")).replace("Z", "+00:00"))
        if booked.tzinfo is None:
            booked = booked.replace(tzinfo=now.tzinfo)
        if start <= booked <= now:
            by_month[booked.strftime("%Y-%m")] += to_minor(str(amount.get("Amount", "0")), currency)
    if not by_month:
        return 0, 0
    months = [by_month.get(m, 0) for m in sorted(by_month)]
    average = mean(months)
    volatility = round(100 * pstdev(months) / average) if average else 0
    return int(average), int(volatility)


def _cash_flow(
    session: Session, card: Scorecard, bank: SandboxBank, body: ApplicationCreate, now: datetime, caller: Caller
) -> tuple[int, int]:
    flow = body.cash_flow
    if isinstance(flow, InlineCashFlow):
        return flow.monthly_inflow.minor, flow.inflow_volatility_pct
    link = consent_link(session, flow.consent_id, caller, no_such_consent)
    transactions = pull_transactions(bank, flow, now, link.code_verifier if link else None)
    return flow_from_transactions(transactions, now, card.policy["currency"])


# --- applications ----------------------------------------------------------------------------

def apply(
    session: Session, card: Scorecard, bank: SandboxBank, body: ApplicationCreate,
    received_at: datetime, clock: Any, lender_account_id: str, caller: Caller,
) -> ApplicationPublic:
    inflow = body.cash_flow.monthly_inflow if isinstance(body.cash_flow, InlineCashFlow) else None
    _check_currency(card, body.requested_amount, inflow, body.records.existing_monthly_debt_payments)
    owner = owner_of(caller)
    currency = body.requested_amount.currency
    inflow_minor, volatility = _cash_flow(session, card, bank.acting_for(owner), body, received_at, caller)
    inputs = scorecard_inputs(inflow_minor, volatility, body.records)
    scored = card.score(inputs)
    decision = policy.decide(
        card, scored, applicant_type=body.applicant_type, applicant_name=body.applicant_name,
        monthly_inflow_minor=inflow_minor, requested_minor=body.requested_amount.minor, currency=currency,
        outstanding_minor=LoansRepository(session).outstanding_minor(body.account_id, currency),
    )
    decided_at = clock.now()
    monitoring_data = body.monitoring
    application = ApplicationsRepository(session).add(Application(
        id=new_id("app"),
        participant_id=owner,
        applicant_type=body.applicant_type,
        applicant_name=body.applicant_name,
        account_id=body.account_id,
        currency=currency,
        requested_minor=body.requested_amount.minor,
        term_months=body.term_months,
        data_source=body.cash_flow.source,
        consent_id=getattr(body.cash_flow, "consent_id", None),
        inputs={k: None if v is None else str(v) for k, v in inputs.items()},
        monitoring_sex=monitoring_data.sex if monitoring_data else "undisclosed",
        monitoring_age_band=monitoring_data.age_band if monitoring_data else "undisclosed",
        model_version=card.version,
        score=scored.score,
        band=scored.band,
        probability_of_default=round(scored.probability_of_default, 6),
        points=[line.model_dump() for line in score_public(card, scored).points],
        reasons=[vars(r) for r in scored.reasons()],
        outcome=decision.outcome,
        rule=decision.rule,
        risk_tier=decision.risk_tier,
        apr_bps=decision.apr_bps,
        limit_minor=decision.limit_minor,
        offered_minor=decision.offered_minor,
        received_at=received_at,
        decided_at=decided_at,
    ))
    loan = None
    if decision.outcome == "approve" and decision.offered_minor:
        loan = LoansRepository(session).add(Loan(
            id=new_id("loan"),
            application_id=application.id,
            participant_id=owner,
            account_id=body.account_id,
            lender_account_id=lender_account_id,
            repayment_mandate_id=body.repayment_mandate_id,
            currency=currency,
            principal_minor=decision.offered_minor,
            apr_bps=decision.apr_bps or 0,
            term_months=body.term_months,
            status="approved",
            created_at=decided_at,
        ))
    public = application_public(card, application, loan)
    record(session, "credit.application.decided", application.id, owner, decided_at, public)
    return public


def _apr(bps: int | None) -> str | None:
    return None if bps is None else f"{Decimal(bps).scaleb(-2):.2f}"


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; they were stored in UTC.
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def _ms(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds() * 1000, 3)


def _timings(application: Application, loan: Loan | None) -> Timings:
    disbursed = _aware(loan.disbursed_at) if loan else None
    received, decided = _aware(application.received_at), _aware(application.decided_at)
    assert received is not None and decided is not None
    return Timings(
        received_at=received,
        decided_at=decided,
        disbursed_at=disbursed,
        decision_ms=_ms(received, decided) or 0.0,
        received_to_disbursed_ms=_ms(received, disbursed),
    )


def application_public(card: Scorecard, application: Application, loan: Loan | None) -> ApplicationPublic:
    ccy = application.currency
    money = lambda minor: None if minor is None else Money.of(minor, ccy)
    return ApplicationPublic(
        id=application.id,
        participant_id=application.participant_id,
        applicant_type=application.applicant_type,  # type: ignore[arg-type]
        applicant_name=application.applicant_name,
        account_id=application.account_id,
        requested_amount=Money.of(application.requested_minor, ccy),
        term_months=application.term_months,
        data_source=application.data_source,  # type: ignore[arg-type]
        score=ScorePublic(
            model_version=application.model_version,
            score=application.score,
            score_range=[card.score_min, card.score_max],
            band=application.band,
            probability_of_default=round(application.probability_of_default, 4),
            points=[PointsLine(**p) for p in application.points],
            reasons=[ReasonPublic(**r) for r in application.reasons],
        ),
        decision=DecisionPublic(
            outcome=application.outcome,  # type: ignore[arg-type]
            rule=application.rule,  # type: ignore[arg-type]
            risk_tier=application.risk_tier,
            apr_percent=_apr(application.apr_bps),
            limit=money(application.limit_minor),
            amount_offered=money(application.offered_minor),
        ),
        loan_id=loan.id if loan else None,
        timings=_timings(application, loan),
    )


def get_application(session: Session, card: Scorecard, application_id: str, caller: Caller) -> ApplicationPublic:
    """The application, if this caller may see it; another participant's is "not found"."""
    application = ApplicationsRepository(session).get(application_id)
    if application is None or not caller.may_use(application.participant_id):
        raise not_found("Application", application_id)
    return application_public(card, application, LoansRepository(session).of_application(application.id))


def list_applications(
    session: Session, card: Scorecard, limit: int, after: str | None, caller: Caller
) -> list[ApplicationPublic]:
    """Every application for a direct caller; a participant's own for a participant."""
    loans = LoansRepository(session)
    return [
        application_public(card, a, loans.of_application(a.id))
        for a in ApplicationsRepository(session).list(limit, after, owner_of(caller))
    ]


# --- loans -----------------------------------------------------------------------------------

def _get_loan(session: Session, loan_id: str, caller: Caller) -> Loan:
    """The loan, if this caller may use it; another participant's is "not found"."""
    loan = LoansRepository(session).get(loan_id)
    if loan is None or not caller.may_use(loan.participant_id):
        raise not_found("Loan", loan_id)
    return loan


def loan_public(session: Session, loan: Loan) -> LoanPublic:
    ccy = loan.currency
    loans = LoansRepository(session)
    instalments = loans.instalments(loan.id)
    total_due = sum(i.principal_minor + i.interest_minor for i in instalments) or loan.principal_minor
    application = ApplicationsRepository(session).get(loan.application_id)
    assert application is not None
    error = loan.last_payout_error
    return LoanPublic(
        id=loan.id,
        application_id=loan.application_id,
        participant_id=loan.participant_id,
        status=loan.status,  # type: ignore[arg-type]
        account_id=loan.account_id,
        lender_account_id=loan.lender_account_id,
        repayment_mandate_id=loan.repayment_mandate_id,
        principal=Money.of(loan.principal_minor, ccy),
        apr_percent=_apr(loan.apr_bps) or "0.00",
        term_months=loan.term_months,
        disbursement=None if loan.disbursement_journal_id is None else DisbursementPublic(
            journal_id=loan.disbursement_journal_id,
            amount=Money.of(loan.principal_minor, ccy),
            fee_charged_by_payments=Money.of(loan.disbursement_fee_minor, ccy),
            disbursed_at=_aware(loan.disbursed_at),  # type: ignore[arg-type]
        ),
        last_payout_error=PayoutError(**error) if error else None,
        schedule=[instalment_public(i, ccy) for i in instalments],
        repaid=Money.of(loan.repaid_minor, ccy),
        outstanding=Money.of(total_due - loan.repaid_minor, ccy),
        repayments=[_repayment_public(r) for r in RepaymentsRepository(session).completed(loan.id)],
        timings=_timings(application, loan),
    )


def instalment_public(instalment: Instalment, currency: str) -> InstalmentPublic:
    i, error = instalment, instalment.last_collection_error
    return InstalmentPublic(
        number=i.number,
        due_date=i.due_date,
        principal=Money.of(i.principal_minor, currency),
        interest=Money.of(i.interest_minor, currency),
        total=Money.of(i.principal_minor + i.interest_minor, currency),
        paid=Money.of(i.paid_minor, currency),
        status=i.status,  # type: ignore[arg-type]
        last_collection_error=CollectionError(**error) if error else None,
    )


def record_instalment(session: Session, type: str, loan: Loan, instalment: Instalment,
                      now: datetime) -> None:
    """An instalment's event: the instalment as the loan's schedule shows it, with its loan's id."""
    record(session, type, loan.id, loan.participant_id, now,
           {"loan_id": loan.id, **instalment_public(instalment, loan.currency).model_dump(mode="json")})


def get_loan(session: Session, loan_id: str, caller: Caller) -> LoanPublic:
    return loan_public(session, _get_loan(session, loan_id, caller))


# Credit acts for the lender that owns the loan; a loan opened on credit's own port has no
# owner, and then for whoever moves it (`... or caller.participant_id`), so a participant never
# moves money on the credit service's own limits.


def _error_of(status: int, problem: dict[str, Any]) -> dict[str, Any]:
    return {"status": status, "type": str(problem.get("type", "about:blank")),
            "title": str(problem.get("title", "")), "detail": problem.get("detail")}


def disburse(session: Session, payments: PaymentsClient, clock: Any, loan_id: str, caller: Caller) -> LoanPublic:
    """Pay an approved loan into the borrower's wallet: all or nothing, at most once."""
    loan = _get_loan(session, loan_id, caller)
    if loan.status in ("disbursed", "repaid"):
        return loan_public(session, loan)  # already paid: disbursing again changes nothing
    now = clock.now()
    claimed = LoansRepository(session).claim_for_payout(loan.id, now, now - PAYOUT_STALE_AFTER)
    # Read the claimed row before the commit, not after: a read after it would open a transaction
    # (on SQLite a writer's, BEGIN IMMEDIATE) that stayed open, the database locked, during the payout.
    session.refresh(loan)
    record_first(session, "the payout's claim is durable before any money can move")
    if not claimed:
        raise Problem(409, "disbursal-in-progress", "This loan is being disbursed",
                      "Another request is paying this loan out; fetch the loan in a moment.",
                      headers={"Retry-After": "1"})
    try:
        # For the loan's lender, whoever asked: its limits, its audit entry.
        journal = payments.transfer(
            from_account=loan.lender_account_id,
            to_account=loan.account_id,
            amount=Money.of(loan.principal_minor, loan.currency),
            description=f"Loan {loan.id} disbursement",
            key=f"{loan.id}-payout-{loan.payout_attempt}",
            on_behalf_of=loan.participant_id or caller.participant_id,
        )
    except PaymentRefused as refused:
        loan.status = "approved"
        loan.payout_attempt += 1  # payments refused this key for good: the next attempt needs a new one
        loan.last_payout_error = _error_of(refused.status, refused.problem)
        session.add(loan)
        record_first(session, "the refusal and the next attempt's key outlive the 409 raised next")
        raise Problem(
            409, "payout-refused", "The payout was refused",
            f"Payments answered {refused.status} {refused.problem.get('title')}: "
            f"{refused.problem.get('detail', '')} The loan stays undisbursed; no money moved.",
            loan_id=loan.id, payments_problem=refused.problem,
        ) from None
    except PaymentsUnavailable as down:
        loan.status = "approved"  # same attempt, same key: a retry replays or completes it
        loan.last_payout_error = {"status": 503, "type": "urn:fintech-sandbox:problem:payments-unavailable",
                                  "title": "Payments unavailable", "detail": str(down)}
        session.add(loan)
        record_first(session, "the loan is payable again, and says why, after the 503 raised next")
        raise Problem(
            503, "payments-unavailable", "Payments is unavailable",
            f"{down}. The loan stays undisbursed; retrying is safe (the payout's idempotency key "
            "is reused, so it cannot pay twice).", loan_id=loan.id,
        ) from None
    disbursed_at = clock.now()
    loan.status = "disbursed"
    loan.disbursement_journal_id = journal["id"]
    loan.disbursement_fee_minor = to_minor(journal.get("fee", {}).get("amount", "0"), loan.currency)
    loan.disbursed_at = disbursed_at
    loan.last_payout_error = None
    session.add(loan)
    LoansRepository(session).add_instalments([
        Instalment(loan_id=loan.id, number=i.number, due_date=i.due_date,
                   principal_minor=i.principal_minor, interest_minor=i.interest_minor)
        for i in equal_instalments(loan.principal_minor, loan.apr_bps, loan.term_months, disbursed_at.date())
    ])
    public = loan_public(session, loan)
    # Only now that payments has answered, in the unit of work that records the payout.
    record(session, "credit.loan.disbursed", loan.id, loan.participant_id, disbursed_at, public)
    return public


def _repayment_public(repayment: Repayment) -> RepaymentPublic:
    return RepaymentPublic(
        id=repayment.id, loan_id=repayment.loan_id, amount=Money.of(repayment.amount_minor, repayment.currency),
        status="completed", journal_id=repayment.journal_id or "", created_at=_aware(repayment.created_at),  # type: ignore[arg-type]
    )


def _slug(problem: dict[str, Any]) -> str:
    return str(problem.get("type", "")).rsplit(":", 1)[-1]


def repayment_refusal(loan: Loan, status: int, problem: dict[str, Any]) -> Problem:
    """Payments' final refusal of a repayment, in the lender's words: nothing was debited, and the
    same repayment is refused again until the borrower's authority (the mandate) changes."""
    answered = f"Payments answered {status} {problem.get('title')}: {problem.get('detail') or ''}".rstrip(" .:")
    mandate = loan.repayment_mandate_id
    facts = {"loan_id": loan.id, "repayment_mandate_id": mandate, "payments_problem": problem}
    slug = _slug(problem)
    payer_hidden = status == 404 and loan.lender_account_id not in str(problem.get("detail"))
    if payer_hidden:  # payments hides another participant's account (and mandate) behind "not found"
        why = (f"mandate {mandate} is not a mandate on {loan.account_id} to {loan.participant_id}"
               if mandate else "the loan names no repayment mandate (repayment_mandate_id, set when applying)")
        return Problem(403, "repayment-not-authorised", "The lender may not debit the borrower's account",
                       f"{loan.account_id} belongs to another participant and {why}: its owner grants the "
                       f"lender a mandate in payments. {answered}. Nothing was debited.", **facts)
    if slug == "mandate-inactive":
        return Problem(403, "repayment-mandate-inactive", "The repayment mandate is not live",
                       f"Mandate {mandate} was revoked or has expired. {answered}. Nothing was debited; the "
                       "account's owner grants a new mandate.", **facts)
    if slug == "mandate-limit":
        return Problem(403, "repayment-mandate-limit", "The repayment is above the mandate's caps",
                       f"{answered}. Nothing was debited; repay less, or after the mandate's period turns.",
                       **facts)
    if slug == "mandate-account-mismatch":
        return Problem(409, "repayment-mandate-mismatch", "The mandate is for another account",
                       f"Mandate {mandate} does not cover {loan.account_id}. {answered}. Nothing was debited.",
                       **facts)
    return Problem(409, "repayment-refused", "The repayment was refused", f"{answered}. Nothing was repaid.",
                   **facts)


def repay(
    session: Session, payments: PaymentsClient, clock: Any, loan_id: str, body: RepaymentCreate, client_key: str | None,
    caller: Caller,
) -> RepaymentPublic:
    """Move a repayment from the borrower's wallet to the lender, under the loan's mandate, then
    apply it to the schedule."""
    loan = _get_loan(session, loan_id, caller)
    repayments = RepaymentsRepository(session)
    repayment = repayments.by_client_key(loan.id, client_key) if client_key else None
    if repayment is not None:
        if repayment.amount_minor != body.amount.minor or repayment.currency != body.amount.currency:
            raise Problem(409, "idempotency-key-reused", "Idempotency key reused with another request",
                          f"The key {client_key!r} was first used for another amount.")
        if repayment.status == "completed":
            return _repayment_public(repayment)
        if repayment.status == "failed":
            error = repayment.error or {}
            raise repayment_refusal(loan, int(error.get("status", 409)), error)
    else:
        if loan.status != "disbursed":
            raise Problem(409, "loan-not-repayable", "This loan takes no repayments",
                          f"Loan {loan.id} is {loan.status}; only a disbursed loan is repaid.")
        if body.amount.currency != loan.currency:
            raise Problem(409, "currency-mismatch", "Currency does not match the loan",
                          f"Loan {loan.id} is in {loan.currency}.")
        instalments = LoansRepository(session).instalments(loan.id)
        owed = sum(i.principal_minor + i.interest_minor for i in instalments) - loan.repaid_minor
        owed -= repayments.pending_minor(loan.id)
        if body.amount.minor > owed:
            raise Problem(409, "repayment-exceeds-balance", "Repayment exceeds what is owed",
                          f"{Money.of(owed, loan.currency).amount} {loan.currency} is outstanding.",
                          outstanding=Money.of(owed, loan.currency).model_dump())
        repayment = repayments.add(Repayment(
            id=new_id("rep"), loan_id=loan.id, client_key=client_key, amount_minor=body.amount.minor,
            currency=loan.currency, status="pending", created_at=clock.now(),
        ))
        record_first(session, "the repayment's intent is durable before any money can move")
    try:
        # The lender's debit of its borrower's account, under the mandate the account's owner gave it.
        journal = payments.transfer(
            from_account=loan.account_id, to_account=loan.lender_account_id,
            amount=Money.of(repayment.amount_minor, repayment.currency),
            description=f"Loan {loan.id} repayment", key=repayment.id, mandate_id=loan.repayment_mandate_id,
            on_behalf_of=loan.participant_id or caller.participant_id,
        )
    except PaymentRefused as refused:
        repayment.status = "failed"
        repayment.error = _error_of(refused.status, refused.problem)
        session.add(repayment)
        record_first(session, "the failed repayment outlives the refusal raised next: a retry gets the same answer")
        raise repayment_refusal(loan, refused.status, refused.problem) from None
    except PaymentsUnavailable as down:
        raise Problem(503, "payments-unavailable", "Payments is unavailable",
                      f"{down}. Retry with the same Idempotency-Key: it cannot be paid twice.") from None
    repayment.status = "completed"
    repayment.journal_id = journal["id"]
    session.add(repayment)
    apply_to_schedule(session, loan, repayment.amount_minor, clock.now())
    return _repayment_public(repayment)


def apply_to_schedule(session: Session, loan: Loan, amount_minor: int, now: datetime) -> None:
    """Money repaid goes to the oldest instalment first; each one it completes is paid (event),
    whether it was still scheduled, due or overdue."""
    left = amount_minor
    instalments = LoansRepository(session).instalments(loan.id)
    completed: list[Instalment] = []
    for instalment in instalments:
        due = instalment.principal_minor + instalment.interest_minor - instalment.paid_minor
        take = min(due, left)
        if take > 0:
            instalment.paid_minor += take
            left -= take
            if take == due:
                instalment.status = "paid"
                instalment.last_collection_error = None
                completed.append(instalment)
            session.add(instalment)
    loan.repaid_minor += amount_minor
    if loan.repaid_minor >= sum(i.principal_minor + i.interest_minor for i in instalments):
        loan.status = "repaid"
    session.add(loan)
    for instalment in completed:
        record_instalment(session, "credit.instalment.paid", loan, instalment, now)


# --- fairness and stability ------------------------------------------------------------------

def _live_fairness(applications: list[Application], attribute: str) -> AttributeFairness:
    groups: dict[str, list[int]] = defaultdict(list)
    for a in applications:
        group = getattr(a, f"monitoring_{attribute}")
        if group != "undisclosed":
            groups[group].append(1 if a.outcome == "approve" else 0)
    rates = {g: sum(v) / len(v) for g, v in groups.items()}
    ratio = min(rates.values()) / max(rates.values()) if len(rates) > 1 and max(rates.values()) > 0 else None
    return AttributeFairness(
        demographic_parity_ratio=None if ratio is None else round(ratio, 4),
        equalized_odds_difference=None,  # outcomes of live loans are not known yet
        flagged=ratio is not None and ratio < 0.8,
        groups=[GroupFairness(group=g, count=len(groups[g]), approval_rate=round(rates[g], 4)) for g in sorted(rates)],
    )


def fairness_report(session: Session, card: Scorecard, caller: Caller) -> FairnessReport:
    """The model's hold-out figures, and the caller's own recent applicants (everyone's for a direct caller)."""
    fairness = card.artifact["fairness"]
    threshold = fairness["threshold"]
    holdout = {name: AttributeFairness(**data) for name, data in fairness["by_attribute"].items()}
    recent = ApplicationsRepository(session).recent(RECENT_APPLICATIONS, owner_of(caller))
    baseline = card.artifact["psi_baseline"]
    edges = baseline["edges"]
    actual = monitoring.shares([a.score for a in recent], edges)
    psi = (
        round(monitoring.population_stability_index(baseline["shares"], actual), 4)
        if len(recent) >= monitoring.MIN_APPLICATIONS else None
    )
    live = {attr: _live_fairness(recent, attr) for attr in ("sex", "age_band")}
    flags = [
        f"hold-out {name}: demographic parity ratio {a.demographic_parity_ratio} is below {threshold}"
        for name, a in holdout.items() if a.flagged
    ] + [
        f"recent applicants {name}: approval-rate ratio {a.demographic_parity_ratio} is below {threshold}"
        for name, a in live.items() if a.flagged
    ]
    status = monitoring.psi_status(psi)
    if status != "stable" and psi is not None:
        flags.append(f"population stability index {psi}: {status} between training and recent applicants")
    return FairnessReport(
        model_version=card.version,
        threshold=threshold,
        holdout=holdout,
        holdout_decision=fairness["decision"],
        recent_applicants=live,
        stability=StabilityPublic(
            psi=psi, status=status, recent_applications=len(recent),  # type: ignore[arg-type]
            bins=[PsiBin(score_from=edges[i], score_to=edges[i + 1] - 1, training_share=baseline["shares"][i],
                         recent_share=round(actual[i], 6)) for i in range(len(edges) - 1)],
        ),
        flags=flags,
    )
