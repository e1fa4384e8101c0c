"""Tables of the advisor database. Cash in fen, units in micro-units, NAVs in 1/10,000 CNY."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, DateTime
from sqlmodel import Field

from services.common.db import model_base
from services.common.idempotency import idempotency_table
from services.common.outbox import outbox_table

AdvisorModel = model_base("AdvisorModel")
IdempotencyKeys = idempotency_table(AdvisorModel.metadata)
# Deposits completed, rebalances and harvests, recorded with the change (GET /_sandbox/events).
Events = outbox_table(AdvisorModel.metadata)


# A questionnaire's answers and the score they earned, kept so an allocation can be explained later.
class RiskProfile(AdvisorModel, table=True):
    __tablename__ = "risk_profiles"

    id: str = Field(primary_key=True, max_length=40)
    # The participant that created it through the gateway; null when called directly. Others get 404.
    participant_id: str | None = Field(default=None, max_length=40, index=True)
    answers: dict = Field(sa_column=Column(JSON, nullable=False))
    score: float
    level: int
    result: dict = Field(sa_column=Column(JSON, nullable=False))  # capacity, willingness, contributions
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class InvestorAccount(AdvisorModel, table=True):
    __tablename__ = "investor_accounts"

    id: str = Field(primary_key=True, max_length=40)
    # The participant that opened it: the owner (others get 404, and so for its deposits, trades,
    # lots) and the originator every payments hop for it names, deferred retries included.
    participant_id: str | None = Field(default=None, max_length=40, index=True)
    owner_name: str = Field(max_length=100)
    wallet_account_id: str = Field(max_length=40)  # the investor's wallet in payments
    # The wallet owner's mandate to `participant_id`: payments' authority to debit the wallet.
    funding_mandate_id: str | None = Field(default=None, max_length=40)
    risk_profile_id: str = Field(foreign_key="risk_profiles.id", max_length=40)
    profile_level: int
    goal: str = Field(max_length=20)
    horizon_years: int
    currency: str = Field(max_length=3)
    cash_minor: int = Field(default=0, sa_type=BigInteger)
    deposited_minor: int = Field(default=0, sa_type=BigInteger)
    status: str = Field(max_length=20)  # awaiting_funding | active
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


# Intent first: the row exists (pending) before payments is called, and its id is the
# Idempotency-Key sent there, so a retry can never pay twice.
class Deposit(AdvisorModel, table=True):
    __tablename__ = "deposits"

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(foreign_key="investor_accounts.id", index=True, max_length=40)
    amount_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    status: str = Field(max_length=12)  # pending | completed | failed
    payments_journal_id: str | None = Field(default=None, max_length=40)
    merchant_fee_minor: int = Field(default=0, sa_type=BigInteger)  # borne by the advisor
    failure: dict | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    completed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Lot(AdvisorModel, table=True):
    __tablename__ = "lots"

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(foreign_key="investor_accounts.id", index=True, max_length=40)
    fund_code: str = Field(max_length=20)
    units_micro: int = Field(sa_type=BigInteger)  # still held
    original_units_micro: int = Field(sa_type=BigInteger)
    cost_minor: int = Field(sa_type=BigInteger)  # cost basis of the units still held
    acquired_at: datetime = Field(sa_type=DateTime(timezone=True))
    trade_id: str = Field(max_length=40)


# One order for one fund. Sells record each lot they dispose of in LotDisposal.
class Trade(AdvisorModel, table=True):
    __tablename__ = "trades"

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(foreign_key="investor_accounts.id", index=True, max_length=40)
    batch_id: str = Field(max_length=40, index=True)  # the deposit, rebalance or harvest
    reason: str = Field(max_length=12)  # deposit | rebalance | harvest
    side: str = Field(max_length=4)  # buy | sell
    fund_code: str = Field(max_length=20)
    units_micro: int = Field(sa_type=BigInteger)
    nav_e4: int = Field(sa_type=BigInteger)
    amount_minor: int = Field(sa_type=BigInteger)
    executed_at: datetime = Field(sa_type=DateTime(timezone=True))


class LotDisposal(AdvisorModel, table=True):
    __tablename__ = "lot_disposals"

    id: int | None = Field(default=None, primary_key=True)
    trade_id: str = Field(foreign_key="trades.id", index=True, max_length=40)
    account_id: str = Field(max_length=40, index=True)
    lot_id: str = Field(foreign_key="lots.id", max_length=40)
    fund_code: str = Field(max_length=20)
    units_micro: int = Field(sa_type=BigInteger)
    proceeds_minor: int = Field(sa_type=BigInteger)
    cost_minor: int = Field(sa_type=BigInteger)
    gain_minor: int = Field(sa_type=BigInteger)  # negative: a realised loss
    reason: str = Field(max_length=12)
    sold_at: datetime = Field(sa_type=DateTime(timezone=True))


# A teacher's market move: from `day` on, the class's funds are `pct` percent away from the simulation.
class MarketShockRow(AdvisorModel, table=True):
    __tablename__ = "market_shocks"

    id: int | None = Field(default=None, primary_key=True)
    day: int
    asset_class: str = Field(max_length=20)
    pct: float
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
