"""What several gateway processes on one database share, and how they take turns.

A gateway's memory (usage against limits, the screening history, the idempotency keys it
forwarded, payments whose ledger hop may come back, the participants' policies, the chain head)
is a *projection of its audit log*: every one of those facts is an entry there, an `intent`
before a movement is forwarded and an `outcome` or `reconciled` after. One process built it at
start-up and kept it up to date as it appended. With replicas, each process also reads the
entries the others appended (`Gateway.catch_up`) before it decides anything, so the log is the
one source of truth and every replica's memory is the same projection of it.

Two locks make the decisions and the chain come out as if one process made them:

- **The log lock**, taken in the transaction that appends an entry (or stores events): appends
  are serialised, each one reads the entries committed before it and seals the next index on
  the true head, so the chain never forks. On PostgreSQL a transaction-level advisory lock; on
  SQLite the write lock every transaction already takes (BEGIN IMMEDIATE).
- **The decision lock**, held from a money movement's limit check to its `intent` entry: no
  other replica can check and hold the same daily volume in between, so limits are exact
  across replicas. On PostgreSQL a transaction-level advisory lock on a connection of its own,
  waited for off the event loop (the appends inside take the log lock on theirs: decision
  before log, always, so no deadlock); on SQLite nothing, because an embedded SQLite file has
  one gateway process, whose event loop runs the check and the hold with no await between.

Rate windows are not in the log (a request's entry is written when it ends, its rate taken when
it arrives), so they are a table of counters, one upsert per authenticated request
(`RateCounter`; in memory on SQLite, where one process runs).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from sqlalchemy import BigInteger, Engine, bindparam, event, select, text
from sqlalchemy.engine import Connection
from sqlmodel import Field

from sandbox.gateway.models import AuditEntry, GatewayModel
from services.common.prepared import Prepared

AUDIT = AuditEntry.__table__  # type: ignore[attr-defined]

# Advisory lock keys (any 64-bit numbers, fixed: every replica must use the same ones).
LOG_LOCK = 0x5342_5847_4C4F_4701  # "SBXGLOG"
DECISION_LOCK = 0x5342_5847_4445_4301  # "SBXGDEC"


class RateWindow(GatewayModel, table=True):
    """How many requests a participant's key sent in one fixed minute, counted by every replica."""

    __tablename__ = "rate_windows"

    participant_id: str = Field(primary_key=True, max_length=40)
    minute: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    count: int = 0


RATE = RateWindow.__table__  # type: ignore[attr-defined]


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def lock_log(conn: Connection) -> None:
    """Inside an appending transaction: wait for the other replicas' appends, until commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOG_LOCK})


class DecisionLock:
    """Held from a money movement's limit check until its intent is logged (see the module
    docstring). On PostgreSQL a transaction-level advisory lock on a connection of its own,
    waited for off the event loop, one request of this process at a time (the others queue on
    an asyncio lock, not on the database's connections); the wait is bounded by the
    connection's `lock_timeout` (`bound_waits`). Without PostgreSQL, nothing to wait for: the
    check and the hold run with no await between them, which one event loop cannot interleave."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shared = is_postgres(engine)
        self._turns: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()  # per event loop
        self._thread: ThreadPoolExecutor | None = None

    async def acquire(self) -> Connection | None:
        """The lock's connection (its transaction holds the lock), for the catch-up that
        follows; None without PostgreSQL. Raises when the wait times out."""
        if not self.shared:
            return None
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = asyncio.Lock()
        await turn.acquire()
        try:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="decision-lock")
            return await loop.run_in_executor(self._thread, self._take)
        except BaseException:
            turn.release()
            raise

    def _take(self) -> Connection:
        conn = self.engine.connect()
        try:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DECISION_LOCK})
        except BaseException:
            conn.close()
            raise
        return conn

    def release(self, conn: Connection | None) -> None:
        """Commit (which lets the lock go) and hand the turn to the next request."""
        if conn is None:
            return
        try:
            conn.commit()
        finally:
            conn.close()
            self._turns[asyncio.get_running_loop()].release()


# How long a replica waits for a lock another holds, and how long PostgreSQL lets a transaction
# sit idle: a replica stopped (SIGSTOP, a frozen node) while it holds the decision or the log
# lock loses its session after IDLE_IN_TRANSACTION_S, and its locks with it, instead of
# holding every other replica up until TCP notices.
LOCK_TIMEOUT_S = 5
IDLE_IN_TRANSACTION_S = 15


def bound_waits(engine: Engine) -> None:
    """Every connection of the gateway's PostgreSQL engine waits at most LOCK_TIMEOUT_S for a
    lock and is ended by the server after IDLE_IN_TRANSACTION_S idle in a transaction."""
    if not is_postgres(engine):
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
            cur.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S}s'")
        dbapi_conn.autocommit = autocommit

    engine.dispose()  # connections made before (the tables, the seed) are made again with them


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection whose statements commit one by one: no BEGIN and COMMIT round trips for a
    single statement (a read, an upsert, an advisory lock of the session's)."""
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


# Run in every append: on the driver's cursor (services/common/prepared.py), since SQLAlchemy's
# execution layer would cost more than the append itself, for a query that almost always finds
# nothing (no other replica wrote since).
_ENTRIES_AFTER = Prepared(select(AUDIT).where(AUDIT.c.idx > bindparam("after")).order_by(AUDIT.c.idx))


def entries_after(conn: Connection, idx: int) -> list[dict[str, Any]]:
    """The committed entries after `idx`, in order: what other replicas appended since."""
    cursor = _ENTRIES_AFTER.execute(conn, {"after": idx})
    try:
        rows = cursor.fetchall()
        if not rows:
            return []
        names = [d[0] for d in cursor.description]
    finally:
        cursor.close()
    return [dict(zip(names, row, strict=True)) for row in rows]


class RateCounter:
    """Requests per participant per fixed minute. On PostgreSQL, rows every replica counts in
    (`rate_windows`, one atomic upsert per request: two replicas never read the same count). On
    SQLite, which has one gateway process, counters in memory: the table's write per request
    would be a third write transaction per transfer on the file's one write lock, and halved the
    gateway's throughput (`fintech-sandbox bench gateway`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shared = is_postgres(engine)
        self._local: dict[str, tuple[int, int]] = {}  # participant → (window, count)
        self._lock = threading.Lock()

    def take(self, participant_id: str, window: int) -> int:
        """Count one request in the participant's window; how many it holds now (this one included)."""
        if not self.shared:
            with self._lock:
                held_window, count = self._local.get(participant_id, (window, 0))
                count = count + 1 if held_window == window else 1
                self._local[participant_id] = (window, count)
                return count
        upsert = text(
            "INSERT INTO rate_windows (participant_id, minute, count) VALUES (:p, :w, 1) "
            "ON CONFLICT (participant_id, minute) DO UPDATE SET count = rate_windows.count + 1 "
            "RETURNING count")
        with autocommit(self.engine) as conn:  # the upsert is atomic on its own
            count = conn.execute(upsert, {"p": participant_id, "w": window}).scalar_one()
            if count == 1:  # the first request of a new window: the finished ones can go
                conn.execute(RATE.delete().where(RATE.c.participant_id == participant_id, RATE.c.minute < window - 1))
        return count

    def forget(self) -> None:
        """The reset's new epoch starts every window afresh."""
        with self._lock:
            self._local = {}
        if self.shared:
            with self.engine.begin() as conn:
                conn.execute(RATE.delete())


WEBHOOKS_LEADER = 0x5342_5847_5748_4B01  # "SBXGWHK"


class Leadership:
    """One replica at a time does a job that must not run twice at once (the webhook
    dispatcher: two would send each delivery twice). On PostgreSQL the leader holds a
    session-level advisory lock on a connection of its own; when its process dies, the
    connection goes and so does the lock, and another replica takes it on its next try.
    Without PostgreSQL there is one process, always the leader."""

    def __init__(self, engine: Engine, key: int) -> None:
        self.engine = engine
        self.key = key
        self._conn: Connection | None = None

    def held(self) -> bool:
        """Whether this process leads now (trying to become leader if no one does). Blocking:
        call it from a worker thread."""
        if not is_postgres(self.engine):
            return True
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except Exception:  # noqa: BLE001 - the connection broke: the lock went with it
                self._drop()
        conn = self.engine.connect()
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
            finally:
                self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already gone
                pass
