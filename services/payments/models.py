"""Tables of the payments database. Balances are integer minor units; postings are never edited."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger
from sqlmodel import Field

from services.common.db import UTCDateTime, model_base
from services.common.idempotency import idempotency_table
from services.common.outbox import outbox_table

PaymentsModel = model_base("PaymentsModel")
IdempotencyKeys = idempotency_table(PaymentsModel.metadata)
# Domain events, written in the unit of work of their change (services/payments/events.py).
Events = outbox_table(PaymentsModel.metadata)


# An account holds one currency; `balance_minor` is kept equal to the sum of its postings.
class Account(PaymentsModel, table=True):
    __tablename__ = "accounts"

    id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(max_length=12, index=True)  # personal | merchant | internal
    owner_name: str = Field(max_length=100)
    currency: str = Field(max_length=3)
    balance_minor: int = Field(default=0, sa_type=BigInteger)
    allow_overdraft: bool = False
    # The sandbox participant that opened it (its customer); None when opened directly.
    participant_id: str | None = Field(default=None, max_length=40, index=True)
    # Internal accounts are found by code ("card_funding:CNY"); customers' have none.
    system_code: str | None = Field(default=None, max_length=40, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


# An account owner's standing permission for another participant to debit that account,
# within caps per debit and per UTC calendar period, until it expires or is revoked.
class Mandate(PaymentsModel, table=True):
    __tablename__ = "mandates"

    id: str = Field(primary_key=True, max_length=40)
    debtor_account_id: str = Field(foreign_key="accounts.id", index=True, max_length=40)
    grantor_participant_id: str | None = Field(default=None, max_length=40, index=True)
    grantee_participant_id: str = Field(max_length=40, index=True)
    currency: str = Field(max_length=3)
    max_per_debit_minor: int = Field(sa_type=BigInteger)
    max_per_period_minor: int = Field(sa_type=BigInteger)
    period: str = Field(max_length=5)  # day | week | month
    purpose: str = Field(max_length=200)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# One money movement: its postings sum to zero. A refund is a new journal pointing at the old.
class Journal(PaymentsModel, table=True):
    __tablename__ = "journals"

    id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(max_length=12)  # deposit | withdrawal | transfer | payment | refund | opening
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_type=BigInteger)
    fee_minor: int = Field(default=0, sa_type=BigInteger)
    from_account_id: str | None = Field(default=None, foreign_key="accounts.id", index=True)
    to_account_id: str | None = Field(default=None, foreign_key="accounts.id", index=True)
    description: str | None = Field(default=None, max_length=200)
    card_last4: str | None = Field(default=None, max_length=4)
    refund_of: str | None = Field(default=None, foreign_key="journals.id", index=True)
    refunded_minor: int = Field(default=0, sa_type=BigInteger)
    fee_refunded_minor: int = Field(default=0, sa_type=BigInteger)
    # The owner's mandate a non-owner debited under; None when the payer's owner moved it.
    mandate_id: str | None = Field(default=None, foreign_key="mandates.id", index=True, max_length=40)
    # The idempotency record that produced this journal: unique, so a key applies at most once.
    idempotency_key_id: str | None = Field(default=None, max_length=40, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Posting(PaymentsModel, table=True):
    __tablename__ = "postings"

    id: int | None = Field(default=None, primary_key=True)
    journal_id: str = Field(foreign_key="journals.id", index=True, max_length=40)
    account_id: str = Field(foreign_key="accounts.id", index=True, max_length=40)
    amount_minor: int = Field(sa_type=BigInteger)  # what it adds to the account's balance
    balance_after_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    created_at: datetime = Field(sa_type=UTCDateTime)


# A priced conversion for a cross-border payment: payable once (`journal_id`), before `expires_at`.
class FxQuote(PaymentsModel, table=True):
    __tablename__ = "fx_quotes"

    id: str = Field(primary_key=True, max_length=40)
    rail: str = Field(max_length=16)  # ripple | correspondent
    fixed_side: str = Field(max_length=4)  # sell | buy: which amount the request fixed
    sell_currency: str = Field(max_length=3)
    buy_currency: str = Field(max_length=3)
    sell_minor: int = Field(sa_type=BigInteger)  # fee included
    fee_minor: int = Field(sa_type=BigInteger)  # in the sell currency
    buy_minor: int = Field(sa_type=BigInteger)
    rate: str = Field(max_length=40)  # decimal string: buy = (sell - fee) x rate
    mid_rate: str = Field(max_length=40)
    margin_bps: int
    rates_as_of: str = Field(max_length=20)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    # Set in the same transaction as the payment's journal; unique, so a quote pays once.
    journal_id: str | None = Field(default=None, foreign_key="journals.id", unique=True, max_length=40)


# A cross-border payment on its way: debited from the payer into the in-transit account when
# paid, `pending` until `due_at` (its rail's settlement time), then `settled` (credited to the
# payee) or `returned` (back to the payer: a beneficiary the rail cannot pay). Each close is a
# journal of its own (`closing_journal_id`), written with the conditional update that closes it.
class CrossBorderTransit(PaymentsModel, table=True):
    __tablename__ = "cross_border_transits"

    journal_id: str = Field(primary_key=True, foreign_key="journals.id", max_length=40)  # the xb_ payment
    quote_id: str = Field(foreign_key="fx_quotes.id", max_length=40)
    status: str = Field(max_length=8, index=True)  # pending | settled | returned
    due_at: datetime = Field(sa_type=UTCDateTime, index=True)  # when it settles (or comes back)
    comes_back: bool = False  # the magic beneficiary: returned at due_at instead of settled
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closing_journal_id: str | None = Field(default=None, max_length=40, unique=True)
