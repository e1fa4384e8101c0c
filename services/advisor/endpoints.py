"""Thin HTTP handlers for the advisor; the rules live in service.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from services.advisor import service
from services.advisor.repository import AdvisorRepository
from services.advisor.schemas import (
    ACCOUNT_PREFIX,
    DEPOSIT_PREFIX,
    RISK_PROFILE_PREFIX,
    AccountCreate,
    AccountUpdate,
    AssumptionsPublic,
    DepositCreate,
    DepositPublic,
    FundPublic,
    GlidePathPublic,
    Goal,
    HarvestPublic,
    HarvestRequest,
    InvestorAccountPublic,
    MarketAdvance,
    MarketPublic,
    ModelPortfolioPublic,
    ProjectionPublic,
    ProjectionRequest,
    RebalancePublic,
    RebalanceRequest,
    RiskProfilePublic,
    RiskQuestionnaire,
    TaxReportPublic,
    TradePublic,
)
from services.advisor.service import Advisor
from services.common.app import ClockDep, SettingsDep
from services.common.caller import CallerDep
from services.common.db import SessionDep
from services.common.fields import IdPath
from services.common.idempotency import IdempotencyDep
from services.common.pagination import CursorQuery, LimitQuery, Page, page_of
from services.common.problems import Problem, problem_responses


def get_advisor(request: Request) -> Advisor:
    return request.app.state.advisor


AdvisorDep = Annotated[Advisor, Depends(get_advisor)]
ProfileId = Annotated[str, IdPath(RISK_PROFILE_PREFIX, "A risk profile id, `rp_…`.")]
AccountId = Annotated[str, IdPath(ACCOUNT_PREFIX, "An investor account id, `inv_…`.")]
DepositId = Annotated[str, IdPath(DEPOSIT_PREFIX, "A deposit id, `dpt_…`.")]
Level = Annotated[int, Path(ge=0, le=20, description="Risk level 0-20 (2 × risk score).")]

router = APIRouter()
# The sandbox's controls: the gateway forwards /_sandbox/… with the regulator's key only.
sandbox_router = APIRouter(prefix="/_sandbox", tags=["sandbox"])

PROFILE_LINKS: dict[str, Any] = {
    "GetRiskProfile": {"operationId": "get_risk_profile", "parameters": {"profile_id": "$response.body#/id"}},
    "OpenAccount": {"operationId": "create_account", "requestBody": {
        "owner_name": "Li Wei", "wallet_account_id": "acc_00000000000000000000000001",
        "funding_mandate_id": "mdt_00000000000000000000000001", "risk_profile_id": "$response.body#/id"}},
    "ModelPortfolio": {"operationId": "get_model_portfolio", "parameters": {"level": "$response.body#/level"}},
}
ACCOUNT_LINKS: dict[str, Any] = {
    "GetAccount": {"operationId": "get_account", "parameters": {"account_id": "$response.body#/id"}},
    "Deposit": {"operationId": "create_deposit", "parameters": {"account_id": "$response.body#/id"}},
    "Rebalance": {"operationId": "rebalance_account", "parameters": {"account_id": "$response.body#/id"}},
    "Harvest": {"operationId": "harvest_losses", "parameters": {"account_id": "$response.body#/id"}},
    "TaxReport": {"operationId": "get_tax_report", "parameters": {"account_id": "$response.body#/id"}},
    "Trades": {"operationId": "list_trades", "parameters": {"account_id": "$response.body#/id"}},
}
DEPOSIT_LINKS: dict[str, Any] = {
    "GetDeposit": {"operationId": "get_deposit", "parameters": {"deposit_id": "$response.body#/id"}},
    "RetryDeposit": {"operationId": "retry_deposit", "parameters": {"deposit_id": "$response.body#/id"}},
    "GetAccount": {"operationId": "get_account", "parameters": {"account_id": "$response.body#/account_id"}},
}


def _created(model: type, links: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {201: {"model": model, "description": "Created", "links": links}}


@router.get("/assumptions", tags=["allocation"], operation_id="get_assumptions", response_model=AssumptionsPublic)
def get_assumptions(advisor: AdvisorDep) -> AssumptionsPublic:
    """The capital-market assumptions (synthetic, educational) behind every allocation."""
    return service.assumptions_public(advisor)


@router.get("/model-portfolios", tags=["allocation"], operation_id="list_model_portfolios",
            response_model=list[ModelPortfolioPublic])
def list_model_portfolios(advisor: AdvisorDep) -> list[ModelPortfolioPublic]:
    """The 21 efficient portfolios, one per risk level, with expected return and volatility."""
    return [service.portfolio_public(advisor, level) for level in range(21)]


@router.get("/model-portfolios/{level}", tags=["allocation"], operation_id="get_model_portfolio",
            response_model=ModelPortfolioPublic, responses=problem_responses(422))
def get_model_portfolio(level: Level, advisor: AdvisorDep) -> ModelPortfolioPublic:
    """One risk level's portfolio."""
    return service.portfolio_public(advisor, level)


@router.get("/glide-path", tags=["allocation"], operation_id="get_glide_path", response_model=GlidePathPublic,
            responses=problem_responses(422))
def get_glide_path(
    goal: Annotated[Goal, Query()],
    level: Annotated[int, Query(ge=0, le=20, description="The profile's risk level.")],
    horizon_years: Annotated[int, Query(ge=1, le=50)],
) -> GlidePathPublic:
    """How the portfolio steps down, year by year, as the goal nears."""
    return service.glide_path(goal, level, horizon_years)


@router.post("/risk-profiles", status_code=201, tags=["risk"], operation_id="create_risk_profile",
             response_model=RiskProfilePublic,
             responses={**_created(RiskProfilePublic, PROFILE_LINKS), **problem_responses(409, 422)})
def create_risk_profile(body: RiskQuestionnaire, session: SessionDep, clock: ClockDep, advisor: AdvisorDep,
                        idem: IdempotencyDep):
    """Score a questionnaire on the 0-10 scale, explaining each answer's contribution."""
    return idem.run(session, lambda: service.score_questionnaire(session, advisor, body, clock.now(), idem.caller))


@router.get("/risk-profiles", tags=["risk"], operation_id="list_risk_profiles",
            response_model=Page[RiskProfilePublic], responses=problem_responses(422))
def list_risk_profiles(session: SessionDep, advisor: AdvisorDep, caller: CallerDep, limit: LimitQuery = 20,
                       cursor: CursorQuery = None) -> Page[RiskProfilePublic]:
    """Your firm's risk profiles, oldest first."""
    rows = AdvisorRepository(session).risk_profiles(service.listed_owners(caller), limit, cursor)
    return page_of([service.profile_public(advisor, r) for r in rows], limit, lambda p: p.id)


@router.get("/risk-profiles/{profile_id}", tags=["risk"], operation_id="get_risk_profile",
            response_model=RiskProfilePublic, responses=problem_responses(404, 422))
def get_risk_profile(profile_id: ProfileId, session: SessionDep, advisor: AdvisorDep,
                     caller: CallerDep) -> RiskProfilePublic:
    """A scored questionnaire and its recommended portfolio."""
    return service.profile_public(advisor, service.get_profile(session, profile_id, caller))


@router.post("/accounts", status_code=201, tags=["accounts"], operation_id="create_account",
             response_model=InvestorAccountPublic,
             responses={**_created(InvestorAccountPublic, ACCOUNT_LINKS), **problem_responses(404, 409, 422)})
def create_account(body: AccountCreate, session: SessionDep, clock: ClockDep, advisor: AdvisorDep,
                   idem: IdempotencyDep):
    """Open an investor account on a risk profile; it is funded by a deposit from a wallet."""
    return idem.run(session, lambda: service.open_account(session, advisor, body, clock.now(), idem.caller))


@router.get("/accounts", tags=["accounts"], operation_id="list_accounts",
            response_model=Page[InvestorAccountPublic], responses=problem_responses(422))
def list_accounts(session: SessionDep, clock: ClockDep, advisor: AdvisorDep, caller: CallerDep,
                  limit: LimitQuery = 20, cursor: CursorQuery = None) -> Page[InvestorAccountPublic]:
    """Your firm's investor accounts, oldest first, valued at today's prices."""
    now = clock.now()
    rows = AdvisorRepository(session).accounts(service.listed_owners(caller), limit, cursor)
    return page_of([service.account_public(session, advisor, a, now) for a in rows], limit, lambda a: a.id)


@router.get("/accounts/{account_id}", tags=["accounts"], operation_id="get_account",
            response_model=InvestorAccountPublic, responses=problem_responses(404, 422))
def get_account(account_id: AccountId, session: SessionDep, clock: ClockDep, advisor: AdvisorDep,
                caller: CallerDep) -> InvestorAccountPublic:
    """The account valued at today's prices: holdings, weights against target, drift."""
    now = clock.now()
    return service.account_public(session, advisor, service.get_account(session, account_id, caller), now)


@router.patch("/accounts/{account_id}", tags=["accounts"], operation_id="update_account",
              response_model=InvestorAccountPublic, responses=problem_responses(404, 422))
def update_account(account_id: AccountId, body: AccountUpdate, session: SessionDep, clock: ClockDep,
                   advisor: AdvisorDep, caller: CallerDep) -> InvestorAccountPublic:
    """Set the mandate the account's deposits debit the wallet under."""
    return service.set_funding_mandate(session, advisor, account_id, body, clock.now(), caller)


@router.get("/accounts/{account_id}/trades", tags=["accounts"], operation_id="list_trades",
            response_model=Page[TradePublic], responses=problem_responses(404, 422))
def list_trades(account_id: AccountId, session: SessionDep, advisor: AdvisorDep, caller: CallerDep,
                limit: LimitQuery = 20, cursor: CursorQuery = None) -> Page[TradePublic]:
    """Every order the account made, oldest first."""
    service.get_account(session, account_id, caller)
    trades = [service.trade_public(t, advisor) for t in AdvisorRepository(session).trades(account_id, limit, cursor)]
    return page_of(trades, limit, lambda t: t.id or "")


@router.post("/accounts/{account_id}/deposits", status_code=201, tags=["accounts"], operation_id="create_deposit",
             response_model=DepositPublic,
             responses={**_created(DepositPublic, DEPOSIT_LINKS), **problem_responses(403, 404, 409, 422)})
def create_deposit(account_id: AccountId, body: DepositCreate, session: SessionDep, clock: ClockDep,
                   advisor: AdvisorDep, idem: IdempotencyDep):
    """Fund the account from the investor's wallet through payments, then invest the cash.

    The debit is your firm's, under the account's `funding_mandate_id`: payments checks the
    mandate, the gateway counts it against your limits. A refusal (403, 409) is final: nothing
    moved. `pending` means payments could not be reached: retry the deposit (it will not pay twice)."""
    return idem.run(session, lambda: service.create_deposit(session, advisor, account_id, body, clock.now(),
                                                            idem.caller))


@router.get("/deposits/{deposit_id}", tags=["accounts"], operation_id="get_deposit", response_model=DepositPublic,
            responses=problem_responses(404, 422))
def get_deposit(deposit_id: DepositId, session: SessionDep, advisor: AdvisorDep, caller: CallerDep) -> DepositPublic:
    """One deposit, its payments journal and the units it bought."""
    return service.deposit_public(session, advisor, service.get_deposit(session, deposit_id, caller))


@router.post("/deposits/{deposit_id}/retry", tags=["accounts"], operation_id="retry_deposit",
             response_model=DepositPublic, responses=problem_responses(403, 404, 409, 422))
def retry_deposit(deposit_id: DepositId, session: SessionDep, clock: ClockDep, advisor: AdvisorDep,
                  caller: CallerDep) -> DepositPublic:
    """Ask payments again for a pending deposit, with the same idempotency key."""
    return service.retry_deposit(session, advisor, deposit_id, clock.now(), caller)


@router.post("/accounts/{account_id}/rebalance", tags=["portfolio"], operation_id="rebalance_account",
             response_model=RebalancePublic, responses=problem_responses(404, 409, 422))
def rebalance_account(account_id: AccountId, body: RebalanceRequest, session: SessionDep, clock: ClockDep,
                      advisor: AdvisorDep, idem: IdempotencyDep):
    """Invest idle cash, then trade back to target if drift passes the threshold (dry run lists only)."""
    return idem.run(session, lambda: service.rebalance(session, advisor, account_id, body, clock.now(), idem.caller),
                    status_code=200)


@router.post("/accounts/{account_id}/harvest", tags=["portfolio"], operation_id="harvest_losses",
             response_model=HarvestPublic, responses=problem_responses(404, 409, 422))
def harvest_losses(account_id: AccountId, body: HarvestRequest, session: SessionDep, clock: ClockDep,
                   advisor: AdvisorDep, idem: IdempotencyDep):
    """Sell lots at a loss beyond the threshold into the substitute fund, minding wash sales."""
    return idem.run(session, lambda: service.harvest(session, advisor, account_id, body, clock.now(), idem.caller),
                    status_code=200)


@router.get("/accounts/{account_id}/tax-report", tags=["portfolio"], operation_id="get_tax_report",
            response_model=TaxReportPublic, responses=problem_responses(404, 422))
def get_tax_report(account_id: AccountId, session: SessionDep, caller: CallerDep) -> TaxReportPublic:
    """Realised gains and losses, and the losses harvested."""
    return service.tax_report(session, account_id, caller)


@router.get("/market", tags=["market"], operation_id="get_market", response_model=MarketPublic)
def get_market(session: SessionDep, clock: ClockDep, advisor: AdvisorDep) -> MarketPublic:
    """Today's simulated fund prices, the same for every participant (seeded: the same day always
    gives the same prices). Only the regulator moves it, with `POST /_sandbox/market/advance`."""
    return service.market_public(session, advisor, clock.now())


@router.get("/funds", tags=["market"], operation_id="list_funds", response_model=list[FundPublic])
def list_funds(session: SessionDep, clock: ClockDep, advisor: AdvisorDep) -> list[FundPublic]:
    """The funds, each with its correlated substitute on another index, at today's NAV."""
    return service.funds_public(advisor, advisor.navs(session, clock.now()))


# One market (and clock) for every participant: a sandbox control, so one firm cannot move
# prices and wash-sale windows under another's accounts.
@sandbox_router.post("/market/advance", tags=["market"], operation_id="advance_market",
                     response_model=MarketPublic, responses=problem_responses(403, 422))
def advance_market(body: MarketAdvance, session: SessionDep, clock: ClockDep, settings: SettingsDep,
                   advisor: AdvisorDep) -> MarketPublic:
    """Move the shared market (and this service's clock) forward by days, with optional shocks.

    Through the gateway only the regulator's key reaches it; participants get 403."""
    if not settings.allow_time_travel:
        raise Problem(403, "time-travel-disabled", "Time travel is disabled on this service")
    now = clock.advance(timedelta(days=body.days))
    service.record_shocks(session, advisor, body, now)
    return service.market_public(session, advisor, now)


@router.post("/projections", tags=["projections"], operation_id="create_projection", response_model=ProjectionPublic,
             responses=problem_responses(422))
def create_projection(body: ProjectionRequest) -> ProjectionPublic:
    """Monte Carlo percentiles of a portfolio's value, at a 0.25% robo fee and a 1.5% adviser fee."""
    return service.project(body)
