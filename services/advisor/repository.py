"""Every query the advisor service makes."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlmodel import Session

from services.advisor.models import (
    Deposit,
    InvestorAccount,
    Lot,
    LotDisposal,
    MarketShockRow,
    RiskProfile,
    Trade,
)

T = TypeVar("T", RiskProfile, InvestorAccount)


class AdvisorRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: object) -> None:
        self.session.add(row)
        self.session.flush()

    def risk_profile(self, profile_id: str) -> RiskProfile | None:
        return self.session.get(RiskProfile, profile_id)

    def risk_profiles(self, owners: list[str] | None, limit: int, after: str | None) -> list[RiskProfile]:
        return self._owned_page(RiskProfile, owners, limit, after)

    def accounts(self, owners: list[str] | None, limit: int, after: str | None) -> list[InvestorAccount]:
        return self._owned_page(InvestorAccount, owners, limit, after)

    def _owned_page(self, model: type[T], owners: list[str] | None, limit: int, after: str | None) -> list[T]:
        """A page (limit + 1 rows, by id) of the rows `owners` created; None: everyone's."""
        query = select(model).order_by(model.id).limit(limit + 1)  # type: ignore[attr-defined]
        if owners is not None:
            query = query.where(model.participant_id.in_(owners))  # type: ignore[attr-defined]
        if after:
            query = query.where(model.id > after)  # type: ignore[attr-defined]
        return list(self.session.execute(query).scalars())

    def account(self, account_id: str, for_update: bool = False) -> InvestorAccount | None:
        if for_update:
            # Serialise work on one account (PostgreSQL row lock; SQLite already holds the write lock).
            return self.session.execute(
                select(InvestorAccount).where(InvestorAccount.id == account_id).with_for_update()
            ).scalar_one_or_none()
        return self.session.get(InvestorAccount, account_id)

    def deposit(self, deposit_id: str) -> Deposit | None:
        return self.session.get(Deposit, deposit_id)

    def completed_deposit_count(self, account_id: str) -> int:
        rows = self.session.execute(
            select(Deposit.id).where(Deposit.account_id == account_id, Deposit.status == "completed")
        ).all()
        return len(rows)

    def open_lots(self, account_id: str) -> list[Lot]:
        return list(
            self.session.execute(
                select(Lot).where(Lot.account_id == account_id, Lot.units_micro > 0).order_by(Lot.id)
            ).scalars()
        )

    def trades_of_batch(self, batch_id: str) -> list[Trade]:
        return list(self.session.execute(select(Trade).where(Trade.batch_id == batch_id).order_by(Trade.id)).scalars())

    def trades(self, account_id: str, limit: int, after: str | None) -> list[Trade]:
        query = select(Trade).where(Trade.account_id == account_id).order_by(Trade.id).limit(limit + 1)
        if after:
            query = query.where(Trade.id > after)
        return list(self.session.execute(query).scalars())

    def disposals(self, account_id: str) -> list[LotDisposal]:
        return list(
            self.session.execute(
                select(LotDisposal).where(LotDisposal.account_id == account_id).order_by(LotDisposal.id)
            ).scalars()
        )

    def loss_disposals_since(self, account_id: str, since: datetime) -> list[LotDisposal]:
        return list(
            self.session.execute(
                select(LotDisposal).where(
                    LotDisposal.account_id == account_id,
                    LotDisposal.gain_minor < 0,
                    LotDisposal.sold_at >= since,
                )
            ).scalars()
        )

    def shocks(self) -> list[MarketShockRow]:
        return list(self.session.execute(select(MarketShockRow).order_by(MarketShockRow.id)).scalars())
