"""The payments API's request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, WithJsonSchema, field_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from services.common.fields import CurrencyCode, IdField, Text
from services.common.ids import id_pattern
from services.common.money import AmountIn, Money, amount_schema
from services.payments import fx, qr

ACCOUNT_PREFIX = "acc"
JOURNAL_PREFIXES = "dep|wd|tr|pay|re|ob|xbs|xbr|xb"
FX_QUOTE_PREFIX = "fxq"
REFUNDABLE_PREFIXES = "tr|pay"
MANDATE_PREFIX = "mdt"
PARTICIPANT_PATTERN = r"^[A-Za-z0-9_]{1,40}$"

_FORBID = ConfigDict(extra="forbid")


def MandateIdField():  # noqa: N802
    """The optional `mandate_id` of a movement that debits an account."""
    return Field(
        default=None,
        pattern=id_pattern(MANDATE_PREFIX),
        description="Needed only to debit an account another participant opened: a live mandate "
        "its owner granted you (`POST /mandates`) on that account. Checked against the mandate's "
        "caps, expiry and status, and recorded on the journal.",
        examples=["mdt_00000000000000000000000001"],
    )


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
    mandate_id: str | None = MandateIdField()


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
    mandate_id: str | None = MandateIdField()


class RefundCreate(BaseModel):
    """Give back all or part of a transfer or merchant payment, as a new journal."""

    model_config = _FORBID

    journal_id: str = IdField(REFUNDABLE_PREFIXES, "The transfer or payment to refund.")
    amount: AmountIn | None = Field(
        default=None, description="How much to refund; the whole remaining amount when omitted."
    )
    reason: str | None = Text(200, "Why the money goes back.", optional=True)


# --- cross-border payments: FX quotes ------------------------------------------------------


def _quoted_currency(value: str) -> str:
    if value not in fx.quoted_currencies():
        raise ValueError(f"{value!r} is not in the reference rate table ({', '.join(fx.quoted_currencies())})")
    return value


FxCurrency = Annotated[
    str,
    AfterValidator(_quoted_currency),
    WithJsonSchema({"type": "string", "enum": fx.quoted_currencies(),
                    "description": "A currency of the reference rate table (ISO 4217 code)."}),
]
Rail = Literal["ripple", "correspondent"]
RAIL_DESCRIPTION = (
    "`correspondent`: mid rate less 1.00%, plus a 25.00 USD wire fee, settles in 1-3 business "
    "days. `ripple`: mid rate less 0.10%, plus a 2.50 USD fee, settles in 3-5 seconds."
)


class FxAmount(AmountIn):
    """A positive amount in a currency of the reference rate table."""

    @field_validator("currency")
    @classmethod
    def _in_rate_table(cls, value: str) -> str:
        return _quoted_currency(value)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return amount_schema(
            "FxAmount",
            "A positive amount in a currency of the rate table: decimal string with no more "
            "decimals than the currency allows (CNY 2, JPY 0, KWD 3).",
            fx.quoted_currencies(),
            {"amount": "1000.00", "currency": "CNY"},
        )


class FxQuoteBySell(BaseModel):
    """Fix what the payer sends: `sell` (fee included); the quote says what arrives."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"sell": {"amount": "1000.00", "currency": "CNY"}, "buy_currency": "USD", "rail": "ripple"}
        ]},
    )

    sell: FxAmount = Field(description="What the payer pays, fee included, in the currency sold.")
    buy_currency: FxCurrency = Field(description="The currency the payee receives.")
    rail: Rail = Field(description=RAIL_DESCRIPTION)


class FxQuoteByBuy(BaseModel):
    """Fix what the payee receives: `buy`; the quote says what the payer pays, fee included."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"buy": {"amount": "100.00", "currency": "USD"}, "sell_currency": "CNY", "rail": "correspondent"}
        ]},
    )

    buy: FxAmount = Field(description="What the payee receives, in the currency bought.")
    sell_currency: FxCurrency = Field(description="The currency the payer pays in.")
    rail: Rail = Field(description=RAIL_DESCRIPTION)


FxQuoteCreate = FxQuoteBySell | FxQuoteByBuy

RATE_PATTERN = r"^[0-9]+(\.[0-9]+)?$"


class Settlement(BaseModel):
    """How long the rail takes: a paid cross-border payment is `pending` until `settles_by`
    (by the service clock), then settles."""

    estimate: str = Field(examples=["3-5 seconds", "1-3 business days"])
    settles_by: datetime = Field(description="When the money arrives if paid now (or, once paid, "
                                 "when it settles: the latest of the estimate).")


class FxQuotePublic(BaseModel):
    """A priced conversion, payable once before it expires."""

    id: str = Field(examples=["fxq_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    rail: Rail
    fixed_side: Literal["sell", "buy"] = Field(description="Which amount the request fixed.")
    sell: Money = Field(description="What the payer pays, fee included.")
    buy: Money = Field(description="What the payee receives.")
    fee: Money = Field(description="The rail's flat fee, in the currency sold, part of `sell`.")
    rate: str = Field(pattern=RATE_PATTERN, description="Units bought per unit sold, after the "
                      "rail's FX margin: buy = (sell - fee) x rate.", examples=["0.14030899"])
    mid_rate: str = Field(pattern=RATE_PATTERN, description="The reference mid rate.")
    fx_margin_bps: int = Field(description="The rail's margin off the mid rate, in basis points.")
    rates_as_of: str = Field(description="Date of the reference rate table.")
    rates_source: str = Field(description="Where the mid rates come from.")
    settlement: Settlement
    status: Literal["open", "expired", "used"]
    journal_id: str | None = Field(description="The cross-border payment that used it, if any.")
    created_at: datetime
    expires_at: datetime


class CrossBorderCreate(BaseModel):
    """Pay a quote: debit the payer in the currency sold, credit the payee in the currency bought."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "quote_id": "fxq_01jd3k8m9q2w4e6r8t0y2u4i6o",
            "from_account_id": "acc_00000000000000000000000001",
            "to_account_id": "acc_00000000000000000000000007",
        }]},
    )

    quote_id: str = IdField(FX_QUOTE_PREFIX, "An open quote from POST /fx/quotes.")
    from_account_id: str = IdField(ACCOUNT_PREFIX, "The payer; holds the currency sold.")
    to_account_id: str = IdField(ACCOUNT_PREFIX, "The payee; holds the currency bought.")
    description: str | None = Text(200, "Shown on both statements.", optional=True)
    mandate_id: str | None = MandateIdField()


CrossBorderStatus = Literal["pending", "settled", "returned"]


class CrossBorderDetails(BaseModel):
    """What a cross-border journal converted, at which rate, on which rail."""

    quote_id: str
    rail: Rail
    rate: str
    sell: Money
    buy: Money
    fee: Money
    settlement: Settlement
    status: CrossBorderStatus = Field(description=(
        "`pending`: the payer is debited, the money is in transit (the rail's in-transit account) "
        "and has not reached the payee; `settled`: credited to the payee at `settlement.settles_by` "
        "(ripple: seconds; correspondent: 1-3 business days); `returned`: it came back to the "
        "payer in full instead (a beneficiary the rail cannot pay: the magic name `Test Return`)."))
    settled_at: datetime | None = Field(default=None, description="When the payee was credited.")
    returned_at: datetime | None = Field(default=None, description="When the money came back to the payer.")
    closing_journal_id: str | None = Field(default=None, description=(
        "The journal that settled it (`xbs_…`: in transit to the payee) or returned it (`xbr_…`: "
        "in transit back to the payer); null while pending."))


# --- merchant QR (EMVCo Merchant-Presented Mode) ---------------------------------------------

QR_AMOUNT_PATTERN = (
    r"^([1-9][0-9]{0,8}(\.[0-9]{1,3})?|0\.([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))$"
)


class QrCodePublic(BaseModel):
    """A merchant's EMVCo merchant-presented QR: the string to encode, and the code as SVG."""

    account_id: str
    currency: str = Field(description="The merchant's currency (the QR's tag 53, as a code).")
    dynamic: bool = Field(description="True when the payload carries an amount (point of "
                          "initiation 12); a static QR (11) lets the payer type the amount.")
    amount: Money | None
    payload: str = Field(description="The EMVCo MPM string, CRC-16/CCITT-FALSE in tag 63.")
    svg: str = Field(description="The payload as a QR code, an SVG document (segno).")


class QrPaymentCreate(BaseModel):
    """Pay a merchant by its QR: the same merchant payment as POST /transfers (0.6% fee)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "payload": qr.merchant_payload("acc_00000000000000000000000003", "Lanzhou Noodle House", "CNY"),
            "from_account_id": "acc_00000000000000000000000001",
            "amount": {"amount": "25.00", "currency": "CNY"},
        }]},
    )

    payload: str = Field(min_length=1, max_length=512, description="The scanned EMVCo MPM "
                         "string, exactly as GET /accounts/{id}/qr returned it.")
    from_account_id: str = IdField(ACCOUNT_PREFIX, "The payer.")
    amount: AmountIn | None = Field(
        default=None, description="Required for a static QR; for a dynamic QR, omit it or "
        "repeat the QR's amount.")
    description: str | None = Text(200, "Shown on both statements.", optional=True)
    mandate_id: str | None = MandateIdField()


class PostingPublic(BaseModel):
    """One line of a journal: what it did to one account."""

    account_id: str
    amount: Money = Field(description="Added to the account's balance; negative is a debit.")
    balance_after: Money | None = Field(description=(
        "The account's balance after this line. Through the gateway, null on an account of another "
        "participant or of the sandbox itself (card funding, fees, payouts, in transit): a firm sees "
        "its own customers' balances, never another firm's."))


class JournalPublic(BaseModel):
    """A money movement and its postings, which always sum to zero."""

    id: str = Field(examples=["tr_01jd3k8m9q2w4e6r8t0y2u4i6o"])
    kind: Literal["deposit", "withdrawal", "transfer", "payment", "refund", "opening", "cross_border",
                  "settlement", "return"] = Field(description=(
        "`settlement` and `return` close a pending `cross_border` payment: its money leaves the "
        "in-transit account for the payee, or back to the payer."))
    amount: Money
    fee: Money
    from_account_id: str | None
    to_account_id: str | None
    description: str | None
    card_last4: str | None
    refund_of: str | None
    refunded: Money = Field(description="How much of this journal has been refunded so far.")
    postings: list[PostingPublic]
    fx: CrossBorderDetails | None = Field(
        default=None,
        description="Cross-border journals only: the quote it used and what arrived. `amount` "
        "and `fee` are then in the currency sold; the postings are in both currencies.",
    )
    mandate_id: str | None = Field(
        default=None, description="The mandate a non-owner debited the payer under; null when "
        "the payer's own participant (or a direct caller) moved the money.")
    created_at: datetime


# --- debit mandates ---------------------------------------------------------------------------

MandatePeriod = Literal["day", "week", "month"]
MandateStatus = Literal["active", "revoked", "expired"]


class MandateCreate(BaseModel):
    """Let another participant debit one of your accounts, within caps, until it expires."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "debtor_account_id": "acc_00000000000000000000000001",
            "grantee_participant_id": "ptp_00000000000000000000000004",
            "max_per_debit": {"amount": "5000.00", "currency": "CNY"},
            "max_per_period": {"amount": "20000.00", "currency": "CNY"},
            "period": "month",
            "expires_at": "2027-12-31T00:00:00Z",
            "purpose": "Monthly top-up of a robo-advice portfolio",
        }]},
    )

    debtor_account_id: str = IdField(ACCOUNT_PREFIX, "The account the grantee may debit; one you opened.")
    grantee_participant_id: str = Field(
        pattern=PARTICIPANT_PATTERN, description="The participant allowed to debit it (`ptp_…`); "
        "a sandbox service acting for it debits under it too.",
        examples=["ptp_00000000000000000000000004"])
    max_per_debit: AmountIn = Field(description="The largest single debit, in the account's currency.")
    max_per_period: AmountIn = Field(description="The most debited per period, in the account's currency.")
    period: MandatePeriod = Field(description="The calendar period `max_per_period` counts over "
                                  "(UTC, by the service clock; a week starts on Monday).")
    expires_at: datetime = Field(description="After this instant the mandate debits nothing.")
    purpose: str = Text(200, "What the debits are for, shown to the account holder.",
                        ["Monthly top-up of a robo-advice portfolio"])


class MandatePublic(BaseModel):
    """A debit mandate, its status now and what it has debited in the current period."""

    id: str = Field(examples=["mdt_00000000000000000000000001"])
    debtor_account_id: str
    grantor_participant_id: str | None = Field(
        description="The debtor account's owner, who granted it (null: an account opened directly).")
    grantee_participant_id: str
    max_per_debit: Money
    max_per_period: Money
    period: MandatePeriod
    expires_at: datetime
    purpose: str
    status: MandateStatus = Field(description="`expired` once the service clock passes `expires_at`.")
    used_this_period: Money = Field(description="Debited under it in the current period.")
    created_at: datetime
    revoked_at: datetime | None


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
