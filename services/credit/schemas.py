"""The credit API's request and response models."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from services.common.demo import DEMO_LENDER, DEMO_MANDATES
from services.common.fields import IdField, Text
from services.common.ids import id_pattern
from services.common.money import AmountIn, Money

ACCOUNT_PREFIX = "acc"
APPLICATION_PREFIX = "app"
LOAN_PREFIX = "loan"
REPAYMENT_PREFIX = "rep"
BANK_CONSENT_PREFIX = "aac"  # Sandbox Bank's account-access ConsentIds
MANDATE_PREFIX = "mdt"  # payments' debit mandates

_FORBID = ConfigDict(extra="forbid")


def _json_number(value: Any) -> Any:
    # Lax pydantic would read `false` as 0 and "12" as 12; the contract says a JSON number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


Whole = Annotated[int, BeforeValidator(_json_number)]
# Stated outright: pydantic mis-renders bounds behind a validator inside an optional field.
Percent = Annotated[int, BeforeValidator(_json_number), Field(ge=0, le=100),
                    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 100})]
Stars = Annotated[float, BeforeValidator(_json_number), Field(ge=1, le=5),
                  WithJsonSchema({"type": "number", "minimum": 1, "maximum": 5})]

CHEN_EXAMPLE: dict[str, Any] = {
    "applicant_type": "business",
    "applicant_name": "Chen's Tea Stall",
    "account_id": "acc_00000000000000000000000004",
    "requested_amount": {"amount": "20000.00", "currency": "CNY"},
    "term_months": 12,
    "cash_flow": {
        "source": "inline",
        "monthly_inflow": {"amount": "18600.00", "currency": "CNY"},
        "inflow_volatility_pct": 22,
    },
    "records": {
        "months_in_business": 30,
        "tax_filings_on_time_pct": 92,
        "utility_bills_on_time_pct": 96,
        "customer_rating": 4.7,
        "existing_monthly_debt_payments": None,
    },
}


# Chen's Tea Stall's owner (Demo Wallet Co) lets Demo Lender collect repayments from its account.
CHEN_REPAYMENT_MANDATE = next(
    m.id for m in DEMO_MANDATES
    if m.debtor_account_id == CHEN_EXAMPLE["account_id"] and m.grantee_participant_id == DEMO_LENDER
)

OWNER_DESCRIPTION = ("The sandbox participant that applied (through the gateway); null when applied directly. "
                     "Other participants get 404 for it.")


class InlineCashFlow(BaseModel):
    """The applicant's transaction flow, summarised by the applicant's own platform."""

    model_config = _FORBID

    source: Literal["inline"]
    monthly_inflow: AmountIn = Field(description="Average monthly inflow over the last 12 months (CNY).")
    inflow_volatility_pct: Whole = Field(
        ge=0, le=1000, description="Coefficient of variation of the monthly inflow, in percent."
    )


class OpenBankingCashFlow(BaseModel):
    """Read the flow from Sandbox Bank with credit acting as the TPP (OBIE AISP).

    `consent_id` is an account-access consent credit created (`POST /open-banking/consents`) and
    the applicant authorised at the bank; `authorization_code` is the code the bank returned for
    it. Credit swaps the code for the applicant's access token with its own client credentials,
    checks that the token is for this consent and that the consent covers `account_id`, reads the
    account's credits over the last 12 months, and forgets the token."""

    model_config = _FORBID

    source: Literal["open_banking"]
    consent_id: str = IdField(BANK_CONSENT_PREFIX, "The account-access ConsentId credit created.")
    authorization_code: str = Field(
        pattern=r"^[\x21-\x7e]{1,512}$",
        description="The code Sandbox Bank gave when the applicant authorised the consent "
        "(single use, valid for 10 minutes).",
    )
    account_id: str = IdField(ACCOUNT_PREFIX, "The bank AccountId to read (Sandbox Bank uses ledger ids); "
                              "the applicant must have shared it.")


CashFlow = Annotated[InlineCashFlow | OpenBankingCashFlow, Field(discriminator="source")]


class Records(BaseModel):
    """Alternative data: time in business, tax, utilities, ratings, existing debt. Null = no record."""

    model_config = _FORBID

    months_in_business: Whole = Field(
        ge=0, le=1200, description="Months trading; for an individual, months of wallet history."
    )
    tax_filings_on_time_pct: Percent | None = Field(
        default=None, description="Share of tax filings made on time, last 24 months."
    )
    utility_bills_on_time_pct: Percent | None = Field(
        default=None, description="Share of utility bills paid on time, last 24 months."
    )
    customer_rating: Stars | None = Field(
        default=None, description="Average customer rating, 1 to 5 stars."
    )
    existing_monthly_debt_payments: AmountIn | None = Field(
        default=None, description="What existing loans cost each month; null when there are none."
    )


class Monitoring(BaseModel):
    """Collected only to monitor fairness; never passed to the scorecard."""

    model_config = _FORBID

    sex: Literal["F", "M", "undisclosed"] = "undisclosed"
    age_band: Literal["18-29", "30-44", "45-59", "60+", "undisclosed"] = "undisclosed"


class ApplicationCreate(BaseModel):
    """A loan application. Magic names: `Test Decline` is always declined, `Test Refer` referred."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {**CHEN_EXAMPLE, "repayment_mandate_id": CHEN_REPAYMENT_MANDATE}]})

    applicant_type: Literal["individual", "business"]
    applicant_name: str = Text(100, "Person or business applying.", ["Chen's Tea Stall"])
    account_id: str = IdField(ACCOUNT_PREFIX, "The applicant's wallet in payments: where the loan is paid.")
    requested_amount: AmountIn = Field(description="How much the applicant asks for (CNY).")
    term_months: Whole = Field(ge=1, le=36, description="Repayment term in months.")
    cash_flow: CashFlow
    records: Records
    monitoring: Monitoring | None = None
    # On the application, as a direct debit is set up when a loan is agreed: every collection
    # of this loan, the borrower's or a scheduled one, relies on the same standing authority.
    repayment_mandate_id: str | None = Field(
        default=None, pattern=id_pattern(MANDATE_PREFIX),
        description="A payments mandate (`mdt_…`) from the owner of `account_id` to the lender: the "
        "authority under which repayments debit that account. Needed unless the lender opened the "
        "account itself; without it repayments are refused (`repayment-not-authorised`).",
        examples=[CHEN_REPAYMENT_MANDATE],
    )


# As Sandbox Bank reports it (OBIE's statuses: an expired consent keeps its own, past its ExpirationDateTime).
ConsentStatus = Literal["AwaitingAuthorisation", "Authorised", "Rejected", "Revoked"]


class PsuAuthorisation(BaseModel):
    """What the applicant (the PSU) does next: log in at Sandbox Bank and decide. The sandbox's
    step is headless: a POST of this body with the PSU's login (`psu_id`) and the test one-time
    code `123456`. Credit relays it to the bank as the TPP's authorisation request, with the PKCE
    challenge of a verifier only credit holds, so the bank's code is worth nothing to anyone else."""

    url: str = Field(description="Credit's relay to the bank's authorise step, at the gateway.",
                     examples=["http://127.0.0.1:8000/credit/open-banking/consents/"
                               "aac_01jd3k8m9q2w4e6r8t0y2u4i6o/authorisation"])
    body: dict[str, Any] = Field(description="The request body; the PSU fills in `psu_id` and `otp`.")


class PsuDecision(BaseModel):
    """The applicant's login at Sandbox Bank and decision on the consent."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"psu_id": "wangfang", "otp": "123456", "decision": "Authorise",
         "account_ids": ["acc_00000000000000000000000008"]}]})

    psu_id: str = Field(pattern=r"^[a-z0-9-]{1,40}$", description="The applicant's bank login. Magic: "
                        "`psu-reject` rejects, `psu-expire` authorises for 60 seconds.", examples=["wangfang"])
    otp: str = Field(pattern=r"^[0-9]{6}$", description="The one-time code; in the sandbox always 123456.",
                     examples=["123456"])
    decision: Literal["Authorise", "Reject"] = "Authorise"
    account_ids: list[Annotated[str, IdField(ACCOUNT_PREFIX)]] | None = Field(
        default=None, max_length=20, description="The accounts to share (default: all the applicant's).")
    state: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                              description="Echoed on the redirect to the lender's callback.")


class PsuDecisionPublic(BaseModel):
    """The bank's answer: where the applicant's browser returns to, with the code for the application."""

    consent_id: str
    status: ConsentStatus = Field(description="The consent's status after the decision.")
    code: str | None = Field(default=None, description="The authorisation code, when authorised: send it as "
                             "`cash_flow.authorization_code` (single use, 10 minutes).")
    state: str | None = None
    redirect_uri: str = Field(description="The lender's callback, with the code.")


class BankConsentPublic(BaseModel):
    """An account-access consent credit created at Sandbox Bank, as the bank reports it now."""

    consent_id: str = Field(examples=["aac_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    client_id: str = Field(description="Credit's own registration at the bank.", examples=["tpp_credit"])
    status: ConsentStatus
    permissions: list[str] = Field(description="Only what the scorecard needs: the accounts list and credits.")
    transactions_from: datetime | None
    expires_at: datetime | None = Field(description="After this the consent releases nothing.")
    created_at: datetime
    status_updated_at: datetime
    psu_authorisation: PsuAuthorisation | None = Field(
        description="Set while the consent awaits the PSU: what the PSU does at the bank.")
    next_step: str


class ScoreRequest(BaseModel):
    """Score data without applying: a what-if for learners and lenders."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{k: CHEN_EXAMPLE[k] for k in ("cash_flow", "records")}]},
    )

    cash_flow: InlineCashFlow
    records: Records


class PointsLine(BaseModel):
    """One characteristic's contribution: its value, the bin it fell in, the points earned."""

    characteristic: str
    value: str | None = Field(description="The input as scored; null when no record was given.")
    bin: str
    points: int
    max_points: int


class ReasonPublic(BaseModel):
    """A principal reason: the points lost against the characteristic's maximum."""

    code: str
    characteristic: str
    text: str
    points: int
    max_points: int
    points_lost: int


class ScorePublic(BaseModel):
    """A score, its band and probability of default, the points behind it and the top reasons."""

    model_version: str
    score: int
    score_range: list[int] = Field(description="[lowest, highest] possible score.")
    band: str
    probability_of_default: float = Field(description="Of defaulting within 12 months.")
    points: list[PointsLine]
    reasons: list[ReasonPublic] = Field(description="Up to four, largest shortfall first.")


class DecisionPublic(BaseModel):
    """Approve, refer (to a human underwriter) or decline, and the terms when approved."""

    outcome: Literal["approve", "refer", "decline"]
    rule: Literal["score", "magic-applicant", "credit-line-used"] = Field(
        description="What decided it: the score, a magic applicant name, or `credit-line-used` (the "
                    "score qualifies, but the borrower's outstanding loans already use the whole limit).")
    risk_tier: str | None
    apr_percent: str | None = Field(description="Annual percentage rate, e.g. `7.20`.")
    limit: Money | None = Field(description="The credit line the score earns: what the borrower may owe "
                                            "in all, across loans, not per loan.")
    amount_offered: Money | None = Field(description="At most the amount requested and what is left of "
                                                     "the limit after the borrower's outstanding loans.")


class Timings(BaseModel):
    """When each step happened, by the service clock, to check the "310" claim."""

    received_at: datetime
    decided_at: datetime
    disbursed_at: datetime | None
    decision_ms: float
    received_to_disbursed_ms: float | None


class ApplicationPublic(BaseModel):
    """An application and its automated decision."""

    id: str = Field(examples=["app_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    participant_id: str | None = Field(description=OWNER_DESCRIPTION)
    applicant_type: Literal["individual", "business"]
    applicant_name: str
    account_id: str
    requested_amount: Money
    term_months: int
    data_source: Literal["inline", "open_banking"]
    score: ScorePublic
    decision: DecisionPublic
    loan_id: str | None
    timings: Timings


class CollectionError(BaseModel):
    """Why payments refused the last collection of an instalment; nothing was debited."""

    status: int
    type: str
    title: str
    detail: str | None


class InstalmentPublic(BaseModel):
    """One instalment of the schedule and where it stands."""

    number: int
    due_date: date
    principal: Money
    interest: Money
    total: Money
    paid: Money = Field(description="Repaid into it so far (repayments go to the oldest instalment first).")
    status: Literal["scheduled", "due", "paid", "overdue"] = Field(description=(
        "`scheduled` until its due date by credit's clock; then `due`, and collected from the borrower's "
        "wallet under the loan's repayment mandate; `paid` once its total is in (collected or repaid); "
        "`overdue` when payments refused the collection (the wallet could not pay, the mandate is not "
        "live): collection is tried again once a day until it is paid."))
    last_collection_error: CollectionError | None = Field(
        default=None, description="Payments' answer to the last collection it refused; null once paid.")


class DisbursementPublic(BaseModel):
    """The payout's journal in the payments ledger."""

    journal_id: str
    amount: Money
    fee_charged_by_payments: Money
    disbursed_at: datetime


class PayoutError(BaseModel):
    """Why the last payout attempt failed; the loan stayed undisbursed and no money moved."""

    status: int
    type: str
    title: str
    detail: str | None


class RepaymentPublic(BaseModel):
    """A repayment: a transfer from the borrower's wallet back to the lender."""

    id: str = Field(examples=["rep_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    loan_id: str
    amount: Money
    status: Literal["completed"]
    journal_id: str
    created_at: datetime


class LoanPublic(BaseModel):
    """A loan: its terms, payout, schedule and repayments."""

    id: str = Field(examples=["loan_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    application_id: str
    participant_id: str | None = Field(description=OWNER_DESCRIPTION + " Its payments hops are made on its behalf.")
    status: Literal["approved", "disbursing", "disbursed", "repaid"]
    account_id: str
    lender_account_id: str
    repayment_mandate_id: str | None = Field(
        description="The mandate repayments debit `account_id` under; null: repayments go through only "
        "if the lender opened `account_id` itself.")
    principal: Money
    apr_percent: str
    term_months: int
    disbursement: DisbursementPublic | None
    last_payout_error: PayoutError | None
    schedule: list[InstalmentPublic] = Field(description="Set when the loan is disbursed.")
    repaid: Money
    outstanding: Money
    repayments: list[RepaymentPublic]
    timings: Timings


class RepaymentCreate(BaseModel):
    """Repay part or all of a loan from the borrower's wallet."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"amount": {"amount": "1732.38", "currency": "CNY"}}]}
    )

    amount: AmountIn


class BinPublic(BaseModel):
    label: str
    lower: float | None
    upper: float | None
    missing: bool
    woe: float
    points: int
    training_share: float


class CharacteristicPublic(BaseModel):
    name: str
    description: str
    unit: str
    reason_code: str
    reason: str
    coefficient: float
    max_points: int
    min_points: int
    bins: list[BinPublic]


class ScorecardPublic(BaseModel):
    """The whole scorecard: every bin's points, the scaling and the lending policy."""

    model_version: str
    kind: str
    scaling: dict[str, float]
    policy: dict[str, Any]
    characteristics: list[CharacteristicPublic]


class ModelPublic(BaseModel):
    """Which model decides, how it was trained and how well it separates good from bad."""

    model_version: str
    kind: str
    trained_with: str
    population: dict[str, Any]
    validation: dict[str, float]
    inputs: list[str] = Field(description="Every model input; no protected attribute among them.")


class GroupFairness(BaseModel):
    group: str
    count: int
    approval_rate: float
    true_positive_rate: float | None = None
    false_positive_rate: float | None = None


class AttributeFairness(BaseModel):
    """Demographic parity ratio (min/max approval rate across groups), equalized-odds difference."""

    demographic_parity_ratio: float | None
    equalized_odds_difference: float | None
    flagged: bool = Field(description="Demographic parity ratio below the 0.8 (four-fifths) threshold.")
    groups: list[GroupFairness]


class PsiBin(BaseModel):
    score_from: int
    score_to: int
    training_share: float
    recent_share: float


class StabilityPublic(BaseModel):
    """Population stability index of recent applicants' scores against training."""

    psi: float | None
    status: Literal["stable", "moderate-shift", "significant-shift", "insufficient-data"]
    recent_applications: int
    bins: list[PsiBin]


class FairnessReport(BaseModel):
    """Fairness on the synthetic hold-out, stability of recent applicants, and what is flagged."""

    model_version: str
    threshold: float
    holdout: dict[str, AttributeFairness]
    holdout_decision: str
    recent_applicants: dict[str, AttributeFairness] = Field(
        description="Approval rates by self-declared monitoring data of stored applications."
    )
    stability: StabilityPublic
    flags: list[str]
