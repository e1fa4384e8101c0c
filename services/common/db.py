"""Database engine and sessions: a SQLite file per service by default, PostgreSQL by URL.

**One transaction shape.** A request's unit of work commits once, here in the kit, never in a
service function:

- `SessionDep` (a plain `def` endpoint's session) commits when the endpoint returns without an
  error, after its response is serialised and *before* the response is sent; an endpoint that
  raises (a `Problem` included) has its work rolled back. A commit that fails is the request's
  error: the client gets the 500 problem+json, never a success whose writes were lost.
- `Database.run(work)` commits after `work(session)` returns, and rolls back if it raises;
  `Database.unit_of_work(work)` does the same at once, for start-up code outside any request
  (the demo world's seed).
- `Idempotency.run` (services/common/idempotency.py) commits the key's claim first, then the
  work together with the saved response, as its crash-safety needs.

Where a unit of work must make something durable *before* it ends, it says so with
`record_first(session, why)`: the intent before money moves (a remote call follows), or the
record of a refusal that must outlive the error the request then raises. `grep -rn record_first`
finds every early commit; `grep -rn "commit()" services/` finds only the kit.

SQLite runs in WAL mode, and every transaction starts with BEGIN IMMEDIATE: writers queue on
the database lock instead of failing halfway, which is what a ledger needs. Within a process
they queue on a lock of ours, taken just before BEGIN IMMEDIATE (see `_WriterQueue`); other
processes meet SQLite's own lock and wait in its busy handler (busy_timeout).
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from sqlalchemy import DateTime, Engine, MetaData, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import registry
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, create_engine
from starlette.concurrency import run_in_threadpool

from services.common.upgrade import add_missing_columns

T = TypeVar("T")

class UTCDateTime(TypeDecorator):
    """Timestamps go in as UTC and come out timezone-aware on every backend (SQLite drops
    the offset; PostgreSQL keeps it), so APIs always print `...Z`/`+00:00`."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use the service clock, which is UTC-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def model_base(name: str) -> type[SQLModel]:
    """A SQLModel base with its own metadata, so each service's tables stay in its own database."""
    return type(name, (SQLModel,), {}, registry=registry())


def database_url(explicit: str | None, data_dir: Path, service: str) -> str:
    if explicit:
        url = explicit
        # Accept the plain libpq form and pick the psycopg 3 driver for it.
        for plain in ("postgres://", "postgresql://"):
            if url.startswith(plain):
                url = "postgresql+psycopg://" + url[len(plain) :]
        return url
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / f'{service}.sqlite3').resolve()}"


LOCK_TIMEOUT_S = 30.0  # how long a SQLite writer waits for the database (as busy_timeout)
PING_AFTER_IDLE_S = 2.0  # a PostgreSQL connection idle longer than this is pinged before use
# Request sessions open at once in one process; more requests wait for a turn on the event loop.
# Each open session can block a worker thread (on SQLite's writer lock, or on the pool), and
# its request still needs threads to validate its response and to close it: keeping this well
# under the threadpool's 40 threads (and within the pool's 15 connections) means a burst of
# requests queues instead of tying up every thread while the lock's holder waits for one.
REQUEST_SESSIONS = 10
# Threads running units of work on PostgreSQL (`Database.run`), each on its own connection. A
# unit spends most of its time waiting for PostgreSQL's answer (its statements go in one batch),
# so two keep the database busy while the event loop parses the next requests; more only fight
# the loop for the GIL. Measured with `fintech-sandbox bench payments` on 2 cores, when this was
# chosen (before the leaner request path): 2 threads about 780 transfers/s at 1.2 ms of CPU
# each, 10 threads about 700/s at 1.4 ms; 3 or 4 no better since. Units beyond these wait in
# the pool's queue. Reads do not use these threads (`Database.read`).
POSTGRES_UNIT_THREADS = 2


def is_memory_sqlite(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        memory = is_memory_sqlite(url)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": LOCK_TIMEOUT_S},
            poolclass=StaticPool if memory else None,
        )
        _configure_sqlite(engine, memory)
        return engine
    # LIFO: under load the same few connections stay hot; the rest age out of use.
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_use_lifo=True)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Pre-ping, but only a connection that sat idle in the pool: a connection checked in a
    moment ago (the usual case under load) is used as it is, saving a round trip per request.

    A connection that has been idle longer than PING_AFTER_IDLE_S is pinged as `pool_pre_ping`
    does, and replaced when the ping fails. A server restarted within that window can still
    fail one request on a dead connection; SQLAlchemy then discards the whole pool, so the
    next request reconnects."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the dialect raises on a dead connection
            raise DisconnectionError("connection failed its ping after idling") from exc
        if not alive:
            raise DisconnectionError("connection failed its ping after idling")


class _WriterQueue:
    """One SQLite write transaction at a time in this process, queued on a lock.

    Every transaction begins with BEGIN IMMEDIATE, so SQLite already lets only one run at a
    time; a writer that finds the database locked waits in SQLite's busy handler, which sleeps
    and retries with growing naps (up to 100 ms): with a few concurrent requests the waits
    dominate the tail latency. Taking this lock just before BEGIN IMMEDIATE and releasing it
    just after COMMIT or ROLLBACK makes the process's writers wait their turn on the lock
    instead, woken as soon as the previous transaction ends. Nothing else changes: the same
    transactions run, one at a time, as before; other processes still meet SQLite's own lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: Any = None  # the DBAPI connection whose transaction holds the lock

    def acquire(self, dbapi_conn: Any) -> None:
        if self._holder is dbapi_conn:
            return
        if not self._lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise sqlite3.OperationalError("database is locked")
        self._holder = dbapi_conn

    def release(self, dbapi_conn: Any) -> None:
        if self._holder is dbapi_conn and dbapi_conn is not None:
            self._holder = None
            self._lock.release()


def _raw(connection: Any) -> Any:
    """The sqlite3 connection behind a pool's proxy (or the connection itself)."""
    return getattr(connection, "dbapi_connection", connection)


def _configure_sqlite(engine: Engine, memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not pysqlite, decide when transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    if memory:

        @event.listens_for(engine, "begin")
        def _on_begin_memory(conn: Any) -> None:
            _raw(conn.connection).execute("BEGIN IMMEDIATE")

        return

    writers = _WriterQueue()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        dbapi_conn = _raw(conn.connection)
        writers.acquire(dbapi_conn)
        try:
            # On the driver's connection: SQLAlchemy's execution layer would cost more than
            # the statement (as for the hot paths' statements, services/common/prepared.py).
            dbapi_conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            writers.release(dbapi_conn)
            raise

    # Released once the transaction has really ended: after the dialect's COMMIT or ROLLBACK
    # (a pool's reset-on-return rollback included), or when the connection is discarded.
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            if not _raw(dbapi_connection).in_transaction:
                writers.release(_raw(dbapi_connection))

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            if not _raw(dbapi_connection).in_transaction:
                writers.release(_raw(dbapi_connection))

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, _record: Any) -> None:
        writers.release(dbapi_conn)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(dbapi_conn: Any, _record: Any, _exc: Any) -> None:
        writers.release(dbapi_conn)

    @event.listens_for(engine, "close")
    def _on_close(dbapi_conn: Any, _record: Any) -> None:
        writers.release(dbapi_conn)


def make_reader_engine(url: str) -> Engine:
    """A read-only engine on the same SQLite file. Its transactions are plain (deferred) ones:
    in WAL mode each reads one snapshot and never takes the writer's lock, so reads never wait
    for writes, nor writes for reads."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": LOCK_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions begin where SQLAlchemy begins them
        dbapi_conn.execute("PRAGMA query_only=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        _raw(conn.connection).execute("BEGIN")  # one snapshot for the whole read

    return engine


class Database:
    """One engine per service; sessions are units of work that the service commits explicitly."""

    def __init__(self, url: str, metadata: MetaData) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.metadata = metadata
        self.is_sqlite = url.startswith("sqlite")
        # One turnstile per event loop (a test may drive one app from several loops in turn).
        self._turnstiles: weakref.WeakKeyDictionary[Any, anyio.Semaphore] = weakref.WeakKeyDictionary()
        self._units: ThreadPoolExecutor | None = None  # PostgreSQL's unit-of-work threads (`run`)
        self._units_lock = threading.Lock()
        self._reader: Engine | None = None

    def turnstile(self) -> anyio.Semaphore:
        """Admits REQUEST_SESSIONS request sessions at a time on the running event loop."""
        loop = asyncio.get_running_loop()
        gate = self._turnstiles.get(loop)
        if gate is None:
            gate = self._turnstiles[loop] = anyio.Semaphore(REQUEST_SESSIONS)
        return gate

    def create_tables(self) -> None:
        self.metadata.create_all(self.engine)
        add_missing_columns(self.engine, self.metadata)  # a database made before a column was added

    @contextmanager
    def session(self, bind: Engine | None = None) -> Iterator[Session]:
        """A session on the service's engine (or `bind`), rolled back if the block raises."""
        # expire_on_commit=False: objects stay readable after commit, for building responses.
        with Session(bind or self.engine, expire_on_commit=False) as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run one unit of work, `work(session)`, with a session of its own, and return its
        result; the session commits once `work` returns (rolled back if it raises), and closes.

        **SQLite: on the event loop.** Every transaction takes SQLite's single write lock
        (BEGIN IMMEDIATE), so units of work run one at a time whichever thread runs them. Giving
        each a worker thread only adds a hand-off to the thread and back and two threads
        fighting over the GIL: about 0.4 ms of CPU per request, more than the unit itself
        (`fintech-sandbox bench payments`). On the loop they run in the same one-at-a-time
        order, without the threads. A unit is a few short statements on a local file with no
        network call. While another process holds SQLite's write lock, the unit waits for it
        (busy_timeout, up to 30 s) and the whole worker with it, health checks included: with a
        thread per request the database requests would all have waited on that lock too.
        Only writing units come here; reads go to `read`, off the loop.

        **PostgreSQL: on the database's own POSTGRES_UNIT_THREADS threads.** Units do run
        concurrently there (row locks, not a database lock) and each waits on the network, so
        they must not hold the loop; more units wait in the pool's queue, which also bounds the
        connections in use."""
        if self.is_sqlite:
            return self.unit_of_work(work)
        loop = asyncio.get_running_loop()
        # The worker runs in a copy of this context, so logs carry the request id.
        return await loop.run_in_executor(self._unit_threads(), contextvars.copy_context().run, self.unit_of_work, work)

    def unit_of_work(self, work: Callable[[Session], T]) -> T:
        """`work` as one unit of work, here and now: committed once it returns, rolled back if it
        raises. `run` calls it from a request; start-up code outside any request (a service
        seeding its demo world) calls it directly."""
        with self.session() as session:
            result = work(session)
            if session.in_transaction():  # nothing left to commit when `work` committed its own
                session.commit()
            return result

    def _read(self, work: Callable[[Session], T], bind: Engine | None = None) -> T:
        with self.session(bind) as session:
            return work(session)  # closing the session ends its (read) transaction

    @property
    def reader(self) -> Engine:
        """The engine reads go through: on a SQLite file, a read-only one of its own
        (`make_reader_engine`); otherwise the service's engine."""
        if not self.is_sqlite or is_memory_sqlite(self.url):
            return self.engine
        with self._units_lock:
            if self._reader is None:
                self._reader = make_reader_engine(self.url)
            return self._reader

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` that only reads, in a worker thread of FastAPI's pool: a long
        read (the invariants over a big ledger, a long statement) never holds the event loop
        nor the threads that move money. On a SQLite file it reads a snapshot on the reader
        engine, without the writer's lock. (An in-memory database has one connection: there
        the read runs as `run` does.)"""
        if is_memory_sqlite(self.url):
            return self._read(work)
        return await run_in_threadpool(self._read, work, self.reader)

    def _unit_threads(self) -> ThreadPoolExecutor:
        with self._units_lock:
            if self._units is None:
                self._units = ThreadPoolExecutor(POSTGRES_UNIT_THREADS, thread_name_prefix="unit-of-work")
            return self._units

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        with self._units_lock:
            units, self._units = self._units, None
        if units is not None:
            units.shutdown(wait=True)  # units already running finish (and commit or roll back)
        if self._reader is not None:
            self._reader.dispose()
        self.engine.dispose()


async def get_database(request: Request) -> Database:
    return request.app.state.db


def record_first(session: Session, why: str) -> None:
    """Commit now, before the unit of work ends: the one deliberate early commit, named so a
    reader sees the transaction boundary. `why` says which of the two reasons it is, in the
    caller's words: the intent is made durable before money moves (a remote call follows, and
    its retry key comes from the row just written), or a refusal's record must outlive the
    error the request raises next (the kit rolls back a request that raises). Whatever the
    unit writes afterwards commits at its end, as usual."""
    assert why, "say why this commit cannot wait for the end of the unit of work"
    session.commit()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work, as `Database.session` makes it: committed once, when the
    endpoint returns without an error (its response already serialised, not yet sent), and
    rolled back when it raises. Used with `scope="function"` (`SessionDep`): FastAPI ends the
    dependency before it sends the response, so a commit that fails is the request's 500
    problem+json, and no client ever sees a success the database did not keep.

    An async generator, though the endpoints using it are plain `def`: making a Session does
    no IO (it connects on first use, in the endpoint's thread), so it needs no thread of its
    own, and neither does closing one with no transaction left. A commit, or the rollback of a
    read or of work that failed, talks to the database and runs in the threadpool. Sessions are
    admitted through the database's turnstile (REQUEST_SESSIONS at a time), so a burst of
    requests cannot take every worker thread while the one holding SQLite's writer lock waits
    for a thread to finish."""
    db: Database = request.app.state.db
    async with db.turnstile():
        session = Session(db.engine, expire_on_commit=False)
        try:
            yield session
            if session.in_transaction():
                await run_in_threadpool(session.commit)
        finally:
            if session.in_transaction():
                await run_in_threadpool(session.close)
            else:
                session.close()


DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
