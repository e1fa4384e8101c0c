"""The regulator's reset: every service and the gateway back to the seeded demo state, and a new
epoch of the audit log, which is never erased.

The steps, in order:
1. The door closes: nothing more is forwarded (503 `sandbox-resetting`), and the requests
   already on their way are waited for (at most the gateway's own patience for one request).
2. Money movements whose outcome is still open (forwarded, never answered) are reconciled with
   their service. If any stays open, the reset is refused (409 `movements-unresolved`) before
   anything is reset: resetting under it would lose the only record of whether money moved.
3. Each service's `POST /_sandbox/reset` (services/common/reset.py). The first that fails stops
   the reset (502 `service-reset-failed` or 503 `service-unreachable`, naming it); the services
   reset before it stay reset, the gateway's own state does not change, and repeating the reset
   finishes the job.
4. The gateway: its clock back to real time, participants back to the seeded set (admitted ones
   removed), fault flags removed, usage, rate and customer counts, screening history and
   remembered keys emptied.
5. A `reset` entry in the hash-chained log (who, when, the new epoch's number). Reports, alerts
   and limits count from that entry on; `verify-log` still walks the whole chain.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx
from sqlmodel import Session

from sandbox.gateway import faults, repository, service
from sandbox.gateway.auditlog import ChainHead
from sandbox.gateway.models import Participant
from sandbox.gateway.proxy import Gateway, complete_entry, iso
from sandbox.gateway.schemas import SandboxReset, ServiceResetPublic
from services.common.db import Database
from services.common.ids import new_id
from services.common.problems import Problem

SERVICE_RESET_TIMEOUT_S = 60.0  # one service's rows deleted and seeded again
DRAIN_POLL_S = 0.01


async def reset_sandbox(gateway: Gateway, *, seed: bool, request_id: str) -> SandboxReset:
    """Steps 1 to 5 above; one reset at a time (a second meanwhile: 409 `reset-in-progress`)."""
    if gateway.reset_lock.locked():
        raise Problem(409, "reset-in-progress", "A reset is already running",
                      "Another reset of the sandbox is running; its answer says what was reset.",
                      headers={"Retry-After": "2"})
    async with gateway.reset_lock:
        started = time.perf_counter()
        gateway.resetting = True
        try:
            await _drain(gateway)
            reconciled = await gateway.reconcile_open() if gateway.open_intents else {}
            if gateway.open_intents:
                open_ = sorted(gateway.open_intents)
                raise Problem(409, "movements-unresolved", "Money movements are still unresolved",
                              f"{len(open_)} forwarded money movement(s) have no known outcome yet (their "
                              "service did not answer and cannot say yet); nothing was reset. Retry once "
                              "the services are up: the gateway reconciles them every few seconds.",
                              headers={"Retry-After": "5"}, intents=open_)
            done: list[str] = []
            services = [await _reset_service(gateway, label, request_id, done) for label in gateway.upstreams]
            return await _reset_gateway(gateway, seed, request_id, reconciled, services, started)
        finally:
            gateway.resetting = False


async def _drain(gateway: Gateway) -> None:
    """Wait until no request is on its way upstream (each gives up after the read timeout)."""
    deadline = time.monotonic() + gateway.timeout.connect + gateway.timeout.read + 1.0
    while gateway.forwarding and time.monotonic() < deadline:
        await asyncio.sleep(DRAIN_POLL_S)
    if gateway.forwarding:
        raise Problem(409, "requests-in-flight", "Requests are still on their way",
                      f"{gateway.forwarding} request(s) forwarded before the reset have not been answered; "
                      "nothing was reset. Retry shortly.", headers={"Retry-After": "5"})


async def _reset_service(gateway: Gateway, label: str, request_id: str, done: list[str]) -> ServiceResetPublic:
    """One service's `/_sandbox/reset`, on the gateway's own client (and its injected transports)."""
    url = f"{gateway.upstreams[label]}/_sandbox/reset"
    already = {"reset": list(done)}
    try:
        response = await gateway.client.post(url, headers={"x-request-id": request_id},
                                             timeout=SERVICE_RESET_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise Problem(503, "service-unreachable", f"The {label} service could not be reset",
                      f"The {label} service did not answer its reset ({type(exc).__name__}). "
                      f"{_so_far(done)} Start it and reset again.", headers={"Retry-After": "5"},
                      service=label, **already) from exc
    if response.status_code != 200:
        raise Problem(502, "service-reset-failed", f"The {label} service could not be reset",
                      f"The {label} service answered its reset with {response.status_code}. {_so_far(done)} "
                      "See its log, then reset again.", service=label, service_status=response.status_code,
                      **already)
    done.append(label)
    return ServiceResetPublic.model_validate(response.json())


def _so_far(done: list[str]) -> str:
    if not done:
        return "Nothing was reset."
    return f"Already reset: {', '.join(done)}; the gateway's participants, limits and log epoch were not."


async def _reset_gateway(gateway: Gateway, seed: bool, request_id: str, reconciled: dict[str, int],
                         services: list[ServiceResetPublic], started: float) -> SandboxReset:
    now = gateway.clock.reset()
    participants, removed = seeded_participants(gateway.db, seed, now)
    gateway.forget_activity(participants)
    if gateway.faults is not None:
        gateway.faults.changed()  # the fault flags went with the participants
    idx = gateway.begin_epoch(reset_entry(now, request_id, "POST", int((time.perf_counter() - started) * 1e6),
                                          f"reset: {len(services)} services and the gateway back to the seeded demo state"))
    return SandboxReset(
        epoch=gateway.epoch, audit_index=idx, reset_at=now, participants=len(participants),
        participants_removed=removed, intents_reconciled=reconciled,
        services=services, took_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def seeded_participants(db: Database, seed: bool, now: datetime) -> tuple[list[Participant], int]:
    """Participants back to the seeded set and no fault flags, in one transaction: (them, how many
    admitted ones went)."""
    def reseed(session: Session) -> tuple[set[str], list[Participant]]:
        faults.clear_faults(session)  # a fault the regulator injected is not part of the demo state
        before = {row.id for row in repository.all_participants(session)}
        repository.delete_participants(session)
        if seed:
            service.seed_demo_participants(session, now)
        session.flush()
        return before, repository.all_participants(session)

    before, participants = db.unit_of_work(reseed)
    return participants, len(before - {row.id for row in participants})


def reset_entry(now: datetime, request_id: str, method: str, latency_us: int, operation: str) -> dict[str, Any]:
    return {"at": iso(now), "request_id": request_id, "participant_id": "regulator", "method": method,
            "path": "/sandbox/reset", "status": 200, "latency_us": latency_us, "operation": operation}


def reset_gateway_offline(db: Database, seed: bool, now: datetime) -> tuple[int, int]:
    """`fintech-sandbox reset` with nothing running: the gateway's participants back to the seeded
    set and a `reset` entry appended to its log, as the running reset does (the log is kept).
    Returns (the new epoch, its entry's index)."""
    db.create_tables()  # a database from before resets gains the epoch column first
    seeded_participants(db, seed, now)
    last = repository.last_reset(db.engine)
    epoch = (last[1] if last else 0) + 1
    head = repository.audit_head(db.engine)
    chain = ChainHead(head[0] + 1, head[1]) if head else ChainHead()
    fields = complete_entry({**reset_entry(now, new_id("req"), "CLI", 0, "reset: offline, the services' "
                                           "databases deleted and seeded afresh on the next start"),
                             "phase": "reset", "epoch": epoch})
    chain.seal(fields)
    repository.append_audit(db.engine, fields, None)
    return epoch, fields["idx"]
