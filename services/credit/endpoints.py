"""Thin HTTP handlers for credit; the rules live in service.py, the maths in scorecard.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from services.common.app import ClockDep
from services.common.caller import CallerDep
from services.common.db import SessionDep
from services.common.fields import IdPath
from services.common.forwarded import forwarded_origin
from services.common.idempotency import IdempotencyKeyHeader
from services.common.pagination import CursorQuery, LimitQuery, Page, page_of
from services.common.payments_client import PaymentsClient
from services.common.problems import problem_responses
from services.credit import consents, service
from services.credit.bank import SandboxBank
from services.credit.schemas import (
    APPLICATION_PREFIX,
    BANK_CONSENT_PREFIX,
    LOAN_PREFIX,
    ApplicationCreate,
    ApplicationPublic,
    BankConsentPublic,
    FairnessReport,
    LoanPublic,
    ModelPublic,
    PsuDecision,
    PsuDecisionPublic,
    RepaymentCreate,
    RepaymentPublic,
    ScorecardPublic,
    ScorePublic,
    ScoreRequest,
)
from services.credit.scorecard import Scorecard


def get_scorecard(request: Request) -> Scorecard:
    return request.app.state.scorecard


def get_payments(request: Request) -> PaymentsClient:
    return request.app.state.payments


def get_bank(request: Request) -> SandboxBank:
    return request.app.state.bank


ScorecardDep = Annotated[Scorecard, Depends(get_scorecard)]
PaymentsDep = Annotated[PaymentsClient, Depends(get_payments)]
BankDep = Annotated[SandboxBank, Depends(get_bank)]
BankConsentId = Annotated[str, IdPath(BANK_CONSENT_PREFIX, "A Sandbox Bank account-access ConsentId, `aac_…`.")]
ApplicationId = Annotated[str, IdPath(APPLICATION_PREFIX, "An application id, `app_…`.")]
LoanId = Annotated[str, IdPath(LOAN_PREFIX, "A loan id, `loan_…`.")]

router = APIRouter()

APPLICATION_LINKS: dict[str, Any] = {
    "GetApplication": {"operationId": "get_application", "parameters": {"application_id": "$response.body#/id"}},
    "GetLoan": {"operationId": "get_loan", "parameters": {"loan_id": "$response.body#/loan_id"}},
    "DisburseLoan": {"operationId": "disburse_loan", "parameters": {"loan_id": "$response.body#/loan_id"}},
}
LOAN_LINKS: dict[str, Any] = {
    "GetLoan": {"operationId": "get_loan", "parameters": {"loan_id": "$response.body#/id"}},
    "Repay": {"operationId": "create_repayment", "parameters": {"loan_id": "$response.body#/id"}},
}


@router.get("/scorecard", tags=["model"], operation_id="get_scorecard", response_model=ScorecardPublic)
def get_scorecard_table(card: ScorecardDep) -> ScorecardPublic:
    """The scorecard table: every characteristic's bins and points, scaling and policy."""
    a = card.artifact
    return ScorecardPublic(
        model_version=card.version, kind=a["kind"], scaling=a["scaling"], policy=a["policy"],
        characteristics=[
            {**c, "bins": [{"lower": None, "upper": None, "missing": False, **b} for b in c["bins"]]}
            for c in a["characteristics"]
        ],
    )


@router.get("/model", tags=["model"], operation_id="get_model", response_model=ModelPublic)
def get_model(card: ScorecardDep) -> ModelPublic:
    """The model version, its training population and its validation figures."""
    a = card.artifact
    return ModelPublic(
        model_version=card.version, kind=a["kind"], trained_with=a["trained_with"],
        population=a["population"], validation=a["validation"], inputs=list(card.input_names),
    )


@router.post(
    "/scores", tags=["model"], operation_id="create_score", response_model=ScorePublic,
    responses=problem_responses(409, 422),
)
def create_score(body: ScoreRequest, card: ScorecardDep) -> ScorePublic:
    """Score data without applying (a what-if): points, band, PD and reasons; nothing stored."""
    return service.what_if(card, body.cash_flow, body.records)


@router.post(
    "/applications", status_code=201, tags=["applications"], operation_id="create_application",
    response_model=ApplicationPublic,
    responses={
        201: {"model": ApplicationPublic, "description": "Decided", "links": APPLICATION_LINKS},
        **problem_responses(409, 422, 503),
    },
)
def create_application(
    body: ApplicationCreate, session: SessionDep, clock: ClockDep, card: ScorecardDep, bank: BankDep,
    request: Request, caller: CallerDep,
) -> ApplicationPublic:
    """Apply for a loan and get the automated decision: score, reasons, terms, timings.

    With `cash_flow.source` `open_banking` the flow is read from Sandbox Bank with a consent the
    applicant authorised (see `POST /open-banking/consents`); refusals name the reason
    (`consent-not-authorised`, `consent-rejected`, `consent-revoked`, `consent-expired`,
    `account-not-in-consent`, `authorization-code-invalid`, ...). `repayment_mandate_id` names the
    mandate repayments will debit the applicant's account under."""
    received_at = clock.now()
    return service.apply(session, card, bank, body, received_at, clock,
                         request.app.state.settings.lender_account_id, caller)


def public_gateway(request: Request) -> str:
    """The gateway as the caller reached it (its forwarded host), else the one credit calls."""
    return forwarded_origin(request) or str(request.app.state.settings.gateway_url).rstrip("/")


BANK_CONSENT_LINKS: dict[str, Any] = {
    "GetBankConsent": {"operationId": "get_bank_consent",
                       "parameters": {"consent_id": "$response.body#/consent_id"}},
    "AuthoriseBankConsent": {"operationId": "authorise_bank_consent",
                             "parameters": {"consent_id": "$response.body#/consent_id"}},
}


@router.post(
    "/open-banking/consents", status_code=201, tags=["open banking"], operation_id="create_bank_consent",
    response_model=BankConsentPublic,
    responses={
        201: {"model": BankConsentPublic, "description": "Created at the bank, awaiting the applicant",
              "links": BANK_CONSENT_LINKS},
        **problem_responses(503),
    },
)
def create_bank_consent(
    session: SessionDep, clock: ClockDep, bank: BankDep, request: Request, caller: CallerDep
) -> BankConsentPublic:
    """Credit, as a TPP, asks Sandbox Bank for an account-access consent (accounts and credits of
    the last 12 months, for one day). The applicant then authorises it at the bank."""
    return consents.create_bank_consent(session, bank, clock.now(), public_gateway(request), caller)


@router.get(
    "/open-banking/consents/{consent_id}", tags=["open banking"], operation_id="get_bank_consent",
    response_model=BankConsentPublic, responses=problem_responses(404, 422, 503),
)
def get_bank_consent(
    consent_id: BankConsentId, session: SessionDep, bank: BankDep, request: Request, caller: CallerDep
) -> BankConsentPublic:
    """A consent credit created for you, with its status as the bank reports it now."""
    return consents.get_bank_consent(session, bank, consent_id, public_gateway(request), caller)


@router.post(
    "/open-banking/consents/{consent_id}/authorisation", tags=["open banking"],
    operation_id="authorise_bank_consent", response_model=PsuDecisionPublic,
    responses=problem_responses(404, 409, 422, 503),
)
def authorise_bank_consent(
    consent_id: BankConsentId, body: PsuDecision, session: SessionDep, bank: BankDep, caller: CallerDep
) -> PsuDecisionPublic:
    """The applicant logs in at the bank and decides; credit relays it with its PKCE challenge.

    The sandbox's headless stand-in for the applicant's browser at the bank: the answer carries
    the bank's authorisation code for the application. Refusals by the bank (a wrong one-time
    code, an account the applicant does not hold, a consent already decided) are
    `409 psu-authorisation-refused` with the bank's answer in `bank_error`."""
    return consents.authorise_bank_consent(session, bank, consent_id, body, caller)


@router.get(
    "/applications", tags=["applications"], operation_id="list_applications",
    response_model=Page[ApplicationPublic], responses=problem_responses(422),
)
def list_applications(
    session: SessionDep, card: ScorecardDep, caller: CallerDep, limit: LimitQuery = 20, cursor: CursorQuery = None
) -> Page[ApplicationPublic]:
    """Your applications and their decisions, oldest first, a page at a time."""
    return page_of(service.list_applications(session, card, limit, cursor, caller), limit, lambda a: a.id)


@router.get(
    "/applications/{application_id}", tags=["applications"], operation_id="get_application",
    response_model=ApplicationPublic, responses=problem_responses(404, 422),
)
def get_application(
    application_id: ApplicationId, session: SessionDep, card: ScorecardDep, caller: CallerDep
) -> ApplicationPublic:
    """One application, its decision and its timings."""
    return service.get_application(session, card, application_id, caller)


@router.get(
    "/loans/{loan_id}", tags=["loans"], operation_id="get_loan", response_model=LoanPublic,
    responses=problem_responses(404, 422),
)
def get_loan(loan_id: LoanId, session: SessionDep, caller: CallerDep) -> LoanPublic:
    """One loan: payout, repayment schedule, repayments, what is outstanding."""
    return service.get_loan(session, loan_id, caller)


@router.post(
    "/loans/{loan_id}/disbursement", tags=["loans"], operation_id="disburse_loan",
    response_model=LoanPublic,
    responses={
        200: {"model": LoanPublic, "description": "Disbursed (or already was)", "links": LOAN_LINKS},
        **problem_responses(404, 409, 422, 503),
    },
)
def disburse_loan(
    loan_id: LoanId, session: SessionDep, clock: ClockDep, payments: PaymentsDep, caller: CallerDep
) -> LoanPublic:
    """Pay the loan into the borrower's wallet (safe to retry: it never pays twice)."""
    return service.disburse(session, payments, clock, loan_id, caller)


@router.post(
    "/loans/{loan_id}/repayments", status_code=201, tags=["loans"], operation_id="create_repayment",
    response_model=RepaymentPublic,
    responses={
        201: {"model": RepaymentPublic, "description": "Repaid"},
        **problem_responses(403, 404, 409, 422, 503),
    },
)
def create_repayment(
    loan_id: LoanId, body: RepaymentCreate, session: SessionDep, clock: ClockDep, payments: PaymentsDep,
    caller: CallerDep, idempotency_key: IdempotencyKeyHeader = None,
) -> RepaymentPublic:
    """Repay from the borrower's wallet to the lender; applied to the oldest instalment first.

    The debit runs under the loan's `repayment_mandate_id`; payments' refusals come back as
    `repayment-not-authorised` (403), `repayment-mandate-inactive` (403), `repayment-mandate-limit`
    (403) or `repayment-mandate-mismatch` (409), and nothing is debited."""
    return service.repay(session, payments, clock, loan_id, body, idempotency_key, caller)


@router.get("/fairness", tags=["monitoring"], operation_id="get_fairness", response_model=FairnessReport)
def get_fairness(session: SessionDep, card: ScorecardDep, caller: CallerDep) -> FairnessReport:
    """Fairness on the hold-out, approval rates of your recent applicants, and score drift (PSI)."""
    return service.fairness_report(session, card, caller)
