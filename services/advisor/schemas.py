"""The advisor API's request and response models. Money is a decimal string; weights, returns
and volatilities are plain fractions (0.6 = 60%); fund units are decimal strings with 6 dp."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from services.common.fields import IdField, Text
from services.common.ids import id_pattern
from services.common.money import Money, positive_amount_pattern

RISK_PROFILE_PREFIX = "rp"
ACCOUNT_PREFIX = "inv"
DEPOSIT_PREFIX = "dpt"
WALLET_PREFIX = "acc"
MANDATE_PREFIX = "mdt"

Goal = Literal["retirement", "major_purchase", "education", "general_investing", "emergency_fund"]
AssetClassCode = Literal["cn_equity", "us_equity", "dev_equity", "em_equity", "cn_gov_bond",
                         "cn_credit_bond", "global_bond"]
# Strict: a JSON `true` is not the number 1, so the contract is exactly what is accepted.
def _json_integer(value: Any) -> int:
    """A JSON integer: 85 or 85.0 (JSON Schema counts both), never `true` or "85"."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not value.is_integer()):
        raise ValueError("must be a JSON integer")
    return int(value)


def _json_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return float(value)


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
JsonNumber = Annotated[float, BeforeValidator(_json_number)]
_FORBID = ConfigDict(extra="forbid", strict=True)
# Up to a billion yuan: larger sums are not what a teaching robo-advisor sees.
_NONNEG_CNY = r"^(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?$"
_POSITIVE_CNY = positive_amount_pattern(2).replace("{0,14}", "{0,9}")


class CnyAmount(BaseModel):
    """A non-negative CNY amount (income, savings): decimal string, at most 2 decimals."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"amount": "150000.00", "currency": "CNY"}]})

    amount: str = Field(pattern=_NONNEG_CNY)
    currency: Literal["CNY"]

    @property
    def minor(self) -> int:
        whole, _, frac = self.amount.partition(".")
        return int(whole) * 100 + int((frac + "00")[:2])


class PositiveCnyAmount(CnyAmount):
    """A positive CNY amount, at most 2 decimals, up to a billion yuan."""

    amount: str = Field(pattern=_POSITIVE_CNY)


class RiskQuestionnaire(BaseModel):
    """The questionnaire: capacity (age, horizon, income, savings) and willingness (loss
    reaction, priority, experience). See the risk-profile description for the scoring."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{
                "age": 30, "horizon_years": 30,
                "annual_income": {"amount": "150000.00", "currency": "CNY"},
                "liquid_net_worth": {"amount": "100000.00", "currency": "CNY"},
                "goal": "retirement", "loss_reaction": "hold", "priority": "balanced",
                "experience": "some",
            }]
        },
    )

    age: JsonInt = Field(ge=18, le=100, description="Age in years.")
    horizon_years: JsonInt = Field(ge=1, le=50, description="Years until the money is needed.")
    annual_income: CnyAmount
    liquid_net_worth: CnyAmount = Field(description="Savings and investments you could sell within a week.")
    goal: Goal
    loss_reaction: Literal["sell_all", "sell_some", "hold", "buy_more"] = Field(
        description="If your portfolio fell 20% in a month, you would…")
    priority: Literal["minimise_losses", "balanced", "maximise_gains"] = Field(
        description="When you invest, you care most about…")
    experience: Literal["none", "some", "extensive"] = Field(description="Your investing experience.")


class Contribution(BaseModel):
    """What one answer added to (or, for consistency, took from) the score."""

    question: str
    answer: str
    part: Literal["capacity", "willingness", "consistency", "goal"] = Field(
        description="`goal` adds no points: it explains the glide path the goal sets."
    )
    points: float = Field(description="Points within its part (each part is out of 10).")
    max_points: float
    score_contribution: float = Field(description="What it adds to the unrounded score.")
    explanation: str


class AllocationLine(BaseModel):
    asset_class: str
    name: str
    kind: Literal["equity", "bond"]
    weight: float = Field(ge=0, le=1)
    fund: str = Field(description="The fund that holds this class (its primary fund).")


class ModelPortfolioPublic(BaseModel):
    """An efficient portfolio for one risk level, with its expected return and volatility
    under the shipped capital-market assumptions (annual, before fees)."""

    level: int = Field(ge=0, le=20)
    risk_score: float = Field(ge=0, le=10)
    equity_share: float
    bond_share: float
    expected_return: float
    volatility: float
    allocations: list[AllocationLine]


class RiskProfilePublic(BaseModel):
    """A scored questionnaire and the portfolio it leads to."""

    id: str
    score: float = Field(description="Risk score on the published 0-10 scale, in steps of 0.5.")
    scale: str
    level: int
    capacity: float
    willingness: float
    consistency: float
    raw_score: float
    formula: str
    contributions: list[Contribution]
    goal: str
    horizon_years: int
    recommended: ModelPortfolioPublic = Field(description="The profile's portfolio after the glide path.")
    created_at: datetime


class GlidePoint(BaseModel):
    years_left: int
    level: int
    equity_share: float
    expected_return: float
    volatility: float


class GlidePathPublic(BaseModel):
    """How the allocation steps down as the goal nears."""

    goal: str
    profile_level: int
    rule: str
    points: list[GlidePoint]


class AssetClassPublic(BaseModel):
    code: str
    name: str
    kind: Literal["equity", "bond"]
    expected_return: float
    volatility: float
    max_weight: float
    primary_fund: str
    substitute_fund: str


class AssumptionsPublic(BaseModel):
    """The capital-market assumptions every allocation is computed from (synthetic, educational)."""

    title: str
    disclaimer: str
    as_of: str
    currency: str
    risk_free_rate: float
    asset_classes: list[AssetClassPublic]
    correlation_order: list[str]
    correlations: list[list[float]]


class FundPublic(BaseModel):
    code: str
    name: str
    asset_class: str
    index: str
    role: Literal["primary", "substitute"]
    alternate: str = Field(description="The correlated fund on another index used for tax-loss harvesting.")
    expense_ratio: float
    nav: str = Field(pattern=r"^[0-9]+\.[0-9]{4}$", description="Net asset value per unit, CNY, 4 dp.")


class ShockIn(BaseModel):
    model_config = _FORBID

    asset_class: AssetClassCode
    pct: JsonNumber = Field(ge=-90, le=100, description="Percent move on the new day, e.g. -20.")


class MarketAdvance(BaseModel):
    """Move the market (and the service clock) forward, optionally with shocks on the new day."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"days": 30, "shocks": [{"asset_class": "us_equity", "pct": -20}]}]},
    )

    days: JsonInt = Field(ge=0, le=366)
    shocks: list[ShockIn] = Field(default_factory=list, max_length=7)


class ShockPublic(BaseModel):
    day: int
    date: date
    asset_class: str
    pct: float


class MarketPublic(BaseModel):
    """Today's simulated NAVs: deterministic from the seed, the day and the recorded shocks."""

    seed: int
    day: int
    date: date
    funds: list[FundPublic]
    shocks: list[ShockPublic]


FUNDING_MANDATE_DESCRIPTION = (
    "The wallet owner's debit mandate to your firm (`mdt_…`, kept by payments), sent with every "
    "deposit's wallet debit. Needed unless your firm opened the wallet itself: payments debits "
    "another's wallet only under one, and checks its grantee, caps and expiry at each deposit.")


class AccountCreate(BaseModel):
    """Open an investor account on a risk profile, funded later from the investor's wallet."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{
            "owner_name": "Li Wei",
            "wallet_account_id": "acc_00000000000000000000000001",
            "funding_mandate_id": "mdt_00000000000000000000000001",
            "risk_profile_id": "rp_01jd3k8m9q2w4e6r8t0y2u4i6o",
        }]},
    )

    owner_name: str = Text(100, "Whose account it is.", ["Li Wei"])
    wallet_account_id: str = IdField(WALLET_PREFIX, "The investor's wallet in payments, which funds the account.")
    funding_mandate_id: str | None = Field(None, pattern=id_pattern(MANDATE_PREFIX),
                                           examples=["mdt_00000000000000000000000001"],
                                           description=FUNDING_MANDATE_DESCRIPTION)
    risk_profile_id: str = IdField(RISK_PROFILE_PREFIX, "The scored questionnaire to invest by.")


class AccountUpdate(BaseModel):
    """Fund the account under another mandate (the last one was revoked, expired or used up)."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"funding_mandate_id": "mdt_00000000000000000000000001"}]})

    funding_mandate_id: str | None = Field(pattern=id_pattern(MANDATE_PREFIX),
                                           examples=["mdt_00000000000000000000000001"],
                                           description=FUNDING_MANDATE_DESCRIPTION + " Null: none.")


class DepositCreate(BaseModel):
    """Move money from the investor's wallet into the account; it is invested at once."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"amount": {"amount": "1000.00", "currency": "CNY"}}]})

    amount: PositiveCnyAmount


class HoldingPublic(BaseModel):
    fund: str
    asset_class: str
    units: str
    nav: str
    value: Money
    cost: Money
    unrealised_gain: Money


class WeightPublic(BaseModel):
    asset_class: str
    target: float
    actual: float


class InvestorAccountPublic(BaseModel):
    """An investor account valued at today's NAVs."""

    id: str
    owner_name: str
    wallet_account_id: str
    funding_mandate_id: str | None = Field(description="The mandate deposits debit the wallet under.")
    risk_profile_id: str
    goal: str
    horizon_years: int
    years_left: int
    status: Literal["awaiting_funding", "active"]
    profile_level: int
    target_level: int = Field(description="The profile's level after the glide path for the years left.")
    expected_return: float
    volatility: float
    value: Money
    cash: Money
    deposited: Money
    drift: float = Field(description="½ Σ|actual − target| over the asset classes, cash included.")
    weights: list[WeightPublic]
    holdings: list[HoldingPublic]
    as_of: datetime


class TradePublic(BaseModel):
    """One order for one fund: executed (with an id) or only proposed (dry run)."""

    id: str | None
    side: Literal["buy", "sell"]
    fund: str
    asset_class: str
    units: str
    nav: str
    amount: Money
    reason: Literal["deposit", "rebalance", "harvest"]
    executed_at: datetime | None


class DepositPublic(BaseModel):
    """A deposit: `completed` once payments moved the money and the units were bought."""

    id: str
    account_id: str
    amount: Money
    status: Literal["pending", "completed", "failed"]
    payments_journal_id: str | None
    merchant_fee: Money = Field(description="Payments' merchant fee on the custody account, borne by the advisor.")
    failure: dict | None
    trades: list[TradePublic]
    created_at: datetime


class RebalanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"dry_run": True, "threshold": 0.03}]})

    dry_run: bool = Field(False, description="Only list the trades.")
    threshold: JsonNumber = Field(0.03, ge=0.005, le=0.5, description="Drift that triggers selling (0.03 = 3%).")


class RebalancePublic(BaseModel):
    """The trades a rebalance proposes or made, and the drift before and after."""

    account_id: str
    dry_run: bool
    threshold: float
    drift_before: float
    drift_after: float
    trades: list[TradePublic]
    deferred: list[str] = Field(description="Classes not bought because both their funds are in a wash-sale window.")


class HarvestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"dry_run": False, "loss_threshold": 0.05}]})

    dry_run: bool = Field(False, description="Only list what would be harvested.")
    loss_threshold: JsonNumber = Field(0.05, ge=0.005, le=0.9, description="Harvest lots down more than this (0.05 = 5%).")


class HarvestedLot(BaseModel):
    lot_id: str
    fund: str
    units: str
    cost: Money
    proceeds: Money
    loss: Money


class HarvestSkip(BaseModel):
    fund: str
    reason: Literal["wash-sale-lookback", "replacement-in-wash-window"]
    detail: str


class HarvestPublic(BaseModel):
    """Lots sold at a loss, the substitutes bought, and the losses harvested."""

    account_id: str
    dry_run: bool
    loss_threshold: float
    harvested_loss: Money
    lots: list[HarvestedLot]
    trades: list[TradePublic]
    skipped: list[HarvestSkip]


class DisposalPublic(BaseModel):
    lot_id: str
    fund: str
    units: str
    proceeds: Money
    cost: Money
    gain: Money
    reason: str
    sold_at: datetime


class TaxReportPublic(BaseModel):
    """Realised gains and losses, and how much of the losses were harvested."""

    account_id: str
    realised_gains: Money
    realised_losses: Money
    net_realised: Money
    harvested_losses: Money
    disposals: list[DisposalPublic]


class ProjectionRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"risk_level": 11, "initial": {"amount": "10000.00", "currency": "CNY"},
                                         "years": 30, "paths": 10000, "seed": 42}]},
    )

    risk_level: JsonInt = Field(ge=0, le=20, description="Model portfolio level (2 × risk score).")
    initial: PositiveCnyAmount
    monthly_contribution: CnyAmount | None = None
    years: JsonInt = Field(30, ge=1, le=50)
    paths: JsonInt = Field(10000, ge=100, le=10000)
    seed: JsonInt = Field(42, ge=0, le=2**32 - 1, description="Same seed, same percentiles.")


class ProjectionYear(BaseModel):
    year: int
    contributed: Money
    p5: Money
    p25: Money
    p50: Money
    p75: Money
    p95: Money


class FeeScenario(BaseModel):
    name: str
    annual_fee: float
    years: list[ProjectionYear]


class ProjectionPublic(BaseModel):
    """Percentiles of the portfolio's value each year, at the robo fee and an adviser's fee."""

    risk_level: int
    expected_return: float
    volatility: float
    years: int
    paths: int
    seed: int
    scenarios: list[FeeScenario]
    median_fee_drag: Money = Field(description="Median final value at 0.25% minus at 1.5%.")
