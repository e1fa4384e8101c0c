"""The payments fast path: the statements every money movement runs, fenced in one module.

Read `repository.py` first: it holds every other query, written as the SQLModel tutorial writes
them. What is here does the same thing as three plain queries would,

    accounts = session.execute(select(Account).where(Account.id.in_(ids))).scalars()
    session.execute(update(Account).where(Account.id == id_, enough_money).values(...))
    session.add(journal); session.add_all(postings)

but each shortcut below was measured to pay for itself (`fintech-sandbox bench payments`; the
steps, with their figures, are in docs/payments.md "What changed, and why"):

- statements built once, with bind parameters, run on the driver's cursor (`Prepared`): no
  statement rebuilt, cached or re-keyed per request, no ORM unit of work;
- on PostgreSQL, one psycopg pipeline per movement (`batched`): the balance updates, the
  journal and its postings in one network round trip, the journal riding as a CTE;
- what the process has read of each account (`_KnownAccounts`): a movement between accounts it
  has seen before skips the look-up;
- a new journal as a plain record (`NewJournal`), not a SQLModel object.

Same SQL semantics, same transaction: the caller's unit of work commits or rolls all of it back.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from services.common.prepared import Prepared, as_sqlalchemy_error
from services.payments.ledger import Leg, net_by_account
from services.payments.models import Account, Events, Journal, Posting

_accounts = Account.__table__  # type: ignore[attr-defined]
_journals = Journal.__table__  # type: ignore[attr-defined]
_postings = Posting.__table__  # type: ignore[attr-defined]


# --- the records a movement passes around ----------------------------------------------------


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


class NewEvent(NamedTuple):
    """A domain event about to be written to the outbox (see `events.py`): its `data` is the
    resource's JSON text, the same text the answer carries."""

    id: str
    type: str
    participant_id: str | None
    subject_id: str
    occurred_at: datetime
    data: str


class PostingRow(NamedTuple):
    """A posting as written: what a journal's response shows of it."""

    journal_id: str
    account_id: str
    amount_minor: int
    balance_after_minor: int
    currency: str
    created_at: datetime


# --- the statements, built once ----------------------------------------------------------------


@lru_cache(maxsize=16)
def _select_accounts(count: int) -> Prepared:
    """The accounts with `count` given ids: one statement per count, with a bind parameter
    per id (an "expanding" IN would be re-rendered on every execution)."""
    ids = [bindparam(f"id{i}") for i in range(count)]
    statement: Select = select(
        _accounts.c.id, _accounts.c.kind, _accounts.c.currency, _accounts.c.participant_id,
    ).where(_accounts.c.id.in_(ids))
    return Prepared(statement)


# The overdraft check and the write are one statement (see `post_journal`).
_APPLY_PREPARED = Prepared(
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


@lru_cache(maxsize=16)
def _insert_postings(count: int, with_journal: bool = False) -> Prepared:
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


_EVENT_COLUMNS = [c.name for c in Events.columns if c.name not in ("seq", "published_at")]


@lru_cache(maxsize=4)
def _insert_events(count: int) -> Prepared:
    """`count` outbox rows as one multi-row INSERT (a movement writes one or two)."""
    rows = [{name: bindparam(f"{name}_{i}", type_=Events.c[name].type) for name in _EVENT_COLUMNS}
            for i in range(count)]
    return Prepared(insert(Events).values(rows))


def insert_events(session: Session, events: list[NewEvent]) -> None:
    """Write a movement's events in its transaction: one prepared statement, as cheap as the
    journal's own insert (no ORM, no statement rebuilt per request)."""
    params = {f"{name}_{i}": value for i, event in enumerate(events)
              for name, value in zip(NewEvent._fields, event)}
    _insert_events(len(events)).execute(session, params).close()


@contextmanager
def batched(conn: Connection) -> Iterator[bool]:
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


# --- the account cache -------------------------------------------------------------------------


class _KnownAccounts:
    """What this process has read of accounts' kind, currency and owner, per database.

    None of them changes once an account is opened (no endpoint or rule updates them; only the
    balance moves, and accounts are never deleted), so a movement between accounts already
    read skips the look-up: on PostgreSQL, a network round trip fewer per movement. Only what
    `accounts_by_id` read from the database is remembered (no movement creates the accounts it
    looks up there). Should an entry ever be wrong, the movement's postings fail their foreign
    key (a 500, rolled back) and the entry is forgotten. The sandbox's reset deletes every
    account: it forgets them all (`forget_known_accounts`). At most LIMIT accounts per
    database; past that the oldest half is dropped."""

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


_KNOWN = _KnownAccounts()


def forget_known_accounts(engine: Engine) -> None:
    """After the sandbox's reset: accounts this process read may be gone."""
    _KNOWN.forget(engine)


def forget_accounts(session: Session, ids: list[str]) -> None:
    """Drop these accounts from what the process remembers of them (see `_KnownAccounts`)."""
    known = _KNOWN.of(session)
    for id_ in ids:
        known.pop(id_, None)


def accounts_by_id(session: Session, ids: list[str]) -> dict[str, AccountRef]:
    """Id, kind, currency and owner of each account that exists (plain rows): from what this
    process already read of them when it can (see `_KnownAccounts`), else from the database."""
    known = _KNOWN.of(session)
    found: dict[str, AccountRef] = {}
    missing = []
    for id_ in dict.fromkeys(ids):
        ref = known.get(id_)
        if ref is None:
            missing.append(id_)
        else:
            found[id_] = ref
    if missing:
        cursor = _select_accounts(len(missing)).execute(
            session, {f"id{i}": id_ for i, id_ in enumerate(missing)}
        )
        rows = cursor.fetchall()
        cursor.close()
        for row in rows:
            found[row[0]] = known[row[0]] = AccountRef(*row)
        _KNOWN.trim(known)
    return found


# --- the journal insert ------------------------------------------------------------------------


def post_journal(session: Session, journal: Journal | NewJournal, legs: list[Leg],
                 currencies: dict[str, str]) -> tuple[dict[str, int | None], list[PostingRow]]:
    """Apply each account's net change and record the journal with its postings, as one
    batch: one network round trip on PostgreSQL (`batched`).

    Each change is one conditional UPDATE, refused when it would overdraw an account that
    forbids it: concurrent movements cannot both spend the same money, since the database
    serialises them on the row; the UPDATEs run in account id order, so two opposite
    transfers lock their rows in the same order and cannot deadlock. Each posting is in its
    account's currency (`currencies`, by account id).

    Returns each account's new balance, None where the change was refused, and the
    postings. The journal is written in the same batch whatever the outcome: after a refusal
    the caller must roll back (a Problem raised in a unit of work does)."""
    conn = session.connection()
    net = net_by_account(legs)
    leg_currencies = [currencies.get(leg.account_id, journal.currency) for leg in legs]
    try:
        with batched(conn) as is_batched:
            applied = []
            for account_id, delta in net:
                cursor = _APPLY_PREPARED.execute(conn, {"account_id": account_id, "delta": delta})
                # SQLite: read at once (a statement left open slows the ones after it).
                applied.append(cursor if is_batched else _first_value(cursor))
            journal_row = {name: getattr(journal, name) for name in _JOURNAL_COLUMNS}
            params: dict[str, Any] = {}
            if is_batched:  # PostgreSQL: the journal goes in with its postings (a CTE)
                params.update({f"j_{name}": value for name, value in journal_row.items()})
            else:
                _INSERT_JOURNAL.execute(conn, journal_row).close()
            for i, (leg, currency) in enumerate(zip(legs, leg_currencies)):
                params.update({
                    f"journal_id_{i}": journal.id, f"account_id_{i}": leg.account_id,
                    f"amount_minor_{i}": leg.amount_minor, f"balance_of_{i}": leg.account_id,
                    f"currency_{i}": currency, f"created_at_{i}": journal.created_at,
                })
            _insert_postings(len(legs), is_batched).execute(conn, params).close()
    except IntegrityError:
        # A posting names an account that is not there: what the process remembered of it
        # no longer holds (`_KnownAccounts`). Forget, so the next request reads it again.
        forget_accounts(session, [account_id for account_id, _ in net])
        raise
    balances: dict[str, int | None] = {}
    for (account_id, _), result in zip(net, applied):
        balance = balances[account_id] = _first_value(result) if is_batched else result
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
