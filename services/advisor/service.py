"""The advisor's rules: score a questionnaire, open and fund accounts, trade tax lots,
rebalance, harvest losses, project outcomes.

Functions work in the caller's session; the endpoint's unit of work commits. Funding is the one
exception: the deposit row is committed before payments is called (intent first).

Every risk profile and account belongs to the participant that created it (`participant_id`);
deposits, trades, lots and reports belong to their account. Another participant gets 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel
from sqlmodel import Session

from services.advisor import harvesting, portfolios, projections, rebalancing, risk
from services.advisor.assumptions import Assumptions
from services.advisor.market import MarketSimulator, Shock
from services.advisor.models import (
    Deposit,
    Events,
    InvestorAccount,
    Lot,
    LotDisposal,
    MarketShockRow,
    RiskProfile,
    Trade,
)
from services.advisor.repository import AdvisorRepository
from services.advisor.schemas import (
    AccountCreate,
    AccountUpdate,
    AllocationLine,
    AssetClassPublic,
    AssumptionsPublic,
    Contribution,
    DepositCreate,
    DepositPublic,
    DisposalPublic,
    FeeScenario,
    FundPublic,
    GlidePathPublic,
    GlidePoint,
    HarvestedLot,
    HarvestPublic,
    HarvestRequest,
    HarvestSkip,
    HoldingPublic,
    InvestorAccountPublic,
    MarketAdvance,
    MarketPublic,
    ModelPortfolioPublic,
    ProjectionPublic,
    ProjectionRequest,
    ProjectionYear,
    RebalancePublic,
    RebalanceRequest,
    RiskProfilePublic,
    RiskQuestionnaire,
    ShockPublic,
    TaxReportPublic,
    TradePublic,
    WeightPublic,
)
from services.advisor.units import format_nav, format_units, units_for, value_of
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

CNY = "CNY"
ROBO_FEE = 0.0025
ADVISER_FEE = 0.015


@dataclass
class Advisor:
    """What every rule needs besides the session: assumptions, the market, payments, policy."""

    assumptions: Assumptions
    market: MarketSimulator
    payments: PaymentsClient
    custody_account_id: str
    minimum_first_deposit_minor: int
    maximum_deposit_minor: int
    min_trade_minor: int
    min_harvest_loss_minor: int
    market_epoch: date

    def day(self, now: datetime) -> int:
        return max(0, (now.date() - self.market_epoch).days)

    def navs(self, session: Session, now: datetime) -> dict[str, int]:
        shocks = [Shock(s.day, s.asset_class, s.pct) for s in AdvisorRepository(session).shocks()]
        return self.market.navs(self.day(now), shocks)

    def class_of(self, fund: str) -> str:
        f = self.assumptions.fund(fund)
        assert f is not None
        return f.asset_class

    @property
    def identical(self) -> dict[str, str]:
        return {f.code: f.index for f in self.assumptions.funds}

    @property
    def alternates(self) -> dict[str, str]:
        return {f.code: self.assumptions.alternate_of(f.code).code for f in self.assumptions.funds}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---- allocations ---------------------------------------------------------------------------

def portfolio_public(adv: Advisor, level: int) -> ModelPortfolioPublic:
    p = portfolios.portfolio(level)
    lines = []
    for c in adv.assumptions.classes:
        primary, _ = adv.assumptions.funds_of(c.code)
        lines.append(AllocationLine(asset_class=c.code, name=c.name, kind=c.kind,  # type: ignore[arg-type]
                                    weight=p.weights[c.code], fund=primary.code))
    return ModelPortfolioPublic(
        level=p.level, risk_score=p.risk_score, equity_share=p.equity_share,
        bond_share=round(1 - p.equity_share, 4), expected_return=p.expected_return,
        volatility=p.volatility, allocations=lines,
    )


def assumptions_public(adv: Advisor) -> AssumptionsPublic:
    a = adv.assumptions
    return AssumptionsPublic(
        title=a.title, disclaimer=a.disclaimer, as_of=a.as_of, currency=a.currency,
        risk_free_rate=a.risk_free_rate,
        asset_classes=[
            AssetClassPublic(code=c.code, name=c.name, kind=c.kind, expected_return=c.expected_return,  # type: ignore[arg-type]
                             volatility=c.volatility, max_weight=c.max_weight,
                             primary_fund=a.funds_of(c.code)[0].code, substitute_fund=a.funds_of(c.code)[1].code)
            for c in a.classes
        ],
        correlation_order=a.codes,
        correlations=a.correlations.tolist(),
    )


def funds_public(adv: Advisor, navs: dict[str, int]) -> list[FundPublic]:
    return [
        FundPublic(code=f.code, name=f.name, asset_class=f.asset_class, index=f.index, role=f.role,  # type: ignore[arg-type]
                   alternate=adv.assumptions.alternate_of(f.code).code, expense_ratio=f.expense_ratio,
                   nav=format_nav(navs[f.code]))
        for f in adv.assumptions.funds
    ]


def glide_path(goal: str, profile_level: int, horizon_years: int) -> GlidePathPublic:
    points = []
    for years_left in range(horizon_years, -1, -1):
        level = portfolios.glide_level(profile_level, goal, years_left)
        p = portfolios.portfolio(level)
        points.append(GlidePoint(years_left=years_left, level=level, equity_share=p.equity_share,
                                 expected_return=p.expected_return, volatility=p.volatility))
    return GlidePathPublic(goal=goal, profile_level=profile_level, rule=portfolios.GLIDE_RULES[goal], points=points)


# ---- risk profiles -------------------------------------------------------------------------

def score_questionnaire(session: Session, adv: Advisor, body: RiskQuestionnaire, now: datetime,
                        caller: Caller) -> RiskProfilePublic:
    answers = risk.Answers(
        age=body.age, horizon_years=body.horizon_years, annual_income_minor=body.annual_income.minor,
        liquid_net_worth_minor=body.liquid_net_worth.minor, goal=body.goal,
        loss_reaction=body.loss_reaction, priority=body.priority, experience=body.experience,
    )
    scored = risk.score_answers(answers)
    row = RiskProfile(
        id=new_id("rp"), participant_id=caller.authority, answers=body.model_dump(mode="json"),
        score=scored.score, level=scored.level,
        result={
            "capacity": scored.capacity, "willingness": scored.willingness, "consistency": scored.consistency,
            "raw_score": scored.raw_score,
            "contributions": [c.__dict__ for c in scored.contributions],
        },
        created_at=now,
    )
    AdvisorRepository(session).add(row)
    return profile_public(adv, row)


def profile_public(adv: Advisor, row: RiskProfile) -> RiskProfilePublic:
    r = row.result
    goal, horizon = row.answers["goal"], row.answers["horizon_years"]
    return RiskProfilePublic(
        id=row.id, score=row.score, scale="0 (least risk) to 10 (most), in steps of 0.5", level=row.level,
        capacity=r["capacity"], willingness=r["willingness"], consistency=r["consistency"],
        raw_score=r["raw_score"],
        formula="score = floor to 0.5 of (0.75 × the lower of willingness×consistency and capacity "
                "+ 0.25 × the higher); level = 2 × score",
        contributions=[Contribution(**c) for c in r["contributions"]],
        goal=goal, horizon_years=horizon,
        recommended=portfolio_public(adv, portfolios.glide_level(row.level, goal, horizon)),
        created_at=_aware(row.created_at),
    )


def listed_owners(caller: Caller) -> list[str] | None:
    """Whose resources a list shows this caller: its own (and its originator's); None: everyone's."""
    if not caller.restricted:
        return None
    return [p for p in (caller.participant_id, caller.on_behalf_of) if p]


def get_profile(session: Session, profile_id: str, caller: Caller) -> RiskProfile:
    row = AdvisorRepository(session).risk_profile(profile_id)
    if row is None or not caller.may_use(row.participant_id):
        raise not_found("Risk profile", profile_id)
    return row


# ---- accounts and valuation ----------------------------------------------------------------

def open_account(session: Session, adv: Advisor, body: AccountCreate, now: datetime,
                 caller: Caller) -> InvestorAccountPublic:
    profile = get_profile(session, body.risk_profile_id, caller)
    account = InvestorAccount(
        id=new_id("inv"), participant_id=caller.authority, owner_name=body.owner_name,
        wallet_account_id=body.wallet_account_id, funding_mandate_id=body.funding_mandate_id,
        risk_profile_id=profile.id, profile_level=profile.level, goal=profile.answers["goal"],
        horizon_years=profile.answers["horizon_years"], currency=CNY, status="awaiting_funding", created_at=now,
    )
    AdvisorRepository(session).add(account)
    return account_public(session, adv, account, now)


def set_funding_mandate(session: Session, adv: Advisor, account_id: str, body: AccountUpdate, now: datetime,
                        caller: Caller) -> InvestorAccountPublic:
    account = get_account(session, account_id, caller, for_update=True)
    account.funding_mandate_id = body.funding_mandate_id  # payments checks it at the next deposit
    session.add(account)
    return account_public(session, adv, account, now)


def get_account(session: Session, account_id: str, caller: Caller, for_update: bool = False) -> InvestorAccount:
    account = AdvisorRepository(session).account(account_id, for_update)
    if account is None or not caller.may_use(account.participant_id):
        raise not_found("Investor account", account_id)
    return account


def years_left(account: InvestorAccount, now: datetime) -> int:
    return max(0, account.horizon_years - (now - _aware(account.created_at)).days // 365)


def target_level(account: InvestorAccount, now: datetime) -> int:
    return portfolios.glide_level(account.profile_level, account.goal, years_left(account, now))


def class_values(adv: Advisor, lots: list[Lot], navs: dict[str, int]) -> dict[str, int]:
    values = {c: 0 for c in adv.assumptions.codes}
    for lot in lots:
        values[adv.class_of(lot.fund_code)] += value_of(lot.units_micro, navs[lot.fund_code])
    return values


def account_public(session: Session, adv: Advisor, account: InvestorAccount, now: datetime) -> InvestorAccountPublic:
    navs = adv.navs(session, now)
    lots = AdvisorRepository(session).open_lots(account.id) if account.status == "active" else []
    level = target_level(account, now)
    target = portfolios.portfolio(level)
    values = class_values(adv, lots, navs)
    total = sum(values.values()) + account.cash_minor
    by_fund: dict[str, list[Lot]] = {}
    for lot in lots:
        by_fund.setdefault(lot.fund_code, []).append(lot)
    holdings = []
    for fund, fund_lots in sorted(by_fund.items()):
        units = sum(lot.units_micro for lot in fund_lots)
        cost = sum(lot.cost_minor for lot in fund_lots)
        value = value_of(units, navs[fund])
        holdings.append(HoldingPublic(fund=fund, asset_class=adv.class_of(fund), units=format_units(units),
                                      nav=format_nav(navs[fund]), value=Money.of(value, CNY),
                                      cost=Money.of(cost, CNY), unrealised_gain=Money.of(value - cost, CNY)))
    return InvestorAccountPublic(
        id=account.id, owner_name=account.owner_name, wallet_account_id=account.wallet_account_id,
        funding_mandate_id=account.funding_mandate_id, risk_profile_id=account.risk_profile_id,
        goal=account.goal, horizon_years=account.horizon_years,
        years_left=years_left(account, now), status=account.status,  # type: ignore[arg-type]
        profile_level=account.profile_level, target_level=level,
        expected_return=target.expected_return, volatility=target.volatility,
        value=Money.of(total, CNY), cash=Money.of(account.cash_minor, CNY),
        deposited=Money.of(account.deposited_minor, CNY),
        drift=round(rebalancing.drift(values, account.cash_minor, target.weights), 6),
        weights=[WeightPublic(asset_class=c, target=target.weights[c],
                              actual=round(values[c] / total, 6) if total else 0.0) for c in adv.assumptions.codes],
        holdings=holdings,
        as_of=now,
    )


# ---- trading -------------------------------------------------------------------------------

def _restricted(session: Session, adv: Advisor, account_id: str, now: datetime) -> set[str]:
    since = now - timedelta(days=harvesting.WASH_SALE_DAYS)
    sales = [harvesting.LossSale(d.fund_code, _aware(d.sold_at))
             for d in AdvisorRepository(session).loss_disposals_since(account_id, since)]
    return harvesting.restricted_funds(sales, now, adv.identical)


def buyable_fund(adv: Advisor, asset_class: str, restricted: set[str]) -> str | None:
    """The class's primary fund, or its substitute while the primary is in a wash-sale window."""
    for fund in adv.assumptions.funds_of(asset_class):
        if fund.index not in restricted:
            return fund.code
    return None


def trade_public(trade: Trade, adv: Advisor, executed: bool = True) -> TradePublic:
    return TradePublic(
        id=trade.id if executed else None, side=trade.side, fund=trade.fund_code,  # type: ignore[arg-type]
        asset_class=adv.class_of(trade.fund_code), units=format_units(trade.units_micro),
        nav=format_nav(trade.nav_e4), amount=Money.of(trade.amount_minor, CNY),
        reason=trade.reason,  # type: ignore[arg-type]
        executed_at=_aware(trade.executed_at) if executed else None,
    )


def buy(session: Session, account: InvestorAccount, fund: str, amount: int, navs: dict[str, int],
        now: datetime, reason: str, batch: str) -> Trade | None:
    amount = min(amount, account.cash_minor)
    units = units_for(amount, navs[fund])
    if units <= 0:
        return None
    trade = Trade(id=new_id("trd"), account_id=account.id, batch_id=batch, reason=reason, side="buy",
                  fund_code=fund, units_micro=units, nav_e4=navs[fund], amount_minor=amount, executed_at=now)
    repo = AdvisorRepository(session)
    repo.add(trade)
    repo.add(Lot(id=new_id("lot"), account_id=account.id, fund_code=fund, units_micro=units,
                 original_units_micro=units, cost_minor=amount, acquired_at=now, trade_id=trade.id))
    account.cash_minor -= amount
    return trade


def sell_lots(session: Session, account: InvestorAccount, fund: str, lots: list[tuple[Lot, int]],
              navs: dict[str, int], now: datetime, reason: str, batch: str) -> tuple[Trade, list[LotDisposal]]:
    """Sell `units` of each (lot, units) of one fund as one order."""
    nav = navs[fund]
    trade = Trade(id=new_id("trd"), account_id=account.id, batch_id=batch, reason=reason, side="sell",
                  fund_code=fund, units_micro=0, nav_e4=nav, amount_minor=0, executed_at=now)
    repo = AdvisorRepository(session)
    repo.add(trade)
    disposals = []
    for lot, units in lots:
        proceeds = value_of(units, nav)
        cost = lot.cost_minor if units == lot.units_micro else lot.cost_minor * units // lot.units_micro
        lot.units_micro -= units
        lot.cost_minor -= cost
        disposal = LotDisposal(trade_id=trade.id, account_id=account.id, lot_id=lot.id, fund_code=fund,
                               units_micro=units, proceeds_minor=proceeds, cost_minor=cost,
                               gain_minor=proceeds - cost, reason=reason, sold_at=now)
        repo.add(disposal)
        disposals.append(disposal)
        trade.units_micro += units
        trade.amount_minor += proceeds
    account.cash_minor += trade.amount_minor
    session.add(trade)
    session.add(account)
    session.flush()
    return trade, disposals


def sell_class(session: Session, adv: Advisor, account: InvestorAccount, asset_class: str, amount: int,
               lots: list[Lot], navs: dict[str, int], now: datetime, batch: str) -> list[Trade]:
    """Raise `amount` from a class: its biggest fund first, highest-cost lots first (fewest gains)."""
    by_fund: dict[str, list[Lot]] = {}
    for lot in lots:
        if adv.class_of(lot.fund_code) == asset_class and lot.units_micro > 0:
            by_fund.setdefault(lot.fund_code, []).append(lot)
    funds = sorted(by_fund, key=lambda f: -sum(value_of(lot.units_micro, navs[f]) for lot in by_fund[f]))
    trades, remaining = [], amount
    for fund in funds:
        if remaining <= 0:
            break
        nav = navs[fund]
        picks = []
        for lot in sorted(by_fund[fund], key=lambda lot: -lot.cost_minor / lot.units_micro):
            if remaining <= 0:
                break
            units = min(lot.units_micro, -(-remaining * 10**8 // nav))
            picks.append((lot, units))
            remaining -= value_of(units, nav)
        trade, _ = sell_lots(session, account, fund, picks, navs, now, "rebalance", batch)
        trades.append(trade)
    return trades


def invest(session: Session, adv: Advisor, account: InvestorAccount, buys: dict[str, int], navs: dict[str, int],
           now: datetime, reason: str, batch: str) -> tuple[list[Trade], list[str]]:
    restricted = _restricted(session, adv, account.id, now)
    trades, deferred = [], []
    for asset_class, amount in buys.items():
        fund = buyable_fund(adv, asset_class, restricted)
        if fund is None:
            deferred.append(asset_class)
            continue
        trade = buy(session, account, fund, amount, navs, now, reason, batch)
        if trade:
            trades.append(trade)
    session.add(account)
    return trades, deferred


# ---- events ---------------------------------------------------------------------------------

def record(session: Session, type: str, subject_id: str, account: InvestorAccount, now: datetime,
           resource: BaseModel) -> None:
    """An event in the caller's unit of work, for the account's firm: the resource as the API shows it."""
    record_event(session, Events, type, subject_id=subject_id, participant_id=account.participant_id,
                 occurred_at=now, data=resource.model_dump(mode="json"))


# ---- deposits (funding through payments) ---------------------------------------------------

def deposit_public(session: Session, adv: Advisor, deposit: Deposit) -> DepositPublic:
    order = {code: i for i, code in enumerate(adv.assumptions.codes)}
    # Ids only sort by millisecond, so list a batch in the order it was placed: by asset class.
    trades = sorted(AdvisorRepository(session).trades_of_batch(deposit.id),
                    key=lambda t: (t.side != "sell", order[adv.class_of(t.fund_code)], t.fund_code))
    return DepositPublic(
        id=deposit.id, account_id=deposit.account_id, amount=Money.of(deposit.amount_minor, deposit.currency),
        status=deposit.status, payments_journal_id=deposit.payments_journal_id,  # type: ignore[arg-type]
        merchant_fee=Money.of(deposit.merchant_fee_minor, deposit.currency), failure=deposit.failure,
        trades=[trade_public(t, adv) for t in trades], created_at=_aware(deposit.created_at),
    )


def create_deposit(session: Session, adv: Advisor, account_id: str, body: DepositCreate, now: datetime,
                   caller: Caller) -> DepositPublic:
    account = get_account(session, account_id, caller)
    amount = body.amount.minor
    repo = AdvisorRepository(session)
    if repo.completed_deposit_count(account.id) == 0 and amount < adv.minimum_first_deposit_minor:
        minimum = Money.of(adv.minimum_first_deposit_minor, CNY)
        raise Problem(409, "below-minimum-first-deposit", "The first deposit is below the minimum",
                      f"An account opens with at least {minimum.amount} CNY.", minimum=minimum.model_dump())
    if amount > adv.maximum_deposit_minor:
        maximum = Money.of(adv.maximum_deposit_minor, CNY)
        raise Problem(409, "above-maximum-deposit", "The deposit is above the sandbox's maximum",
                      f"One deposit may bring at most {maximum.amount} CNY.", maximum=maximum.model_dump())
    deposit = Deposit(id=new_id("dpt"), account_id=account.id, amount_minor=amount, currency=CNY,
                      status="pending", created_at=now)
    repo.add(deposit)
    record_first(session, "intent first: the row (and so the key) exists before any money moves")
    return settle_deposit(session, adv, account, deposit, now, caller)


def retry_deposit(session: Session, adv: Advisor, deposit_id: str, now: datetime, caller: Caller) -> DepositPublic:
    deposit = get_deposit(session, deposit_id, caller)
    if deposit.status != "pending":
        return deposit_public(session, adv, deposit)
    return settle_deposit(session, adv, get_account(session, deposit.account_id, caller), deposit, now, caller)


def get_deposit(session: Session, deposit_id: str, caller: Caller) -> Deposit:
    repo = AdvisorRepository(session)
    deposit = repo.deposit(deposit_id)
    # A deposit is its account's: its owner's, and nobody else's, to read or retry.
    account = repo.account(deposit.account_id) if deposit is not None else None
    if account is None or not caller.may_use(account.participant_id):
        raise not_found("Deposit", deposit_id)
    return deposit


def settle_deposit(session: Session, adv: Advisor, account: InvestorAccount, deposit: Deposit,
                   now: datetime, caller: Caller) -> DepositPublic:
    """Ask payments to move the money (same key on every attempt), then invest it.

    The debit is the account owner's, not the advisor's: it names the participant (so the
    gateway counts and screens it against that firm's limits) and the wallet owner's mandate."""
    try:
        journal = adv.payments.transfer(
            from_account=account.wallet_account_id, to_account=adv.custody_account_id,
            amount=Money.of(deposit.amount_minor, deposit.currency), key=deposit.id,
            description=f"Robo-advisor deposit {deposit.id}", mandate_id=account.funding_mandate_id,
            # The account's firm; an account opened directly (no owner) is its caller's to fund.
            on_behalf_of=account.participant_id or caller.authority,
        )
    except PaymentsUnavailable:
        return deposit_public(session, adv, deposit)  # still pending: retry with POST …/retry
    except PaymentRefused as refused:
        deposit.status = "failed"
        deposit.failure = {"status": refused.status, **{k: refused.problem.get(k) for k in ("type", "title", "detail")}}
        deposit.completed_at = now
        session.add(deposit)
        record_first(session, "the failed deposit outlives the refusal raised next")
        raise funding_refused(account, deposit, refused) from None
    account = get_account(session, account.id, caller, for_update=True)
    fee = journal.get("fee") or {"amount": "0", "currency": deposit.currency}
    deposit.status, deposit.payments_journal_id = "completed", journal["id"]
    deposit.merchant_fee_minor, deposit.completed_at = to_minor(fee["amount"], fee["currency"]), now
    account.cash_minor += deposit.amount_minor
    account.deposited_minor += deposit.amount_minor
    account.status = "active"
    session.add(deposit)
    # Cash flows first: the new money buys the underweight classes, nothing is sold.
    navs = adv.navs(session, now)
    lots = AdvisorRepository(session).open_lots(account.id)
    target = portfolios.portfolio(target_level(account, now)).weights
    buys = rebalancing.invest_cash(class_values(adv, lots, navs), account.cash_minor, target, adv.min_trade_minor)
    invest(session, adv, account, buys, navs, now, "deposit", deposit.id)
    session.flush()
    public = deposit_public(session, adv, deposit)
    # Only now that payments has answered, in the unit of work that records the money and units.
    record(session, "advisor.deposit.completed", deposit.id, account, now, public)
    return public


@dataclass(frozen=True)
class FundingRefusal:
    status: int
    slug: str
    title: str
    next_step: str


# What the advisor answers when payments (or the gateway, for the firm's limits) refuses a
# deposit's wallet debit, by the refusal's slug; a 404 means payments shows the firm no such
# wallet (not its own and no mandate named) or no such mandate granted to it.
FUNDING_REFUSALS: dict[str, FundingRefusal] = {
    "not-found": FundingRefusal(
        403, "funding-not-authorised", "The firm may not debit this wallet",
        "A wallet your firm did not open is debited only under its owner's mandate to your firm: "
        "set the account's funding_mandate_id (PATCH /accounts/{id})."),
    "mandate-inactive": FundingRefusal(
        403, "funding-mandate-inactive", "The funding mandate is not live",
        "Ask the wallet's owner for a new mandate and set it as the account's funding_mandate_id."),
    "mandate-limit": FundingRefusal(
        403, "funding-mandate-limit", "The deposit is over the funding mandate's caps",
        "Deposit at most what the mandate still allows, or wait for its next period."),
    "mandate-account-mismatch": FundingRefusal(
        409, "funding-mandate-mismatch", "The funding mandate is for another wallet",
        "The account's funding_mandate_id must name its own wallet."),
    "sandbox-limit": FundingRefusal(
        403, "funding-over-sandbox-limit", "The deposit is over the firm's sandbox limits",
        "The gateway counts what the advisor moves for your firm against your firm's own limits."),
}
FUNDING_FAILED = FundingRefusal(409, "funding-failed", "The wallet transfer was refused", "")


def funding_refused(account: InvestorAccount, deposit: Deposit, refused: PaymentRefused) -> Problem:
    """The deposit failed for good (nothing moved, no units bought): say why, in the advisor's words."""
    refusal = FUNDING_REFUSALS.get("not-found" if refused.status == 404 else refused.slug, FUNDING_FAILED)
    mandate = f"mandate {account.funding_mandate_id}" if account.funding_mandate_id else "no mandate"
    return Problem(refusal.status, refusal.slug, refusal.title,
                   f"Debiting wallet {account.wallet_account_id} under {mandate} was refused "
                   f"({refused.status}): {str(refused).rstrip('.')}. No money moved and no units were bought. "
                   f"{refusal.next_step}".rstrip(),
                   deposit_id=deposit.id, wallet_account_id=account.wallet_account_id,
                   funding_mandate_id=account.funding_mandate_id, payments_problem=deposit.failure)


# ---- rebalancing and harvesting ------------------------------------------------------------

def rebalance(session: Session, adv: Advisor, account_id: str, body: RebalanceRequest, now: datetime,
              caller: Caller) -> RebalancePublic:
    account = get_account(session, account_id, caller, for_update=True)
    navs = adv.navs(session, now)
    lots = AdvisorRepository(session).open_lots(account.id)
    target = portfolios.portfolio(target_level(account, now)).weights
    values = class_values(adv, lots, navs)
    plan = rebalancing.plan_rebalance(values, account.cash_minor, target, body.threshold, adv.min_trade_minor)
    batch = new_id("rb")
    trades: list[Trade] = []
    for asset_class, amount in plan.trades.items():
        if amount < 0:
            trades += sell_class(session, adv, account, asset_class, -amount, lots, navs, now, batch)
    bought, deferred = invest(session, adv, account, {c: a for c, a in plan.trades.items() if a > 0},
                              navs, now, "rebalance", batch)
    trades += bought
    after = rebalancing.drift(class_values(adv, lots + _new_lots(session, account.id, lots), navs),
                              account.cash_minor, target)
    result = RebalancePublic(account_id=account.id, dry_run=body.dry_run, threshold=body.threshold,
                             drift_before=round(plan.drift_before, 6), drift_after=round(after, 6),
                             trades=[trade_public(t, adv, not body.dry_run) for t in trades], deferred=deferred)
    if body.dry_run:
        session.rollback()  # a dry run lists the trades and keeps nothing
    elif trades:  # within the threshold nothing trades, and nothing was rebalanced
        record(session, "advisor.account.rebalanced", account.id, account, now, result)
    return result


def _new_lots(session: Session, account_id: str, known: list[Lot]) -> list[Lot]:
    ids = {lot.id for lot in known}
    return [lot for lot in AdvisorRepository(session).open_lots(account_id) if lot.id not in ids]


def harvest(session: Session, adv: Advisor, account_id: str, body: HarvestRequest, now: datetime,
            caller: Caller) -> HarvestPublic:
    account = get_account(session, account_id, caller, for_update=True)
    navs = adv.navs(session, now)
    repo = AdvisorRepository(session)
    lots = repo.open_lots(account.id)
    views = [harvesting.LotView(lot.id, lot.fund_code, lot.units_micro, lot.cost_minor,
                                value_of(lot.units_micro, navs[lot.fund_code]), _aware(lot.acquired_at))
             for lot in lots]
    since = now - timedelta(days=harvesting.WASH_SALE_DAYS)
    sales = [harvesting.LossSale(d.fund_code, _aware(d.sold_at)) for d in repo.loss_disposals_since(account.id, since)]
    planned, skipped = harvesting.plan_harvest(views, sales, adv.alternates, adv.identical, now,
                                               body.loss_threshold, adv.min_harvest_loss_minor)
    by_id = {lot.id: lot for lot in lots}
    batch = new_id("tlh")
    trades, harvested, total_loss = [], [], 0
    for plan in planned:
        sell, disposals = sell_lots(session, account, plan.fund,
                                    [(by_id[v.id], v.units_micro) for v in plan.lots], navs, now, "harvest", batch)
        trades.append(sell)
        for d in disposals:
            harvested.append(HarvestedLot(lot_id=d.lot_id, fund=d.fund_code, units=format_units(d.units_micro),
                                          cost=Money.of(d.cost_minor, CNY), proceeds=Money.of(d.proceeds_minor, CNY),
                                          loss=Money.of(-d.gain_minor, CNY)))
            total_loss += -d.gain_minor
        replacement = buy(session, account, plan.replacement, sell.amount_minor, navs, now, "harvest", batch)
        if replacement:
            trades.append(replacement)
    session.add(account)
    result = HarvestPublic(
        account_id=account.id, dry_run=body.dry_run, loss_threshold=body.loss_threshold,
        harvested_loss=Money.of(total_loss, CNY), lots=harvested,
        trades=[trade_public(t, adv, not body.dry_run) for t in trades],
        skipped=[HarvestSkip(fund=s.fund, reason=s.reason, detail=s.detail) for s in skipped],  # type: ignore[arg-type]
    )
    if body.dry_run:
        session.rollback()
    elif harvested:
        record(session, "advisor.account.harvested", account.id, account, now, result)
    return result


def tax_report(session: Session, account_id: str, caller: Caller) -> TaxReportPublic:
    account = get_account(session, account_id, caller)
    disposals = AdvisorRepository(session).disposals(account.id)
    gains = sum(d.gain_minor for d in disposals if d.gain_minor > 0)
    losses = sum(d.gain_minor for d in disposals if d.gain_minor < 0)
    harvested = sum(-d.gain_minor for d in disposals if d.gain_minor < 0 and d.reason == "harvest")
    return TaxReportPublic(
        account_id=account.id, realised_gains=Money.of(gains, CNY), realised_losses=Money.of(losses, CNY),
        net_realised=Money.of(gains + losses, CNY), harvested_losses=Money.of(harvested, CNY),
        disposals=[DisposalPublic(lot_id=d.lot_id, fund=d.fund_code, units=format_units(d.units_micro),
                                  proceeds=Money.of(d.proceeds_minor, CNY), cost=Money.of(d.cost_minor, CNY),
                                  gain=Money.of(d.gain_minor, CNY), reason=d.reason, sold_at=_aware(d.sold_at))
                   for d in disposals],
    )


# ---- market --------------------------------------------------------------------------------

def market_public(session: Session, adv: Advisor, now: datetime) -> MarketPublic:
    shocks = AdvisorRepository(session).shocks()
    return MarketPublic(
        seed=adv.market.seed, day=adv.day(now), date=now.date(), funds=funds_public(adv, adv.navs(session, now)),
        shocks=[ShockPublic(day=s.day, date=adv.market_epoch + timedelta(days=s.day), asset_class=s.asset_class,
                            pct=s.pct) for s in shocks],
    )


def record_shocks(session: Session, adv: Advisor, body: MarketAdvance, now: datetime) -> None:
    for shock in body.shocks:
        AdvisorRepository(session).add(MarketShockRow(day=adv.day(now), asset_class=shock.asset_class,
                                                      pct=shock.pct, created_at=now))


# ---- projections ---------------------------------------------------------------------------

def project(body: ProjectionRequest) -> ProjectionPublic:
    p = portfolios.portfolio(body.risk_level)
    monthly = body.monthly_contribution.minor if body.monthly_contribution else 0
    result = projections.project(body.initial.minor, monthly, body.years, p.expected_return, p.volatility,
                                 (ROBO_FEE, ADVISER_FEE), body.paths, body.seed)
    scenarios = []
    for i, (name, fee) in enumerate((("robo-advisor", ROBO_FEE), ("traditional adviser", ADVISER_FEE))):
        years = [ProjectionYear(year=y, contributed=Money.of(result.contributed[y], CNY),
                                **{f"p{pct}": Money.of(int(result.values[y, i, k]), CNY)
                                   for k, pct in enumerate(projections.PERCENTILES)})
                 for y in range(body.years + 1)]
        scenarios.append(FeeScenario(name=name, annual_fee=fee, years=years))
    median = projections.PERCENTILES.index(50)
    drag = int(result.values[-1, 0, median] - result.values[-1, 1, median])
    return ProjectionPublic(risk_level=p.level, expected_return=p.expected_return, volatility=p.volatility,
                            years=body.years, paths=body.paths, seed=body.seed, scenarios=scenarios,
                            median_fee_drag=Money.of(drag, CNY))
