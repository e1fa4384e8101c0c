"""Merchant QR codes: show one at a till, and pay the merchant a wallet scanned.

The EMVCo payload (its TLV fields, CRC, currencies) is `qr.py`'s plain functions; a QR payment
is checked here, then paid exactly as POST /transfers pays (`service.transfer`).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.common.caller import Caller
from services.common.money import AmountIn, format_minor, to_minor
from services.common.problems import Problem
from services.payments import qr, service
from services.payments.presenters import qr_code_public
from services.payments.repository import AccountsRepository
from services.payments.schemas import (
    JournalPublic,
    QrCodePublic,
    QrPaymentCreate,
    TransferCreate,
)
from services.payments.service import DIRECT, debit_mandate, get_account


def merchant_qr(session: Session, account_id: str, amount: str | None, caller: Caller = DIRECT) -> QrCodePublic:
    account = get_account(session, account_id, caller)
    if account.kind != "merchant":
        raise Problem(409, "not-a-merchant", "Only merchant accounts have a QR code",
                      f"{account.id} is a {account.kind} account.")
    amount_minor = None
    if amount is not None:
        try:
            amount_minor = to_minor(amount, account.currency)
        except ValueError as exc:
            raise Problem(409, "amount-precision", "Amount does not fit the account's currency",
                          f"{exc}.", account_currency=account.currency) from None
    payload = qr.merchant_payload(account.id, account.owner_name, account.currency, amount_minor)
    return qr_code_public(account, amount_minor, payload, qr.svg(payload))


def _invalid_payload(error: qr.QrError) -> Problem:
    where = f"data object {error.tag}: " if error.tag else ""
    return Problem(
        422, "invalid-qr-payload", "The QR payload cannot be paid",
        f"Invalid field(s): body.payload ({where}{error.message}).",
        errors=[{"field": "body.payload", "message": f"{where}{error.message}"}],
        tag=error.tag,
    )


def qr_payment(session: Session, body: QrPaymentCreate, now: datetime, idem_id: str | None,
               caller: Caller = DIRECT) -> JournalPublic:
    # The payer first, as a wallet server authenticates the wallet before decoding what it
    # scanned: an unknown payer (or another participant's, without its mandate) is 404
    # whatever the payload says.
    payer = AccountsRepository(session).get_many([body.from_account_id]).get(body.from_account_id)
    debit_mandate(session, body.from_account_id, payer, body.mandate_id, caller)
    try:
        terms = qr.parse(body.payload)
    except qr.QrError as error:
        raise _invalid_payload(error) from None
    if terms.amount_minor is not None:
        fixed = AmountIn(amount=format_minor(terms.amount_minor, terms.currency), currency=terms.currency)
        if body.amount is not None and (body.amount.currency, body.amount.minor) != (terms.currency, terms.amount_minor):
            raise Problem(409, "amount-mismatch", "The amount differs from the QR's",
                          f"This QR asks for {fixed.amount} {fixed.currency}; omit `amount` or send that.",
                          qr_amount=fixed.model_dump())
        amount = fixed
    elif body.amount is None:
        raise Problem(409, "amount-required", "Say how much to pay",
                      "This is a static QR: it carries no amount, so `amount` is required.")
    else:
        amount = body.amount
    merchant = get_account(session, terms.account_id)
    if merchant.kind != "merchant":
        raise Problem(409, "not-a-merchant", "The QR does not name a merchant account",
                      f"{merchant.id} is a {merchant.kind} account.")
    if merchant.currency != terms.currency:
        raise Problem(409, "currency-mismatch", "The QR's currency is not the merchant's",
                      f"The QR is in {terms.currency}; {merchant.id} holds {merchant.currency}.",
                      account_id=merchant.id, account_currency=merchant.currency)
    return service.transfer(
        session,
        TransferCreate(from_account_id=body.from_account_id, to_account_id=merchant.id,
                       amount=amount, description=body.description, mandate_id=body.mandate_id),
        now,
        idem_id,
        caller,
        resource="qr_payment",
    )
