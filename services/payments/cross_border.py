"""Cross-border payments: price an FX quote on a rail, then pay it once, within its 30 seconds;
the money then takes the rail's time to arrive.

The figures (rates, margins, fees, rounding) are `fx.py`'s plain functions; the legs are
`ledger.py`'s. Here: the quote's record, the checks before a quote moves money, and the
payment's way (`CrossBorderTransit`):

1. paid: the payer is debited into the in-transit account (journal `xb_…`), `pending`;
2. at its settlement time (`Settlement.settles_by`: ripple 5 seconds, correspondent 3 business
   days, by the service clock) the due work (`settlement_due_work`, run after every clock move
   and every second) settles it: in transit → the rails' liquidity, the fee, the payee (journal
   `xbs_…`), `settled`;
3. or, when the payee is the magic beneficiary (an account named `Test Return`), it comes back
   at that time instead: in transit → the payer, in full (journal `xbr_…`), `returned`.

Each step is one unit of work with its event (`payments.cross_border.pending`, `.settled`
with `.received` for another participant's payee, `.returned`); steps 2 and 3 close the
transit with a conditional update first, so two runners at once, or one after a crash, close
it once.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.common.db import Database
from services.common.duework import DueWork

from services.common.caller import Caller
from services.common.clock import wire_time
from services.common.ids import new_id
from services.common.problems import Problem, not_found
from services.payments import events, fx, ledger
from services.payments.fastpath import NewJournal
from services.payments.models import CrossBorderTransit, FxQuote
from services.payments.presenters import quote_public, seen_by
from services.payments.repository import (
    AccountsRepository,
    FxQuotesRepository,
    JournalsRepository,
    TransitsRepository,
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
    CROSS_BORDER_IN_TRANSIT,
    DIRECT,
    check_within_mandate,
    get_journal,
    payer_and_payee,
    record_movement,
)

CROSS_BORDER_FEES = "cross_border_fees"
# The magic beneficiary (documented with the test cards): a payee account of this name cannot be
# paid by the rail, so a payment to it comes back to its payer when it would have settled.
RETURNED_BENEFICIARY = "test return"
SETTLEMENT = "cross-border-settlement"  # the due work's names, as the clock's answer lists them
RETURN = "cross-border-return"
DUE_BATCH = 200  # payments closed per round of due work; the rest are done in the next round


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
    in_transit = repo.system_account(CROSS_BORDER_IN_TRANSIT, quote.sell_currency, now)
    accounts[in_transit.id] = in_transit
    legs = ledger.into_transit(payer.id, in_transit.id, quote.sell_minor)
    beneficiary = repo.get(payee.id)
    assert beneficiary is not None  # payer_and_payee found it
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
    transit = CrossBorderTransit(
        journal_id=journal.id, quote_id=quote.id, status="pending",
        due_at=fx.RAILS[quote.rail].settles_by(now),
        comes_back=beneficiary.owner_name.strip().casefold() == RETURNED_BENEFICIARY,
    )
    result = record_movement(session, journal, legs, accounts, quote, transit)
    if not quotes.use(quote.id, journal.id):
        session.refresh(quote)
        raise _quote_used(quote.id, quote.journal_id or "another payment")
    TransitsRepository(session).add(transit)
    events.cross_border_event(session, "pending", result, now, accounts, payer.participant_id)
    return seen_by(result, caller, accounts)


# --- settlement: what falls due when time passes ----------------------------------------------


def settle(session: Session, journal_id: str, now: datetime) -> int:
    """Deliver a pending payment to its payee: in transit → the rail's liquidity in the currency
    sold (and the fee), the rail's liquidity in the currency bought → the payee. 1 if this call
    settled it, 0 if it was settled (or returned) already."""
    return _close(session, journal_id, now, "settled")


def send_back(session: Session, journal_id: str, now: datetime) -> int:
    """Return a pending payment to its payer, everything it sent: 1 if this call returned it."""
    return _close(session, journal_id, now, "returned")


def _close(session: Session, journal_id: str, now: datetime, outcome: str) -> int:
    closing_id = new_id("xbs" if outcome == "settled" else "xbr")
    if not TransitsRepository(session).close(journal_id, outcome, now, closing_id):
        return 0  # another runner closed it first
    payment = JournalsRepository(session).get(journal_id)
    transit = TransitsRepository(session).get(journal_id)
    assert payment is not None and transit is not None and payment.from_account_id and payment.to_account_id
    quote = FxQuotesRepository(session).get(transit.quote_id)
    assert quote is not None
    repo = AccountsRepository(session)
    in_transit = repo.system_account(CROSS_BORDER_IN_TRANSIT, quote.sell_currency, now)
    if outcome == "settled":
        liquidity = f"{quote.rail}_liquidity"
        sell_pool = repo.system_account(liquidity, quote.sell_currency, now)
        buy_pool = repo.system_account(liquidity, quote.buy_currency, now)
        fees = repo.system_account(CROSS_BORDER_FEES, quote.sell_currency, now)
        accounts = {**repo.get_many([payment.to_account_id]),
                    **{a.id: a for a in (in_transit, sell_pool, buy_pool, fees)}}
        currency_of = {account_id: account.currency for account_id, account in accounts.items()}
        legs = ledger.cross_border(in_transit.id, payment.to_account_id, sell_pool.id, buy_pool.id, fees.id,
                                   quote.sell_minor, quote.fee_minor, quote.buy_minor, currency_of)
        source, target, fee, what = in_transit.id, payment.to_account_id, quote.fee_minor, "Settlement"
    else:
        accounts = {**repo.get_many([payment.from_account_id]), in_transit.id: in_transit}
        legs = ledger.back_from_transit(in_transit.id, payment.from_account_id, quote.sell_minor)
        source, target, fee, what = in_transit.id, payment.from_account_id, 0, "Return"
    # No mandate and no key on it: the payment carried those, and a mandate's use counts once.
    record_movement(session, NewJournal(
        id=closing_id, kind="settlement" if outcome == "settled" else "return",
        currency=quote.sell_currency, amount_minor=quote.sell_minor, fee_minor=fee,
        from_account_id=source, to_account_id=target, description=f"{what} of {journal_id}",
        created_at=now), legs, accounts)
    shown = get_journal(session, journal_id)  # as a caller outside the gateway sees it: every balance
    owners = repo.get_many([payment.from_account_id, payment.to_account_id, *(p.account_id for p in shown.postings)])
    events.cross_border_event(session, outcome, shown, now, owners,
                              owners[payment.from_account_id].participant_id,
                              owners[payment.to_account_id].participant_id)
    return 1


def settlement_due_work(db: Database) -> list[DueWork]:
    """The payments due by the service clock, settled (or returned) each in its own unit of work."""

    def closing(outcome: str):  # type: ignore[no-untyped-def]
        close = settle if outcome == "settled" else send_back

        async def run(now: datetime) -> int:
            # The selection is a unit of work too (`run`, not `read`): on SQLite it runs on the
            # event loop with no pause between the clock's move and it, so the background round
            # cannot take what a clock move made due from under the move's answer.
            due = await db.run(lambda session: TransitsRepository(session).due(now, outcome == "returned", DUE_BATCH))
            done = 0
            for journal_id in due:
                done += await db.run(lambda session, journal_id=journal_id: close(session, journal_id, now))
            return done

        return run

    return [DueWork(SETTLEMENT, closing("settled")), DueWork(RETURN, closing("returned"))]


def _quote_used(quote_id: str, journal_id: str) -> Problem:
    return Problem(409, "quote-used", "The quote has already been paid",
                   f"{quote_id} was used by {journal_id}; a quote pays once. Ask for a new quote.",
                   journal_id=journal_id)
