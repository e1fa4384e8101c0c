"""What falls due when time passes: a service's rules that act on their own at a moment, not on
a request (a correspondent-rail payment settling, an instalment falling due, a consent expiring).

Each is a `DueWork`: given the service's `now`, it does what is due by then, each piece in its
own unit of work, and says how many things it did. The kit runs a service's due work:

- after every move of its clock (`POST /_sandbox/clock/advance`, which the gateway's one
  sandbox clock calls on every service), and answers with what fired;
- every `due_work_interval_seconds` of real time in the background (0: never), so that
  what falls due in seconds (a ripple payment) happens without anyone moving the clock.

Due work must be safe to run twice at once and again after a crash: it selects what is due and
moves each thing with a conditional update (or under its idempotency key), so a second runner
finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("sandbox.due")


@dataclass(frozen=True)
class DueWork:
    name: str  # e.g. "cross-border-settlement": the key in the clock's answer
    run: Callable[[datetime], int | Awaitable[int]]


async def run_due_work(works: Sequence[DueWork], now: datetime) -> dict[str, int]:
    """Run each due work for `now`, in order; how many things each did (those that did some)."""
    fired: dict[str, int] = {}
    for work in works:
        if inspect.iscoroutinefunction(work.run):
            done = await work.run(now)
        else:  # in a worker thread: a unit waiting for the writer lock must not hold the loop
            done = await run_in_threadpool(work.run, now)
            if inspect.isawaitable(done):
                done = await done
        if done:
            fired[work.name] = int(done)
    return fired


async def run_due_work_forever(works: Sequence[DueWork], clock_now: Callable[[], datetime],
                               interval_s: float) -> None:
    """The background runner: due work every `interval_s` seconds until cancelled. A failure is
    logged and tried again next time (what was due stays due)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await run_due_work(works, clock_now())
        except Exception:  # noqa: BLE001 - keep the runner alive; the next round retries
            log.exception("due work failed; it stays due and is tried again")
