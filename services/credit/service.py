"""The credit rules: score, decide, disburse through payments, schedule, take repayments, monitor.

Cross-service money movement records its intent first and sends an Idempotency-Key derived from
our own row, so a retry can never pay twice; the database is never locked during a remote call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from statistics import mean, pstdev
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlmodel import Session

from services.common.caller import Caller
from services.common.clock import wire_time
from services.common.ids import new_id
from services.common.money import Money, to_minor
from services.common.problems import Problem, not_found
from services.credit import monitoring, policy
from services.credit.bank import ClientRejected, SandboxBank
from services.credit.gateway import Gateway, Refused, Unavailable
from services.credit.models import Application, BankConsentLink, Instalment, Loan, Repayment
from services.credit.repository import (
    ApplicationsRepository,
    BankConsentLinksRepository,
    LoansRepository,
    RepaymentsRepository,
)
from services.credit.schedule import equal_instalments
from services.credit.schemas import (
    ApplicationCreate,
    ApplicationPublic,
    AttributeFairness,
    BankConsentPublic,
    DecisionPublic,
    DisbursementPublic,
    FairnessReport,
    GroupFairness,
    InlineCashFlow,
    InstalmentPublic,
    LoanPublic,
    OpenBankingCashFlow,
    PayoutError,
    PointsLine,
    PsiBin,
    PsuAuthorisation,
    PsuDecision,
    PsuDecisionPublic,
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


def owner_of(caller: Caller) -> str | None:
    """Who owns what this caller creates, and whom credit's hops for it name: its participant;
    nobody for a direct caller (or the gateway's look-ups), whose resources stay open to all."""
    return caller.participant_id if caller.restricted else None


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
    link = _consent_link(session, flow.consent_id, caller, _no_such_consent)
    transactions = pull_transactions(bank, flow, now, link.code_verifier if link else None)
    return flow_from_transactions(transactions, now, card.policy["currency"])


# --- open banking: credit as a TPP ------------------------------------------------------------

CONSENT_TTL = timedelta(days=1)  # long enough for the applicant to authorise, no standing access
PKCE_VERIFIER_LENGTH = 64  # RFC 7636 allows 43-128 characters
OB_PROBLEM = "urn:fintech-sandbox:problem:"  # problem types the gateway itself answers with


def _aware_iso(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bank_message(problem: dict[str, Any]) -> str:
    # OBIE errors carry their words in Errors[].Message, OAuth errors in error_description,
    # the gateway's problems in title/detail.
    errors = problem.get("Errors") or []
    if errors and isinstance(errors[0], dict):
        message = f"{errors[0].get('ErrorCode')}: {errors[0].get('Message')}"
    elif "error" in problem:
        message = f"{problem['error']}: {problem.get('error_description', '')}"
    else:
        message = f"{problem.get('title')}: {problem.get('detail', '')}"
    return message.rstrip(". ")


def _bank_error_code(problem: dict[str, Any]) -> str:
    errors = problem.get("Errors") or []
    return str(errors[0].get("ErrorCode", "")) if errors and isinstance(errors[0], dict) else ""


def _bank_down(exc: Exception) -> Problem:
    return Problem(503, "open-banking-unavailable", "Open banking is unavailable",
                   f"Sandbox Bank could not be reached through the gateway: {exc}. Nothing was stored; "
                   "retry later.")


def _gateway_refused_credit(refused: Refused) -> bool:
    """The gateway refused credit's own call (its key, limits): not the applicant's doing."""
    return str(refused.problem.get("type", "")).startswith(OB_PROBLEM)


def _bank_call(call: Any, *args: Any) -> Any:
    """Run a bank call; the failures that are not about the applicant's consent become 503s."""
    try:
        return call(*args)
    except Unavailable as down:
        raise _bank_down(down) from None
    except ClientRejected as rejected:
        raise _bank_down(rejected) from None
    except Refused as refused:
        if _gateway_refused_credit(refused):
            raise _bank_down(Exception(f"the gateway answered {refused.status} {_bank_message(refused.problem)}")) \
                from None
        raise


def _consent_problem(slug: str, title: str, detail: str, consent_id: str, **extras: Any) -> Problem:
    """A 409: the application cannot be decided with this consent (nothing is stored)."""
    return Problem(409, slug, title, detail, consent_id=consent_id, **extras)


def _refused_read(refused: Refused, consent_id: str) -> Problem:
    """The bank would not release the data to the PSU's token: say why in the lender's words."""
    message = _bank_message(refused.problem)
    code = _bank_error_code(refused.problem)
    if code == "UK.OBIE.Resource.InvalidConsentStatus":
        if "expired" in message:
            return _consent_problem("consent-expired", "The consent has expired",
                                    f"Sandbox Bank says: {message}. Ask the applicant to authorise a new "
                                    "consent.", consent_id, bank_error=refused.body)
        if "deleted" in message or "Revoked" in message:
            return _consent_problem("consent-revoked", "The consent was revoked",
                                    f"Sandbox Bank says: {message}.", consent_id, bank_error=refused.body)
    return _consent_problem("consent-unusable", "The bank would not release the transactions",
                            f"Sandbox Bank answered {refused.status}: {message}.", consent_id,
                            bank_error=refused.body)


def _no_such_consent(consent_id: str) -> Problem:
    # One answer for a consent the bank does not know and another lender's: existence is not disclosed.
    return _consent_problem("consent-not-found", "No such consent",
                            f"Sandbox Bank has no consent {consent_id} that the credit service created for "
                            "you. Create one with POST /open-banking/consents.", consent_id)


def _check_consent(consent: dict[str, Any], consent_id: str, now: datetime) -> None:
    """Refuse, in plain words, a consent that cannot release anything now."""
    status = consent.get("Status")
    if status == "AwaitingAuthorisation":
        raise _consent_problem("consent-not-authorised", "The applicant has not authorised the consent",
                               f"Consent {consent_id} is still AwaitingAuthorisation: the applicant logs in "
                               "at Sandbox Bank and authorises it, and the bank's code comes with the "
                               "application.", consent_id, consent_status=status)
    if status == "Rejected":
        raise _consent_problem("consent-rejected", "The applicant rejected the consent",
                               f"The applicant rejected consent {consent_id} at the bank; apply with inline "
                               "data or a new consent.", consent_id, consent_status=status)
    if status == "Revoked":
        raise _consent_problem("consent-revoked", "The consent was revoked",
                               f"The applicant revoked consent {consent_id} at the bank; nothing more can be "
                               "read with it.", consent_id, consent_status=status)
    if status != "Authorised":
        raise _consent_problem("consent-unusable", "The consent cannot be used",
                               f"Consent {consent_id} is {status}.", consent_id, consent_status=status)
    expires_at = _aware_iso(consent.get("ExpirationDateTime"))
    if expires_at is not None and now >= expires_at:
        raise _consent_problem("consent-expired", "The consent has expired",
                               f"Consent {consent_id} expired at {wire_time(expires_at)}; ask the applicant "
                               "to authorise a new one.", consent_id, consent_status=status,
                               expired_at=wire_time(expires_at))


def _own_consent(bank: SandboxBank, consent_id: str) -> dict[str, Any]:
    """The consent as the bank reports it to credit; only consents credit created are visible."""
    try:
        return _bank_call(bank.consent, consent_id)
    except Refused as refused:
        if refused.status == 404:  # the bank does not disclose another TPP's consents either
            raise _no_such_consent(consent_id) from None
        raise _refused_read(refused, consent_id) from None


def pull_transactions(
    bank: SandboxBank, flow: OpenBankingCashFlow, now: datetime, code_verifier: str | None
) -> list[dict[str, Any]]:
    """The OBIE AISP journey's last leg, as a TPP makes it: check the consent, swap the code (and
    the consent's PKCE verifier) for the PSU's token with credit's own client credentials, check
    the token is for this consent, check the account was shared, read its credits. The token is
    dropped afterwards."""
    consent_id = flow.consent_id
    _check_consent(_own_consent(bank, consent_id), consent_id, now)
    try:
        granted = _bank_call(bank.redeem_code, flow.authorization_code, code_verifier)
    except Refused as refused:
        raise _consent_problem(
            "authorization-code-invalid", "The authorisation code was not accepted",
            f"Sandbox Bank answered {_bank_message(refused.problem)}. A code works once, for 10 minutes, "
            "and only for the credit service's own consents; ask the applicant to authorise again.",
            consent_id, bank_error=refused.body) from None
    if granted.get("consent_id") != consent_id:
        raise _consent_problem(
            "authorization-code-mismatch", "The code is for another consent",
            f"The authorisation code was issued for consent {granted.get('consent_id')}, not {consent_id}.",
            consent_id)
    token = str(granted["access_token"])
    try:
        shared = sorted(str(a.get("AccountId")) for a in _bank_call(bank.accounts, token))
        if flow.account_id not in shared:  # authorised by another PSU than the account's holder
            raise _consent_problem(
                "account-not-in-consent", "The applicant did not share this account",
                f"The PSU who authorised consent {consent_id} shared {', '.join(shared) or 'no account'}, not "
                f"{flow.account_id}: only the account's holder can release its transactions.",
                consent_id, shared_account_ids=shared)
        return _bank_call(bank.transactions, token, flow.account_id, now - timedelta(days=365))
    except Refused as refused:
        raise _refused_read(refused, consent_id) from None


def _authorisation_url(public_base: str, consent_id: str) -> str:
    return f"{public_base.rstrip('/')}/credit/open-banking/consents/{consent_id}/authorisation"


def bank_consent_public(
    consent: dict[str, Any], client_id: str, public_base: str, link: BankConsentLink | None
) -> BankConsentPublic:
    status = consent["Status"]
    # Only a consent credit holds the PKCE verifier of can be authorised through credit.
    waiting = status == "AwaitingAuthorisation" and link is not None
    steps = {
        "AwaitingAuthorisation": "The applicant authorises the consent at the bank (psu_authorisation). Then apply "
                                 "with cash_flow {source: open_banking, consent_id, authorization_code: the "
                                 "bank's code, account_id: the account shared}.",
        "Authorised": "Authorised: apply with the bank's authorisation code, within 10 minutes of the "
                      "applicant's decision.",
        "Rejected": "The applicant rejected it; create a new consent or apply with inline data.",
        "Revoked": "The applicant revoked it; create a new consent or apply with inline data.",
    }
    return BankConsentPublic(
        consent_id=consent["ConsentId"],
        client_id=client_id,
        status=status,
        permissions=list(consent.get("Permissions", [])),
        transactions_from=_aware_iso(consent.get("TransactionFromDateTime")),
        expires_at=_aware_iso(consent.get("ExpirationDateTime")),
        created_at=_aware_iso(consent["CreationDateTime"]),  # type: ignore[arg-type]
        status_updated_at=_aware_iso(consent["StatusUpdateDateTime"]),  # type: ignore[arg-type]
        psu_authorisation=PsuAuthorisation(url=_authorisation_url(public_base, consent["ConsentId"]), body={
            "psu_id": "<the applicant's bank login>", "otp": "<one-time code: 123456 in the sandbox>",
            "decision": "Authorise",
        }) if waiting else None,
        next_step=steps.get(status, ""),
    )


def _consent_link(
    session: Session, consent_id: str, caller: Caller, not_yours: Callable[[str], Problem]
) -> BankConsentLink | None:
    """Credit's record of a consent it created (None: credit has none, the bank will answer);
    another participant's is refused with `not_yours`, as the bank refuses another TPP's."""
    link = BankConsentLinksRepository(session).get(consent_id)
    if link is not None and not caller.may_use(link.participant_id):
        raise not_yours(consent_id)
    return link


def create_bank_consent(
    session: Session, bank: SandboxBank, now: datetime, public_base: str, caller: Caller
) -> BankConsentPublic:
    """Credit creates the account-access consent itself, with its own client-credentials token,
    and keeps which participant asked for it and a fresh PKCE verifier for its code."""
    owner = owner_of(caller)
    try:
        consent = _bank_call(bank.acting_for(owner).create_consent, now - timedelta(days=365), now + CONSENT_TTL)
    except Refused as refused:
        raise _bank_down(Exception(f"the bank refused the consent: {_bank_message(refused.problem)}")) from None
    link = BankConsentLink(consent_id=consent["ConsentId"], participant_id=owner,
                           code_verifier=generate_token(PKCE_VERIFIER_LENGTH), created_at=now)
    BankConsentLinksRepository(session).add(link)
    session.commit()
    return bank_consent_public(consent, bank.client_id, public_base, link)


def get_bank_consent(
    session: Session, bank: SandboxBank, consent_id: str, public_base: str, caller: Caller
) -> BankConsentPublic:
    # Another lender's consent is a 404, as another TPP's is below.
    link = _consent_link(session, consent_id, caller, lambda cid: not_found("Consent", cid))
    try:
        consent = _bank_call(bank.acting_for(owner_of(caller)).consent, consent_id)
    except Refused as refused:
        if refused.status in (403, 404):  # another TPP's consent is none of credit's business
            raise not_found("Consent", consent_id) from None
        raise _bank_down(Exception(f"the bank answered {refused.status} {_bank_message(refused.problem)}")) \
            from None
    return bank_consent_public(consent, bank.client_id, public_base, link)


def authorise_bank_consent(
    session: Session, bank: SandboxBank, consent_id: str, decision: PsuDecision, caller: Caller
) -> PsuDecisionPublic:
    """Relay the applicant's decision to the bank as credit's authorisation request (its client,
    the PKCE challenge of the verifier credit keeps for this consent): the sandbox's headless
    stand-in for the applicant's browser at the bank."""
    link = _consent_link(session, consent_id, caller, lambda cid: not_found("Consent", cid))
    if link is None:  # not created through credit: credit holds no verifier for it
        raise not_found("Consent", consent_id)
    request = {"consent_id": consent_id, "client_id": bank.client_id,
               "code_challenge": create_s256_code_challenge(link.code_verifier), "code_challenge_method": "S256",
               **decision.model_dump(exclude_none=True)}
    try:
        answer = _bank_call(bank.acting_for(owner_of(caller)).authorise, request)
    except Refused as refused:
        if refused.status == 404:
            raise not_found("Consent", consent_id) from None
        raise _consent_problem("psu-authorisation-refused", "The bank refused the applicant's decision",
                               f"Sandbox Bank says: {_bank_message(refused.problem)}.", consent_id,
                               bank_error=refused.body) from None
    return PsuDecisionPublic.model_validate(answer)


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
    session.commit()
    return application_public(card, application, loan)


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
        schedule=[
            InstalmentPublic(
                number=i.number,
                due_date=i.due_date,
                principal=Money.of(i.principal_minor, ccy),
                interest=Money.of(i.interest_minor, ccy),
                total=Money.of(i.principal_minor + i.interest_minor, ccy),
                paid=Money.of(i.paid_minor, ccy),
                status="paid" if i.paid_minor >= i.principal_minor + i.interest_minor
                else "partly_paid" if i.paid_minor else "due",
            )
            for i in instalments
        ],
        repaid=Money.of(loan.repaid_minor, ccy),
        outstanding=Money.of(total_due - loan.repaid_minor, ccy),
        repayments=[_repayment_public(r) for r in RepaymentsRepository(session).completed(loan.id)],
        timings=_timings(application, loan),
    )


def get_loan(session: Session, loan_id: str, caller: Caller) -> LoanPublic:
    return loan_public(session, _get_loan(session, loan_id, caller))


# Credit acts for the lender that owns the loan; a loan opened on credit's own port has no
# owner, and then for whoever moves it (`... or caller.participant_id`), so a participant never
# moves money on the credit service's own limits.


def _error_of(status: int, problem: dict[str, Any]) -> dict[str, Any]:
    return {"status": status, "type": str(problem.get("type", "about:blank")),
            "title": str(problem.get("title", "")), "detail": problem.get("detail")}


def disburse(session: Session, gateway: Gateway, clock: Any, loan_id: str, caller: Caller) -> LoanPublic:
    """Pay an approved loan into the borrower's wallet: all or nothing, at most once."""
    loan = _get_loan(session, loan_id, caller)
    if loan.status in ("disbursed", "repaid"):
        return loan_public(session, loan)  # already paid: disbursing again changes nothing
    now = clock.now()
    claimed = LoansRepository(session).claim_for_payout(loan.id, now, now - PAYOUT_STALE_AFTER)
    session.commit()  # the intent is durable before any money can move
    if not claimed:
        raise Problem(409, "disbursal-in-progress", "This loan is being disbursed",
                      "Another request is paying this loan out; fetch the loan in a moment.",
                      headers={"Retry-After": "1"})
    session.refresh(loan)
    try:
        # For the loan's lender, whoever asked: its limits, its audit entry.
        journal = gateway.acting_for(loan.participant_id or caller.participant_id).transfer(
            from_account_id=loan.lender_account_id,
            to_account_id=loan.account_id,
            amount=Money.of(loan.principal_minor, loan.currency),
            description=f"Loan {loan.id} disbursement",
            key=f"{loan.id}-payout-{loan.payout_attempt}",
        )
    except Refused as refused:
        loan.status = "approved"
        loan.payout_attempt += 1  # payments refused this key for good: the next attempt needs a new one
        loan.last_payout_error = _error_of(refused.status, refused.problem)
        session.add(loan)
        session.commit()
        raise Problem(
            409, "payout-refused", "The payout was refused",
            f"Payments answered {refused.status} {refused.problem.get('title')}: "
            f"{refused.problem.get('detail', '')} The loan stays undisbursed; no money moved.",
            loan_id=loan.id, payments_problem=refused.problem,
        ) from None
    except Unavailable as down:
        loan.status = "approved"  # same attempt, same key: a retry replays or completes it
        loan.last_payout_error = {"status": 503, "type": "urn:fintech-sandbox:problem:payments-unavailable",
                                  "title": "Payments unavailable", "detail": str(down)}
        session.add(loan)
        session.commit()
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
    session.commit()
    return loan_public(session, loan)


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
    session: Session, gateway: Gateway, clock: Any, loan_id: str, body: RepaymentCreate, client_key: str | None,
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
        session.commit()  # the intent is durable before any money can move
    try:
        # The lender's debit of its borrower's account, under the mandate the account's owner gave it.
        journal = gateway.acting_for(loan.participant_id or caller.participant_id).transfer(
            from_account_id=loan.account_id, to_account_id=loan.lender_account_id,
            amount=Money.of(repayment.amount_minor, repayment.currency),
            description=f"Loan {loan.id} repayment", key=repayment.id, mandate_id=loan.repayment_mandate_id,
        )
    except Refused as refused:
        repayment.status = "failed"
        repayment.error = _error_of(refused.status, refused.problem)
        session.add(repayment)
        session.commit()
        raise repayment_refusal(loan, refused.status, refused.problem) from None
    except Unavailable as down:
        raise Problem(503, "payments-unavailable", "Payments is unavailable",
                      f"{down}. Retry with the same Idempotency-Key: it cannot be paid twice.") from None
    repayment.status = "completed"
    repayment.journal_id = journal["id"]
    session.add(repayment)
    _apply_to_schedule(session, loan, repayment.amount_minor)
    session.commit()
    return _repayment_public(repayment)


def _apply_to_schedule(session: Session, loan: Loan, amount_minor: int) -> None:
    left = amount_minor
    instalments = LoansRepository(session).instalments(loan.id)
    for instalment in instalments:
        due = instalment.principal_minor + instalment.interest_minor - instalment.paid_minor
        take = min(due, left)
        if take > 0:
            instalment.paid_minor += take
            left -= take
            session.add(instalment)
    loan.repaid_minor += amount_minor
    if loan.repaid_minor >= sum(i.principal_minor + i.interest_minor for i in instalments):
        loan.status = "repaid"
    session.add(loan)


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
