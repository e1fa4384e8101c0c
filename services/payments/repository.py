"""Every query the payments service makes."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Select, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from services.common.ids import ID_BODY_LENGTH, new_id
from services.common.prepared import Prepared, as_sqlalchemy_error
from services.payments.ledger import Leg, net_by_account
from services.payments.models import Account, FxQuote, IdempotencyKeys, Journal, Mandate, Posting


# The hot path (every movement) runs plain Core statements, built once here with bind
# parameters, on the session's connection: no ORM unit of work, no statement rebuilt or re-keyed
# per request, no model objects made only to be dumped again. Same SQL, same transaction.
_accounts = Account.__table__  # type: ignore[attr-defined]
_journals = Journal.__table__  # type: ignore[attr-defined]
_postings = Posting.__table__  # type: ignore[attr-defined]


@contextmanager
def _batched(conn: Connection) -> Iterator[bool]:
    """Statements executed inside are sent to PostgreSQL together, in psycopg's pipeline mode:
    one network round trip for all of them instead of one each. Their results can only be read
    after the block; a failing statement raises at its end (and the rest of the batch is
    skipped). On SQLite, in the process, they simply run one after another. Yields whether
    the statements are batched."""
    pipeline = getattr(conn.connection.dbapi_connection, "pipeline", None)
    if pipeline is None:
        yield False
        return
    try:
        with pipeline():
            yield True
    except conn.dialect.loaded_dbapi.Error as exc:
        raise as_sqlalchemy_error(conn, exc, "(pipeline)", None, None) from exc


def _first_value(cursor: Any) -> Any:
    """The first column of the cursor's first row (None without a row); closes the cursor."""
    row = cursor.fetchone()
    cursor.close()
    return row[0] if row is not None else None


@lru_cache(maxsize=16)
def _select_accounts(count: int) -> Select:
    """The accounts with `count` given ids: one statement per count, with a bind parameter
    per id (an "expanding" IN would be re-rendered on every execution)."""
    ids = [bindparam(f"id{i}") for i in range(count)]
    return select(
        _accounts.c.id, _accounts.c.kind, _accounts.c.currency, _accounts.c.participant_id,
    ).where(_accounts.c.id.in_(ids))


@lru_cache(maxsize=16)
def _prepared_select_accounts(count: int) -> Prepared:
    return Prepared(_select_accounts(count))


# The overdraft check and the write are one statement (see JournalsRepository.post).
_APPLY = (
    update(_accounts)
    .where(
        _accounts.c.id == bindparam("account_id"),
        or_(_accounts.c.allow_overdraft, _accounts.c.balance_minor + bindparam("delta") >= 0),
    )
    .values(balance_minor=_accounts.c.balance_minor + bindparam("delta"))
    .returning(_accounts.c.balance_minor)
)
_JOURNAL_COLUMNS = tuple(c.name for c in _journals.columns)
_POSTING_COLUMNS = [c.name for c in _postings.columns if c.name != "id"]
# `inline()`: the posting's id is the database's; nothing is fetched back.
_INSERT_JOURNAL = Prepared(insert(_journals).inline(), list(_JOURNAL_COLUMNS))
_APPLY_PREPARED = Prepared(_APPLY)


@lru_cache(maxsize=16)
def _prepared_insert_postings(count: int, with_journal: bool = False) -> Prepared:
    """`count` postings as one multi-row INSERT: one statement, where the driver's executemany
    costs a statement per row (and, with psycopg, a pipeline round). Each posting's balance
    after is read from its account's row, which this transaction has just updated.

    `with_journal` (PostgreSQL): the journal's own INSERT rides along as a CTE of the same
    statement (`j_<column>` parameters), one statement fewer in the batch; the postings'
    foreign key to it is checked at the end of the statement, when the journal is there."""
    rows = []
    for i in range(count):
        row: dict[str, Any] = {name: bindparam(f"{name}_{i}", type_=_postings.c[name].type)
                               for name in _POSTING_COLUMNS if name != "balance_after_minor"}
        # The balance the account was just updated to, in this transaction.
        row["balance_after_minor"] = (
            select(_accounts.c.balance_minor)
            .where(_accounts.c.id == bindparam(f"balance_of_{i}", type_=_accounts.c.id.type))
            .scalar_subquery()
        )
        rows.append(row)
    statement = insert(_postings).values(rows)
    if with_journal:
        journal = insert(_journals).values(
            {name: bindparam(f"j_{name}", type_=_journals.c[name].type) for name in _JOURNAL_COLUMNS}
        )
        statement = statement.add_cte(journal.cte("new_journal"))
    return Prepared(statement)


class _KnownAccounts:
    """What this process has read of accounts' kind, currency and owner, per database.

    None of them changes once an account is opened (no endpoint or rule updates them; only the
    balance moves, and accounts are never deleted), so a movement between accounts already
    read skips the look-up: on PostgreSQL, a network round trip fewer per movement. Only what
    `get_many` read from the database is remembered (no movement creates the accounts it looks
    up there). Should an entry ever be wrong, the movement's postings fail their foreign key
    (a 500, rolled back) and the entry is forgotten. The sandbox's reset deletes every account:
    it forgets them all (`forget_known_accounts`). At most LIMIT accounts per database; past
    that the oldest half is dropped."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._by_engine: weakref.WeakKeyDictionary[Engine, dict[str, AccountRef]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, session: Session) -> dict[str, AccountRef]:
        engine = session.get_bind()
        known = self._by_engine.get(engine)  # type: ignore[arg-type]
        if known is None:
            with self._lock:
                known = self._by_engine.setdefault(engine, {})  # type: ignore[arg-type]
        return known

    def forget(self, engine: Engine) -> None:
        """Everything read on this database: the sandbox's reset deletes accounts after all."""
        with self._lock:
            self._by_engine.pop(engine, None)

    def trim(self, known: dict[str, AccountRef]) -> None:
        if len(known) > self.LIMIT:
            with self._lock:
                for id_ in list(known)[: len(known) // 2]:
                    known.pop(id_, None)


class AccountRef(NamedTuple):
    """What a movement needs to know of an account (a plain row, not an ORM object)."""

    id: str
    kind: str
    currency: str
    participant_id: str | None


@dataclass(slots=True)
class NewJournal:
    """A journal about to be written: the columns of `Journal` as a plain record (making a
    SQLModel table object costs more than inserting its row)."""

    id: str
    kind: str
    currency: str
    amount_minor: int
    created_at: datetime
    fee_minor: int = 0
    from_account_id: str | None = None
    to_account_id: str | None = None
    description: str | None = None
    card_last4: str | None = None
    refund_of: str | None = None
    refunded_minor: int = 0
    fee_refunded_minor: int = 0
    mandate_id: str | None = None
    idempotency_key_id: str | None = None


class PostingRow(NamedTuple):
    """A posting as written: what a journal's response shows of it."""

    journal_id: str
    account_id: str
    amount_minor: int
    balance_after_minor: int
    currency: str
    created_at: datetime


_KNOWN = _KnownAccounts()


def forget_known_accounts(engine: Engine) -> None:
    """After the sandbox's reset: accounts this process read may be gone."""
    _KNOWN.forget(engine)


class AccountsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, account_id: str) -> Account | None:
        return self.session.get(Account, account_id)

    def get_many(self, ids: list[str]) -> dict[str, AccountRef]:
        """Id, kind, currency and owner of each account that exists (plain rows): from what this
        process already read of them when it can (see `_KnownAccounts`), else from the database."""
        known = _KNOWN.of(self.session)
        found: dict[str, AccountRef] = {}
        missing = []
        for id_ in dict.fromkeys(ids):
            ref = known.get(id_)
            if ref is None:
                missing.append(id_)
            else:
                found[id_] = ref
        if missing:
            cursor = _prepared_select_accounts(len(missing)).execute(
                self.session, {f"id{i}": id_ for i, id_ in enumerate(missing)}
            )
            rows = cursor.fetchall()
            cursor.close()
            for row in rows:
                found[row[0]] = known[row[0]] = AccountRef(*row)
            _KNOWN.trim(known)
        return found

    def forget(self, ids: list[str]) -> None:
        """Drop these accounts from what the process remembers of them (see `_KnownAccounts`)."""
        known = _KNOWN.of(self.session)
        for id_ in ids:
            known.pop(id_, None)

    def exists(self, account_id: str) -> bool:
        return self.session.execute(
            select(_accounts.c.id).where(_accounts.c.id == account_id)
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
        """Apply each account's net change and record the journal with its postings, as one
        batch: one network round trip on PostgreSQL (`_batched`).

        Each change is one conditional UPDATE, refused when it would overdraw an account that
        forbids it: concurrent movements cannot both spend the same money, since the database
        serialises them on the row; the UPDATEs run in account id order, so two opposite
        transfers lock their rows in the same order and cannot deadlock. Each posting is in its
        account's currency (`currencies`, by account id).

        Returns each account's new balance, None where the change was refused, and the
        postings. The journal is written in the same batch whatever the outcome: after a refusal
        the caller must roll back (a Problem raised in a unit of work does)."""
        session = self.session
        conn = session.connection()
        net = net_by_account(legs)
        leg_currencies = [currencies.get(leg.account_id, journal.currency) for leg in legs]
        try:
            with _batched(conn) as batched:
                applied = []
                for account_id, delta in net:
                    cursor = _APPLY_PREPARED.execute(conn, {"account_id": account_id, "delta": delta})
                    # SQLite: read at once (a statement left open slows the ones after it).
                    applied.append(cursor if batched else _first_value(cursor))
                journal_row = {name: getattr(journal, name) for name in _JOURNAL_COLUMNS}
                params: dict[str, Any] = {}
                if batched:  # PostgreSQL: the journal goes in with its postings (a CTE)
                    params.update({f"j_{name}": value for name, value in journal_row.items()})
                else:
                    _INSERT_JOURNAL.execute(conn, journal_row).close()
                for i, (leg, currency) in enumerate(zip(legs, leg_currencies)):
                    params.update({
                        f"journal_id_{i}": journal.id, f"account_id_{i}": leg.account_id,
                        f"amount_minor_{i}": leg.amount_minor, f"balance_of_{i}": leg.account_id,
                        f"currency_{i}": currency, f"created_at_{i}": journal.created_at,
                    })
                _prepared_insert_postings(len(legs), batched).execute(conn, params).close()
        except IntegrityError:
            # A posting names an account that is not there: what the process remembered of it
            # no longer holds (`_KnownAccounts`). Forget, so the next request reads it again.
            AccountsRepository(session).forget([account_id for account_id, _ in net])
            raise
        balances: dict[str, int | None] = {}
        for (account_id, _), result in zip(net, applied):
            balance = balances[account_id] = _first_value(result) if batched else result
            if balance is not None and session.identity_map:
                # An Account this session already loaded (a system account) shows the new
                # balance, as an ORM update would have synchronised it.
                loaded = session.identity_map.get(session.identity_key(Account, account_id))  # type: ignore[arg-type]
                if loaded is not None:
                    set_committed_value(loaded, "balance_minor", balance)
        postings = [
            PostingRow(journal.id, leg.account_id, leg.amount_minor, balances[leg.account_id] or 0,
                       currency, journal.created_at)
            for leg, currency in zip(legs, leg_currencies)
        ]
        return balances, postings

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

    def counts(self) -> tuple[int, int]:
        journals = self.session.execute(select(func.count()).select_from(Journal)).scalar_one()
        postings = self.session.execute(select(func.count()).select_from(Posting)).scalar_one()
        return int(journals), int(postings)
