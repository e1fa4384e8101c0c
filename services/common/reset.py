"""`POST /_sandbox/reset`: a service back to its seeded demo state, its data folder untouched.

Every row of the service's own tables goes (its idempotency keys and their claims included), in
one transaction, children before parents; its clock goes back to where it started (real time,
or the advisor's market epoch); what the service keeps in memory about those rows is forgotten;
then the service seeds itself as on a first start. Under the gateway, `/_sandbox/*` is forwarded
only with the regulator's key, and the regulator's `POST /sandbox/reset` calls this on every
service; on the service's own port it is open, like every route, unless `allow_reset` is off.

A request already running when the reset begins either committed before it (and is deleted
with the rest) or finds its rows, or its idempotency claim, gone: its own transaction then
fails or is rolled back, so nothing it did survives half-way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from services.common.clock import Clock
from services.common.db import Database
from services.common.problems import Problem, problem_responses


@dataclass
class ResetHooks:
    """What a service adds to the kit's reset: `forget` clears what it keeps in memory about its
    rows (run after the rows are gone), `reseed` seeds the demo world again (after the clock is
    back), as its `create_app` does on a first start."""

    reseed: Callable[[], None] | None = None
    forget: Sequence[Callable[[], None]] = field(default_factory=tuple)


class ResetReport(BaseModel):
    """What one service's reset removed and put back, table by table."""

    service: str
    deleted: dict[str, int] = Field(description="Rows removed, per table (tables that were empty are left out).")
    seeded: dict[str, int] = Field(description="Rows the demo seeding put back, per table.")
    clock: datetime = Field(description="The service's time after the reset.")
    took_ms: float = Field(description="How long the reset took, in milliseconds.")


def _row_counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in db.metadata.sorted_tables}
    return {name: n for name, n in counts.items() if n}


def delete_all_rows(db: Database) -> dict[str, int]:
    """Empty every table of the service's metadata in one transaction, children first (DELETE,
    not TRUNCATE: the same statement on SQLite and PostgreSQL, and it takes SQLite's writer lock
    as any unit of work does). Rows removed per non-empty table."""
    deleted: dict[str, int] = {}
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            n = conn.execute(table.delete()).rowcount
            if n:
                deleted[table.name] = n
    return deleted


def reset_service(name: str, db: Database, clock: Clock, hooks: ResetHooks, lock: threading.Lock) -> ResetReport:
    """Rows gone, caches forgotten, clock back, demo data seeded again: one reset at a time."""
    started = time.perf_counter()
    with lock:
        deleted = delete_all_rows(db)
        for forget in hooks.forget:
            forget()
        now = clock.reset()
        if hooks.reseed is not None:
            hooks.reseed()
        seeded = _row_counts(db)
    return ResetReport(service=name, deleted=deleted, seeded=seeded, clock=now,
                       took_ms=round((time.perf_counter() - started) * 1000, 1))


def install_reset(app: FastAPI, hooks: ResetHooks | None) -> None:
    """The reset route and what it needs on `app.state` (the service's hooks, one lock)."""
    app.state.reset_hooks = hooks or ResetHooks()
    app.state.reset_lock = threading.Lock()
    app.include_router(reset_router())


def reset_router() -> APIRouter:
    router = APIRouter(prefix="/_sandbox", tags=["sandbox"])

    @router.post("/reset", operation_id="reset_service", response_model=ResetReport,
                 responses=problem_responses(403))
    def reset(request: Request) -> ResetReport:
        """Back to the seeded demo state: every row gone, the clock back, demo data seeded again.

        Removes everything learners made (accounts, movements, consents, loans, investor
        accounts, market shocks, idempotency keys), forgets what the service cached about it,
        puts the service's clock back (real time; the advisor's market epoch, day 0) and seeds
        the demo world as on a first start. Answers with the rows removed and seeded, per table.
        The data folder and the database stay. Through the gateway only the regulator's key
        reaches it (its `POST /sandbox/reset` resets every service at once)."""
        state = request.app.state
        if not state.settings.allow_reset:
            raise Problem(403, "reset-disabled", "Reset is disabled on this service",
                          "This service was started with allow_reset off.")
        return reset_service(state.service_name, state.db, state.clock, state.reset_hooks, state.reset_lock)

    return router
