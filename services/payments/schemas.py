"""The payments API's request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.fields import CurrencyCode, IdField, Text
from services.common.money import AmountIn, Money

ACCOUNT_PREFIX = "acc"
JOURNAL_PREFIXES = "dep|wd|tr|pay|re|ob"
REFUNDABLE_PREFIXES = "tr|pay"

_FORBID = ConfigDict(extra="forbid")


# What a customer may open; internal accounts (card funding, fees) are the system's own.
class AccountCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"kind": "personal", "owner_name": "Li Wei", "currency": "CNY"}]
        },
    )

    kind: Literal["personal", "merchant"] = Field(
        description="`personal` wallet, or `merchant` account that takes payments (a wallet "
        "paying it is a merchant payment: 0.6% fee)."
    )
    owner_name: str = Text(100, "Whose account it is.", ["Li Wei"])
    currency: CurrencyCode = Field(default="CNY", description="ISO 4217 code; CNY when omitted.")


class AccountPublic(BaseModel):
    """An account and its balance. Internal accounts may go negative; customers' may not."""

    id: str = Field(examples=["acc_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    kind: Literal["personal", "merchant", "internal"]
    owner_name: str
    currency: str
    balance: Money
    allow_overdraft: bool
    participant_id: str | None = Field(
        description="The sandbox participant whose customer this is (it opened the account "
        "through the gateway); null when opened directly. Other participants can pay it but "
        "not see or debit it."
    )
    created_at: datetime


class BalancePublic(BaseModel):
    """What an account holds now."""

    account_id: str
    available: Money
    as_of: datetime


class DepositCreate(BaseModel):
    """Top up a wallet from a card. Test cards decline on purpose; see the README."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_id": "acc_00000000000000000000000001",
                    "amount": {"amount": "100.00", "currency": "CNY"},
                    "card_number": "4242424242424242",
                }
            ]
        },
    )

    account_id: str = IdField(ACCOUNT_PREFIX, "The wallet to credit.")
    amount: AmountIn
    card_number: str = Field(
        pattern=r"^[0-9]{12,19}$",
        description="A test card number: 4242424242424242 pays; 4000000000009995 declines "
        "(insufficient funds); only the last four digits are stored.",
        examples=["4242424242424242"],
    )
    description: str | None = Text(200, "Shown on the statement.", optional=True)


class WithdrawalCreate(BaseModel):
    """Pay money out of a wallet to the owner's bank account."""

    model_config = _FORBID

    account_id: str = IdField(ACCOUNT_PREFIX, "The wallet to debit.")
    amount: AmountIn
    description: str | None = Text(200, "Shown on the statement.", optional=True)


class TransferCreate(BaseModel):
    """Move money between two accounts of the same currency. Paying a merchant account is a
    merchant payment when the payer is a personal wallet: the merchant receives the amount less a
    0.6% fee. Between two merchant accounts it is a fee-free business transfer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "from_account_id": "acc_00000000000000000000000001",
                    "to_account_id": "acc_00000000000000000000000002",
                    "amount": {"amount": "66.66", "currency": "CNY"},
                    "description": "red packet",
                }
            ]
        },
    )

    from_account_id: str = IdField(ACCOUNT_PREFIX, "The payer.")
    to_account_id: str = IdField(ACCOUNT_PREFIX, "The payee.")
    amount: AmountIn
    description: str | None = Text(200, "Shown on both statements.", optional=True)


class RefundCreate(BaseModel):
    """Give back all or part of a transfer or merchant payment, as a new journal."""

    model_config = _FORBID

    journal_id: str = IdField(REFUNDABLE_PREFIXES, "The transfer or payment to refund.")
    amount: AmountIn | None = Field(
        default=None, description="How much to refund; the whole remaining amount when omitted."
    )
    reason: str | None = Text(200, "Why the money goes back.", optional=True)


class PostingPublic(BaseModel):
    """One line of a journal: what it did to one account."""

    account_id: str
    amount: Money = Field(description="Added to the account's balance; negative is a debit.")
    balance_after: Money


class JournalPublic(BaseModel):
    """A money movement and its postings, which always sum to zero."""

    id: str = Field(examples=["tr_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    kind: Literal["deposit", "withdrawal", "transfer", "payment", "refund", "opening"]
    amount: Money
    fee: Money
    from_account_id: str | None
    to_account_id: str | None
    description: str | None
    card_last4: str | None
    refund_of: str | None
    refunded: Money = Field(description="How much of this journal has been refunded so far.")
    postings: list[PostingPublic]
    created_at: datetime


class CurrencyTotals(BaseModel):
    """Debits and credits of one currency across every posting: they must be equal."""

    currency: str
    debits: Money
    credits: Money


class InvariantCheck(BaseModel):
    """One invariant, whether it holds, and the offending rows when it does not."""

    name: str
    ok: bool
    description: str
    violations: list[str]


class InvariantsReport(BaseModel):
    """The ledger's health: a student or a fuzzer calls this after every step."""

    ok: bool
    checks: list[InvariantCheck]
    currencies: list[CurrencyTotals]
    journals: int
    postings: int
