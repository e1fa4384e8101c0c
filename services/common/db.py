"""Database engine and sessions: a SQLite file per service by default, PostgreSQL by URL.

SQLite runs in WAL mode, and every transaction starts with BEGIN IMMEDIATE: writers queue on
the database lock (busy_timeout) instead of failing halfway, which is what a ledger needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from datetime import UTC, datetime

from sqlalchemy import DateTime, Engine, MetaData, event, text
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import registry
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine


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


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
        )
        _configure_sqlite(engine, memory)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


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

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One engine per service; sessions are units of work that the service commits explicitly."""

    def __init__(self, url: str, metadata: MetaData) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.metadata = metadata
        self.is_sqlite = url.startswith("sqlite")

    def create_tables(self) -> None:
        self.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        # expire_on_commit=False: objects stay readable after commit, for building responses.
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


async def get_database(request: Request) -> Database:
    return request.app.state.db


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work, as `Database.session` makes it.

    An async generator, though the endpoints using it are plain `def`: making a Session does
    no IO (it connects on first use, in the endpoint's thread), so it needs no thread of its
    own, and neither does closing one that its endpoint committed. A session left in a
    transaction (a read, or work that failed) is rolled back and closed in the threadpool, as
    before, since that talks to the database."""
    session = Session(request.app.state.db.engine, expire_on_commit=False)
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]
