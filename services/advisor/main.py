"""Composition root of the robo-advisor service."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.advisor.assumptions import assumptions
from services.advisor.endpoints import router, sandbox_router
from services.advisor.market import MarketSimulator
from services.advisor.models import AdvisorModel, IdempotencyKeys
from services.advisor.service import Advisor
from services.common.app import build_service_app, configure_logging
from services.common.clock import Clock
from services.common.db import Database, database_url
from services.common.demo import demo_account
from services.common.money import to_minor
from services.common.payments_client import PaymentsClient
from services.common.reset import ResetHooks
from services.common.settings import ServiceSettings


class AdvisorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADVISOR_", extra="ignore")

    # Investor money is held in this payments account (a merchant account in the demo world).
    custody_account_id: str = demo_account("Sandbox Robo-Advisor (custody)").id
    minimum_first_deposit: str = "100.00"  # CNY: the seed's "some platforms 100 yuan"
    maximum_deposit: str = "1000000.00"
    min_trade: str = "1.00"  # smaller orders are skipped; the cash waits for the next flow
    min_harvest_loss: str = "1.00"
    # The market simulator: the same seed and epoch replay the same prices day by day.
    market_seed: int = 2026
    market_epoch: date = date(2026, 1, 5)
    # Simulated time by default: the clock starts at the market epoch and moves only when told
    # (POST /_sandbox/market/advance), so a walkthrough gives the same figures on any day. False: wall clock.
    simulated_clock: bool = True


DESCRIPTION = """A robo-advisor after Wealthfront, Betterment and Ant Fortune's 帮你投.

1. `POST /risk-profiles` scores a questionnaire on a 0-10 scale (capacity, willingness,
   consistency) and explains every answer's contribution.
2. The score picks one of 21 efficient portfolios (`/model-portfolios`), computed offline with
   PyPortfolioOpt from the shipped capital-market assumptions (`/assumptions`: synthetic,
   educational), stepped down by a glide path as the goal nears (`/glide-path`).
3. `POST /accounts` (with the wallet owner's `funding_mandate_id` to your firm) then
   `POST /accounts/{id}/deposits` moves money from the investor's wallet to the custody account
   through payments, as your firm's debit under that mandate (minimum first deposit 100 CNY), and
   buys fund units, kept as tax lots.
4. The regulator moves the seeded market (and the clock) with `POST /_sandbox/market/advance`;
   `POST /accounts/{id}/rebalance` trades back to target past a drift threshold;
   `POST /accounts/{id}/harvest` harvests losses into substitute funds under the 30-day wash-sale rule.
5. `POST /projections`: Monte Carlo percentiles at a 0.25% fee beside a 1.5% adviser.

Risk profiles and accounts (with their deposits, trades and reports) belong to the participant
that created them: another participant gets 404. The advisor runs on simulated time: its clock
starts on the market epoch (2026-01-05) and moves only with `POST /_sandbox/market/advance`, one
market for everyone, so a scenario gives the same figures whenever it is replayed.
Money is a decimal string; units have 6 decimals, NAVs 4. Not investment advice.
"""


def create_app(settings: AdvisorSettings | None = None, clock: Clock | None = None,
               payments_client: PaymentsClient | None = None) -> FastAPI:
    settings = settings or AdvisorSettings()
    configure_logging(settings.log_level)
    if clock is None:
        start = datetime.combine(settings.market_epoch, time(9, 0), tzinfo=UTC)
        clock = Clock(start) if settings.simulated_clock else Clock()
    db = Database(database_url(settings.database_url, settings.data_dir, "advisor"), AdvisorModel.metadata)
    db.create_tables()
    payments = payments_client or PaymentsClient(settings.gateway_url, settings.participant_key)
    a = assumptions()
    advisor = Advisor(
        assumptions=a,
        market=MarketSimulator(a, settings.market_seed),
        payments=payments,
        custody_account_id=settings.custody_account_id,
        minimum_first_deposit_minor=to_minor(settings.minimum_first_deposit, "CNY"),
        maximum_deposit_minor=to_minor(settings.maximum_deposit, "CNY"),
        min_trade_minor=to_minor(settings.min_trade, "CNY"),
        min_harvest_loss_minor=to_minor(settings.min_harvest_loss, "CNY"),
        market_epoch=settings.market_epoch,
    )
    app = build_service_app(
        name="advisor",
        title="Robo-advisor",
        description=DESCRIPTION,
        settings=settings,
        database=db,
        clock=clock,
        routers=[router, sandbox_router],
        openapi_tags=[
            {"name": "risk", "description": "The risk questionnaire and its score"},
            {"name": "allocation", "description": "Capital-market assumptions, model portfolios, glide path"},
            {"name": "accounts", "description": "Investor accounts, funding from a wallet, tax lots"},
            {"name": "portfolio", "description": "Rebalancing, tax-loss harvesting, tax report"},
            {"name": "market", "description": "The seeded market simulator, shared by every participant"},
            {"name": "projections", "description": "Monte Carlo projections and fee drag"},
        ],
        on_shutdown=payments.close if payments_client is None else None,
        # The market is the seed, the clock's day and the recorded shocks: the clock goes back
        # to the epoch (day 0) and the shocks with the other rows. Nothing else is seeded.
        reset=ResetHooks(),
    )
    app.state.idempotency_table = IdempotencyKeys
    app.state.advisor = advisor
    return app
