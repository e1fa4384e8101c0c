"""Cross-border payments: price an FX quote on a rail, then pay it once, within its 30 seconds.

The figures (rates, margins, fees, rounding) are `fx.py`'s plain functions; the legs are
`ledger.cross_border`'s. Here: the quote's record, and the checks before a quote moves money.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.common.caller import Caller
from services.common.clock import wire_time
from services.common.ids import new_id
from services.common.problems import Problem, not_found
from services.payments import fx, ledger
from services.payments.fastpath import NewJournal
from services.payments.models import FxQuote
from services.payments.presenters import quote_public
from services.payments.repository import (
    AccountsRepository,
    FxQuotesRepository,
    JournalsRepository,
)
from services.payments.schemas import (
    FX_QUOTE_PREFIX,
    CrossBorderCreate,
    FxQuoteBySell,
    FxQuoteCreate,
    FxQuotePublic,
    JournalPublic,
)
from services.payments.service import (
    DIRECT,
    check_within_mandate,
    payer_and_payee,
    record_movement,
)

CROSS_BORDER_FEES = "cross_border_fees"


def create_quote(session: Session, body: FxQuoteCreate, now: datetime) -> FxQuotePublic:
    if isinstance(body, FxQuoteBySell):
        sell_currency, buy_currency, side, fixed = body.sell.currency, body.buy_currency, "sell", body.sell
    else:
        sell_currency, buy_currency, side, fixed = body.sell_currency, body.buy.currency, "buy", body.buy
    figures = fx.quote(body.rail, sell_currency, buy_currency, side, fixed.minor)
    quote = FxQuotesRepository(session).add(
        FxQuote(
            id=new_id(FX_QUOTE_PREFIX),
            rail=figures.rail,
            fixed_side=side,
            sell_currency=sell_currency,
            buy_currency=buy_currency,
            sell_minor=figures.sell_minor,
            fee_minor=figures.fee_minor,
            buy_minor=figures.buy_minor,
            rate=fx.rate_string(figures.rate),
            mid_rate=fx.rate_string(figures.mid_rate),
            margin_bps=fx.RAILS[figures.rail].margin_bps,
            rates_as_of=fx.rate_table().as_of,
            created_at=now,
            expires_at=now + fx.QUOTE_TTL,
        )
    )
    return quote_public(quote, now)


def get_quote(session: Session, quote_id: str, now: datetime) -> FxQuotePublic:
    quote = FxQuotesRepository(session).get(quote_id)
    if quote is None:
        raise not_found("Quote", quote_id)
    paid_at = None
    if quote.journal_id:
        journal = JournalsRepository(session).get(quote.journal_id)
        paid_at = journal.created_at if journal else None
    return quote_public(quote, now, paid_at)


def cross_border_payment(session: Session, body: CrossBorderCreate, now: datetime,
                         idem_id: str | None, caller: Caller = DIRECT) -> JournalPublic:
    quotes = FxQuotesRepository(session)
    quote = quotes.get(body.quote_id)
    if quote is None:
        raise not_found("Quote", body.quote_id)
    if quote.journal_id:
        raise _quote_used(quote.id, quote.journal_id)
    if now >= quote.expires_at:
        raise Problem(409, "quote-expired", "The quote has expired",
                      f"{quote.id} could be paid until {wire_time(quote.expires_at)}; "
                      "ask for a new quote (rates and fees are re-priced).",
                      expired_at=wire_time(quote.expires_at))
    accounts, payer, payee, mandate = payer_and_payee(
        session, body.from_account_id, body.to_account_id, body.mandate_id, caller,
        "A cross-border payment")
    repo = AccountsRepository(session)
    if payer.kind == "internal" or payee.kind == "internal":
        raise Problem(409, "internal-account", "Internal accounts cannot be used directly",
                      "Liquidity, fee and funding accounts only move through the ledger's own rules.")
    for account, currency, role in ((payer, quote.sell_currency, "sells"),
                                    (payee, quote.buy_currency, "buys")):
        if account.currency != currency:
            raise Problem(
                409, "currency-mismatch", "Currency does not match the quote",
                f"The quote {role} {currency}; account {account.id} holds {account.currency}.",
                account_id=account.id, account_currency=account.currency, quote_currency=currency,
            )
    check_within_mandate(session, mandate, quote.sell_minor, now)
    liquidity = f"{quote.rail}_liquidity"
    sell_pool = repo.system_account(liquidity, quote.sell_currency, now)
    buy_pool = repo.system_account(liquidity, quote.buy_currency, now)
    fees = repo.system_account(CROSS_BORDER_FEES, quote.sell_currency, now)
    for account in (sell_pool, buy_pool, fees):
        accounts[account.id] = account
    currency_of = {account_id: account.currency for account_id, account in accounts.items()}
    legs = ledger.cross_border(payer.id, payee.id, sell_pool.id, buy_pool.id, fees.id,
                               quote.sell_minor, quote.fee_minor, quote.buy_minor, currency_of)
    journal = NewJournal(
        id=new_id("xb"),
        kind="cross_border",
        currency=quote.sell_currency,
        amount_minor=quote.sell_minor,
        fee_minor=quote.fee_minor,
        from_account_id=payer.id,
        to_account_id=payee.id,
        description=body.description,
        mandate_id=mandate.id if mandate else None,
        idempotency_key_id=idem_id,
        created_at=now,
    )
    result = record_movement(session, journal, legs, accounts, quote)
    if not quotes.use(quote.id, journal.id):
        session.refresh(quote)
        raise _quote_used(quote.id, quote.journal_id or "another payment")
    return result


def _quote_used(quote_id: str, journal_id: str) -> Problem:
    return Problem(409, "quote-used", "The quote has already been paid",
                   f"{quote_id} was used by {journal_id}; a quote pays once. Ask for a new quote.",
                   journal_id=journal_id)
