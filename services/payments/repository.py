"""Every query the payments service makes, as plain SQLModel/SQLAlchemy queries.

The two a money movement runs on every request, the accounts look-up and the journal's write
(`AccountsRepository.get_many`, `JournalsRepository.post`), hand over to `fastpath.py`, where
the shortcuts that make them cheap are kept in one place.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.common.ids import ID_BODY_LENGTH, new_id
from services.payments import fastpath
from services.payments.fastpath import AccountRef, NewJournal, PostingRow
from services.payments.ledger import Leg
from services.payments.models import (
    Account,
    CrossBorderTransit,
    FxQuote,
    IdempotencyKeys,
    Journal,
    Mandate,
    Posting,
)


class AccountsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, account_id: str) -> Account | None:
        return self.session.get(Account, account_id)

    def get_many(self, ids: list[str]) -> dict[str, AccountRef]:
        """Id, kind, currency and owner of each account that exists: every movement's look-up,
        on the fast path (`fastpath.accounts_by_id`, which remembers what it read)."""
        return fastpath.accounts_by_id(self.session, ids)

    def forget(self, ids: list[str]) -> None:
        """Drop these accounts from what the process remembers of them (`fastpath`)."""
        fastpath.forget_accounts(self.session, ids)

    def exists(self, account_id: str) -> bool:
        return self.session.execute(
            select(Account.id).where(Account.id == account_id)
        ).first() is not None

    def list(self, limit: int, after: str | None, kind: str | None, currency: str | None,
             participant_id: str | None = None) -> list[Account]:
        """A page of accounts; only those `participant_id` opened when it is given."""
        query = select(Account).order_by(Account.id).limit(limit + 1)
        if participant_id:
            query = query.where(Account.participant_id == participant_id)
        if after:
            query = query.where(Account.id > after)
        if kind:
            query = query.where(Account.kind == kind)
        if currency:
            query = query.where(Account.currency == currency)
        return list(self.session.execute(query).scalars())

    def add(self, account: Account) -> Account:
        self.session.add(account)
        self.session.flush()
        return account

    def system_account(self, code: str, currency: str, now: datetime) -> Account:
        """The internal account for `code` in `currency`, created on first use."""
        system_code = f"{code}:{currency}"
        account = self.session.execute(
            select(Account).where(Account.system_code == system_code)
        ).scalar_one_or_none()
        if account is None:
            # Two first uses at once (PostgreSQL): the second insert meets the unique code, its
            # savepoint rolls back, and it reads the account the first one made.
            try:
                with self.session.begin_nested():
                    account = self.add(
                        Account(
                            id=new_id("acc"),
                            kind="internal",
                            owner_name=code.replace("_", " "),
                            currency=currency,
                            allow_overdraft=True,
                            system_code=system_code,
                            created_at=now,
                        )
                    )
            except IntegrityError:
                account = self.session.execute(
                    select(Account).where(Account.system_code == system_code)
                ).scalar_one()
        return account


class JournalsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, journal_id: str) -> Journal | None:
        return self.session.get(Journal, journal_id)

    def post(self, journal: Journal | NewJournal, legs: list[Leg], currencies: dict[str, str]
             ) -> tuple[dict[str, int | None], list[PostingRow]]:
        """Apply the legs to the balances and record the journal with its postings: every
        movement's write, on the fast path (`fastpath.post_journal` says how and why). A None
        balance is a refused overdraft: the caller must roll back."""
        return fastpath.post_journal(self.session, journal, legs, currencies)

    def add_refunded(self, journal_id: str, refund_minor: int, fee_share: int) -> bool:
        """Count a refund against its original, never past the original amount (one
        conditional UPDATE, so two concurrent refunds cannot both take the last yuan)."""
        result = self.session.execute(
            update(Journal)
            .where(
                Journal.id == journal_id,
                Journal.refunded_minor + refund_minor <= Journal.amount_minor,
            )
            .values(
                refunded_minor=Journal.refunded_minor + refund_minor,
                fee_refunded_minor=Journal.fee_refunded_minor + fee_share,
            )
        )
        return result.rowcount == 1

    def postings_of(self, journal_ids: list[str]) -> dict[str, list[Posting]]:
        rows = self.session.execute(
            select(Posting).where(Posting.journal_id.in_(journal_ids)).order_by(Posting.id)
        ).scalars()
        grouped: dict[str, list[Posting]] = {jid: [] for jid in journal_ids}
        for posting in rows:
            grouped[posting.journal_id].append(posting)
        return grouped

    def list(self, limit: int, after: str | None, account_id: str | None,
             participant_id: str | None = None) -> list[Journal]:
        """A page of journals: those touching `account_id`, or any account `participant_id`
        opened (or nobody did), when given."""
        # Oldest first: by the id's time-ordered body (its last 26 characters), not the whole
        # id, whose prefix (dep_, pay_, tr_, ...) would group journals by kind.
        created_order = func.substr(Journal.id, func.length(Journal.id) - (ID_BODY_LENGTH - 1))
        query = select(Journal).order_by(created_order).limit(limit + 1)
        if after:
            query = query.where(created_order > after[-ID_BODY_LENGTH:])
        if account_id:
            touched = select(Posting.journal_id).where(Posting.account_id == account_id)
            query = query.where(Journal.id.in_(touched))
        if participant_id:
            visible = (
                select(Posting.journal_id)
                .join(Account, Account.id == Posting.account_id)
                .where(Account.kind != "internal")
                .where(or_(Account.participant_id == participant_id, Account.participant_id.is_(None)))
            )
            query = query.where(Journal.id.in_(visible))
        return list(self.session.execute(query).scalars())


class FxQuotesRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, quote: FxQuote) -> FxQuote:
        self.session.add(quote)
        self.session.flush()
        return quote

    def get(self, quote_id: str) -> FxQuote | None:
        return self.session.get(FxQuote, quote_id)

    def of_journals(self, journal_ids: list[str]) -> dict[str, FxQuote]:
        if not journal_ids:
            return {}
        rows = self.session.execute(select(FxQuote).where(FxQuote.journal_id.in_(journal_ids))).scalars()
        return {quote.journal_id: quote for quote in rows if quote.journal_id}

    def use(self, quote_id: str, journal_id: str) -> bool:
        """Mark the quote paid by `journal_id` unless it already is (one conditional UPDATE, so
        two concurrent payments cannot both use it)."""
        result = self.session.execute(
            update(FxQuote)
            .where(FxQuote.id == quote_id, FxQuote.journal_id.is_(None))
            .values(journal_id=journal_id)
        )
        return result.rowcount == 1


class TransitsRepository:
    """Cross-border payments on their way (`CrossBorderTransit`)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, transit: CrossBorderTransit) -> CrossBorderTransit:
        self.session.add(transit)
        self.session.flush()
        return transit

    def get(self, journal_id: str) -> CrossBorderTransit | None:
        return self.session.get(CrossBorderTransit, journal_id)

    def of_journals(self, journal_ids: list[str]) -> dict[str, CrossBorderTransit]:
        if not journal_ids:
            return {}
        rows = self.session.execute(
            select(CrossBorderTransit).where(CrossBorderTransit.journal_id.in_(journal_ids))).scalars()
        return {transit.journal_id: transit for transit in rows}

    def due(self, now: datetime, comes_back: bool, limit: int) -> list[str]:
        """The pending payments due by `now` that settle (or, `comes_back`, return), oldest due first."""
        return list(self.session.execute(
            select(CrossBorderTransit.journal_id)
            .where(CrossBorderTransit.status == "pending", CrossBorderTransit.due_at <= now,
                   CrossBorderTransit.comes_back.is_(comes_back))
            .order_by(CrossBorderTransit.due_at).limit(limit)).scalars())

    def close(self, journal_id: str, status: str, now: datetime, closing_journal_id: str) -> bool:
        """Settle or return it unless that was done already: one conditional UPDATE, so two
        runners at once (or one after a crash) close it once; on PostgreSQL the second waits
        for the first's row lock, then finds it no longer pending."""
        result = self.session.execute(
            update(CrossBorderTransit)
            .where(CrossBorderTransit.journal_id == journal_id, CrossBorderTransit.status == "pending")
            .values(status=status, closed_at=now, closing_journal_id=closing_journal_id))
        return result.rowcount == 1

    def pending_totals(self) -> dict[str, int]:
        """What pending payments hold in transit, per currency sold."""
        rows = self.session.execute(
            select(Journal.currency, func.sum(Journal.amount_minor))
            .join(CrossBorderTransit, CrossBorderTransit.journal_id == Journal.id)
            .where(CrossBorderTransit.status == "pending")
            .group_by(Journal.currency)).tuples()
        return {currency: int(total) for currency, total in rows}


class MandatesRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, mandate: Mandate) -> Mandate:
        self.session.add(mandate)
        self.session.flush()
        return mandate

    def get(self, mandate_id: str, *, for_update: bool = False) -> Mandate | None:
        """The mandate; `for_update` locks its row until the transaction ends (PostgreSQL;
        SQLite's writer lock already serialises), so two debits under it take turns."""
        query = select(Mandate).where(Mandate.id == mandate_id)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        return self.session.execute(query).scalar_one_or_none()

    def used_between(self, mandate_ids: list[str], start: datetime, end: datetime) -> dict[str, int]:
        """What was debited under each mandate in [start, end), by journal amount."""
        if not mandate_ids:
            return {}
        rows = self.session.execute(
            select(Journal.mandate_id, func.sum(Journal.amount_minor))
            .where(Journal.mandate_id.in_(mandate_ids),
                   Journal.created_at >= start, Journal.created_at < end)
            .group_by(Journal.mandate_id)
        ).tuples()
        return {m: int(total) for m, total in rows if m is not None}

    def list(self, limit: int, after: str | None, parties: set[str] | None, now: datetime,
             debtor_account_id: str | None = None, grantee_participant_id: str | None = None,
             status: str | None = None) -> list[Mandate]:
        """A page of mandates, oldest id first: those `parties` grant or hold (all when None)."""
        query = select(Mandate).order_by(Mandate.id).limit(limit + 1)
        if parties is not None:
            query = query.where(or_(Mandate.grantor_participant_id.in_(parties),
                                    Mandate.grantee_participant_id.in_(parties)))
        if after:
            query = query.where(Mandate.id > after)
        if debtor_account_id:
            query = query.where(Mandate.debtor_account_id == debtor_account_id)
        if grantee_participant_id:
            query = query.where(Mandate.grantee_participant_id == grantee_participant_id)
        if status == "revoked":
            query = query.where(Mandate.revoked_at.is_not(None))
        elif status == "active":
            query = query.where(Mandate.revoked_at.is_(None), Mandate.expires_at > now)
        elif status == "expired":
            query = query.where(Mandate.revoked_at.is_(None), Mandate.expires_at <= now)
        return list(self.session.execute(query).scalars())

    def revoke(self, mandate_id: str, now: datetime) -> None:
        """Revoke it unless it already is (the first revocation's time stays)."""
        self.session.execute(
            update(Mandate).where(Mandate.id == mandate_id, Mandate.revoked_at.is_(None))
            .values(revoked_at=now)
        )


class InvariantsRepository:
    """The queries behind GET /invariants: each returns the rows that break one rule."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def unbalanced_journals(self) -> list[tuple[str, str, int]]:
        """Per journal and currency: a cross-border journal balances in each of its two."""
        rows = self.session.execute(
            select(Posting.journal_id, Posting.currency, func.sum(Posting.amount_minor))
            .group_by(Posting.journal_id, Posting.currency)
            .having(func.sum(Posting.amount_minor) != 0)
        ).tuples()
        return [(j, c, int(s)) for j, c, s in rows]

    def postings_in_foreign_currency(self) -> list[tuple[str, str, str]]:
        """Postings whose currency is not their account's: (journal, account, currency)."""
        return list(
            self.session.execute(
                select(Posting.journal_id, Posting.account_id, Posting.currency)
                .join(Account, Account.id == Posting.account_id)
                .where(Posting.currency != Account.currency)
            ).tuples()
        )

    def currency_totals(self) -> list[tuple[str, int, int]]:
        rows = self.session.execute(
            select(
                Posting.currency,
                func.coalesce(func.sum(case((Posting.amount_minor < 0, -Posting.amount_minor), else_=0)), 0),
                func.coalesce(func.sum(case((Posting.amount_minor > 0, Posting.amount_minor), else_=0)), 0),
            ).group_by(Posting.currency).order_by(Posting.currency)
        ).tuples()
        return [(c, int(d), int(k)) for c, d, k in rows]

    def balance_mismatches(self) -> list[tuple[str, int, int]]:
        posted = (
            select(Posting.account_id, func.sum(Posting.amount_minor).label("total"))
            .group_by(Posting.account_id)
            .subquery()
        )
        rows = self.session.execute(
            select(Account.id, Account.balance_minor, func.coalesce(posted.c.total, 0))
            .outerjoin(posted, posted.c.account_id == Account.id)
            .where(Account.balance_minor != func.coalesce(posted.c.total, 0))
        ).tuples()
        return [(a, int(b), int(t)) for a, b, t in rows]

    def forbidden_negatives(self) -> list[tuple[str, int]]:
        return list(
            self.session.execute(
                select(Account.id, Account.balance_minor).where(
                    Account.balance_minor < 0, Account.allow_overdraft.is_(False)
                )
            ).tuples()
        )

    def over_refunded(self) -> list[tuple[str, int, int]]:
        refunded = (
            select(Journal.refund_of, func.sum(Journal.amount_minor).label("total"))
            .where(Journal.refund_of.is_not(None))
            .group_by(Journal.refund_of)
            .subquery()
        )
        rows = self.session.execute(
            select(Journal.id, Journal.amount_minor, refunded.c.total)
            .join(refunded, refunded.c.refund_of == Journal.id)
            .where(or_(refunded.c.total > Journal.amount_minor,
                       refunded.c.total != Journal.refunded_minor))
        ).tuples()
        return [(j, int(a), int(t)) for j, a, t in rows]

    def keys_applied_twice(self) -> list[tuple[str, int]]:
        return list(
            self.session.execute(
                select(Journal.idempotency_key_id, func.count())
                .where(Journal.idempotency_key_id.is_not(None))
                .group_by(Journal.idempotency_key_id)
                .having(func.count() > 1)
            ).tuples()
        )

    def keys_without_record(self) -> list[str]:
        """Journals claiming a key whose record is gone or not finished: a half-applied key."""
        k = IdempotencyKeys.c
        return list(
            self.session.execute(
                select(Journal.id)
                .outerjoin(IdempotencyKeys, k.id == Journal.idempotency_key_id)
                .where(Journal.idempotency_key_id.is_not(None))
                .where(or_(k.id.is_(None), k.state != "done"))
            ).scalars()
        )

    def mandated_debits(self) -> list[tuple[Journal, Mandate]]:
        """Every journal debited under a mandate, with its mandate, oldest first."""
        return list(
            self.session.execute(
                select(Journal, Mandate).join(Mandate, Mandate.id == Journal.mandate_id)
                .order_by(Journal.created_at, Journal.id)
            ).tuples()
        )

    def system_balances(self, code: str) -> dict[str, int]:
        """The balance of the internal account `code` in each currency it exists in."""
        rows = self.session.execute(
            select(Account.currency, Account.balance_minor)
            .where(Account.system_code.like(f"{code}:%"))).tuples()
        return {currency: int(balance) for currency, balance in rows}

    def counts(self) -> tuple[int, int]:
        journals = self.session.execute(select(func.count()).select_from(Journal)).scalar_one()
        postings = self.session.execute(select(func.count()).select_from(Posting)).scalar_one()
        return int(journals), int(postings)
