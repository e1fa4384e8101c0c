"""Presenters: the payments rows as the API shows them (the `*Public` models of schemas.py).

No rules and no queries: each function turns what the service read or wrote into a response
model. Amounts leave here as `Money` in their currency's exponent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from services.common.caller import Caller
from services.common.money import Money
from services.payments import fx, mandates
from services.payments.fastpath import AccountRef, NewJournal, PostingRow
from services.payments.models import Account, CrossBorderTransit, FxQuote, Journal, Mandate, Posting
from services.payments.schemas import (
    AccountPublic,
    CrossBorderDetails,
    FxQuotePublic,
    JournalPublic,
    MandatePublic,
    PostingPublic,
    QrCodePublic,
    Settlement,
)


def account_public(account: Account) -> AccountPublic:
    return AccountPublic(
        id=account.id,
        kind=account.kind,  # type: ignore[arg-type]
        owner_name=account.owner_name,
        currency=account.currency,
        balance=Money.of(account.balance_minor, account.currency),
        allow_overdraft=account.allow_overdraft,
        participant_id=account.participant_id,
        created_at=account.created_at,
    )


def journal_public(journal: Journal | NewJournal, postings: list[Posting] | list[PostingRow],
                   quote: FxQuote | None = None, transit: CrossBorderTransit | None = None) -> JournalPublic:
    # Built without validation, as Money.of is: every field comes from a journal and postings
    # this service wrote, so they are right by construction (and it is on every movement's path).
    ccy = journal.currency
    return JournalPublic.model_construct(
        id=journal.id,
        kind=journal.kind,  # type: ignore[arg-type]
        amount=Money.of(journal.amount_minor, ccy),
        fee=Money.of(journal.fee_minor, ccy),
        from_account_id=journal.from_account_id,
        to_account_id=journal.to_account_id,
        description=journal.description,
        card_last4=journal.card_last4,
        refund_of=journal.refund_of,
        refunded=Money.of(journal.refunded_minor, ccy),
        postings=[
            PostingPublic.model_construct(
                account_id=p.account_id,
                amount=Money.of(p.amount_minor, p.currency),
                balance_after=Money.of(p.balance_after_minor, p.currency),
            )
            for p in postings
        ],
        fx=cross_border_details(quote, journal.created_at, transit) if quote is not None else None,
        mandate_id=journal.mandate_id,
        created_at=journal.created_at,
    )


def balance_visible(viewer: Caller, account: Account | AccountRef) -> bool:
    """Whether `viewer` may see this account's balance: its own customers' (or, acting for a
    participant, that one's), not another firm's nor the sandbox's own accounts."""
    if not viewer.restricted:
        return True
    return account.kind != "internal" and account.participant_id is not None and viewer.may_use(account.participant_id)


def seen_by(movement: JournalPublic, viewer: Caller,
            accounts: Mapping[str, Account | AccountRef]) -> JournalPublic:
    """The journal as `viewer` may see it: every line, but the balance after it only on the
    accounts `balance_visible` allows (an account missing from `accounts` is hidden)."""
    if not viewer.restricted:
        return movement
    postings = [p if (a := accounts.get(p.account_id)) is not None and balance_visible(viewer, a)
                else p.model_copy(update={"balance_after": None}) for p in movement.postings]
    return movement.model_copy(update={"postings": postings})


def mandate_public(mandate: Mandate, used_this_period_minor: int, now: datetime) -> MandatePublic:
    ccy = mandate.currency
    return MandatePublic(
        id=mandate.id,
        debtor_account_id=mandate.debtor_account_id,
        grantor_participant_id=mandate.grantor_participant_id,
        grantee_participant_id=mandate.grantee_participant_id,
        max_per_debit=Money.of(mandate.max_per_debit_minor, ccy),
        max_per_period=Money.of(mandate.max_per_period_minor, ccy),
        period=mandate.period,  # type: ignore[arg-type]
        expires_at=mandate.expires_at,
        purpose=mandate.purpose,
        status=mandates.status_of(mandate.revoked_at, mandate.expires_at, now),  # type: ignore[arg-type]
        used_this_period=Money.of(used_this_period_minor, ccy),
        created_at=mandate.created_at,
        revoked_at=mandate.revoked_at,
    )


def cross_border_details(quote: FxQuote, paid_at: datetime, transit: CrossBorderTransit | None) -> CrossBorderDetails:
    """A payment without a transit record was booked before payments took time: it settled
    when it was paid."""
    rule = fx.RAILS[quote.rail]
    status = transit.status if transit is not None else "settled"
    closed_at = transit.closed_at if transit is not None else paid_at
    return CrossBorderDetails(
        quote_id=quote.id,
        rail=quote.rail,  # type: ignore[arg-type]
        rate=quote.rate,
        sell=Money.of(quote.sell_minor, quote.sell_currency),
        buy=Money.of(quote.buy_minor, quote.buy_currency),
        fee=Money.of(quote.fee_minor, quote.sell_currency),
        settlement=Settlement(estimate=rule.settlement,
                              settles_by=transit.due_at if transit is not None else rule.settles_by(paid_at)),
        status=status,  # type: ignore[arg-type]
        settled_at=closed_at if status == "settled" else None,
        returned_at=closed_at if status == "returned" else None,
        closing_journal_id=transit.closing_journal_id if transit is not None else None,
    )


def quote_public(quote: FxQuote, now: datetime, paid_at: datetime | None = None) -> FxQuotePublic:
    rule = fx.RAILS[quote.rail]
    table = fx.rate_table()
    status = "used" if quote.journal_id else ("expired" if now >= quote.expires_at else "open")
    return FxQuotePublic(
        id=quote.id,
        rail=quote.rail,  # type: ignore[arg-type]
        fixed_side=quote.fixed_side,  # type: ignore[arg-type]
        sell=Money.of(quote.sell_minor, quote.sell_currency),
        buy=Money.of(quote.buy_minor, quote.buy_currency),
        fee=Money.of(quote.fee_minor, quote.sell_currency),
        rate=quote.rate,
        mid_rate=quote.mid_rate,
        fx_margin_bps=quote.margin_bps,
        rates_as_of=quote.rates_as_of,
        rates_source=table.source,
        settlement=Settlement(estimate=rule.settlement,
                              settles_by=rule.settles_by(paid_at or max(now, quote.created_at))),
        status=status,  # type: ignore[arg-type]
        journal_id=quote.journal_id,
        created_at=quote.created_at,
        expires_at=quote.expires_at,
    )


def qr_code_public(account: Account, amount_minor: int | None, payload: str, svg: str) -> QrCodePublic:
    return QrCodePublic(
        account_id=account.id,
        currency=account.currency,
        dynamic=amount_minor is not None,
        amount=Money.of(amount_minor, account.currency) if amount_minor is not None else None,
        payload=payload,
        svg=svg,
    )
