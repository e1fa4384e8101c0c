"""Fault flags the regulator sets: added latency, an error rate, a service unavailable, an answer
lost (timeout), per service and, optionally, operation and participant (docs/faults.md).

An injected fault takes the path a real one takes. The gateway's forwarding asks `FaultFlags`
for the transport to send a request on (the one hook in `Gateway._forward`); when a fault
applies, the transport it gets back behaves as a broken service would: it refuses to connect
(`httpx.ConnectError`: 503 upstream-unavailable, nothing forwarded, the hold given back), or it
forwards the request and loses the answer after the service applied it (`httpx.ReadTimeout`:
504, the intent left open and reconciled from the service's record of its idempotency key), or
it answers a 5xx problem itself without forwarding (a refusal: the hold given back). So the
audit log, the usage holds and idempotency are those of a real outage.

The parts, in order: the pure rules (which fault applies to a request, the deterministic error
draw), the OpenFeature provider that evaluates them, the faulty transport, and the store: the
flags live in the gateway's database (`fault_flags`), so every gateway replica on one database
applies the same ones, re-read at most every `refresh_s` (and at once on the replica that
changed them).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from openfeature import api as openfeature
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.provider.no_op_provider import NoOpProvider
from sqlalchemy import delete, select, update
from sqlmodel import Session

from sandbox.gateway.limits import AllowedOperation
from sandbox.gateway.models import FaultFlag
from services.common.db import Database
from services.common.ids import new_id
from services.common.problems import PROBLEM_MEDIA_TYPE, problem_body

log = logging.getLogger("sandbox.gateway.faults")

KINDS = ("latency", "error", "unavailable", "timeout")
FLAG_KEY = "gateway.fault"  # the one OpenFeature flag: its value is the fault for the request, or {}
REFRESH_S = 0.5  # how stale a replica's copy of the flags may be


# -- the rules: which fault applies, and whether an error is drawn ----------------------------

@dataclass(frozen=True)
class Fault:
    """One fault flag, as the rules read it."""

    id: str
    service: str
    kind: str
    operation: AllowedOperation | None = None  # None: every operation of the service
    participant_id: str | None = None  # None: every participant
    latency_ms: int = 0  # added before the request is forwarded (or refused)
    error_rate: float | None = None  # kind "error": the share of matching requests answered 5xx
    error_status: int = 500
    remaining: int | None = None  # requests it still applies to (None: until it expires)
    expires_at: datetime | None = None  # wall clock

    def targets(self, service: str, method: str, path: str, participant_id: str, now: datetime) -> bool:
        """Whether the fault is live and names this request's service, operation and participant."""
        if self.service != service or (self.expires_at is not None and self.expires_at <= now):
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.participant_id is not None and self.participant_id != participant_id:
            return False
        op = self.operation
        return op is None or (op.method == method and op.pattern.match(path) is not None)

    @property
    def specificity(self) -> tuple[int, int]:
        return (self.participant_id is not None, self.operation is not None)


def applicable(faults: Sequence[Fault], service: str, method: str, path: str, participant_id: str,
               now: datetime) -> Fault | None:
    """The one fault that applies to a request: of those that target it, the most specific (one
    participant's over everyone's, one operation's over the whole service's), then the first id."""
    found = [f for f in faults if f.targets(service, method, path, participant_id, now)]
    if not found:
        return None
    return min(found, key=lambda f: (tuple(-s for s in f.specificity), f.id))


def draws_error(fault_id: str, request_id: str, rate: float) -> bool:
    """Whether an error-rate fault answers this request with its error: SHA-256 of the fault id
    and the request's X-Request-ID, read as a fraction in [0, 1), is below the rate. The same
    request id always draws the same (a learner can replay it, a test can name the ids it
    sends), every replica draws alike, and over many requests the share is the rate."""
    digest = hashlib.sha256(f"{fault_id}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def describe(fault: Fault) -> str:
    """One line for the audit log: what the fault does, to what, for how long."""
    target = f"{fault.service} {fault.operation.method} {fault.operation.path}" if fault.operation else \
        f"every {fault.service} operation"
    what = {"latency": f"+{fault.latency_ms} ms", "unavailable": "unavailable", "timeout": "answer lost (timeout)",
            "error": f"{fault.error_status} for {fault.error_rate:.0%}" if fault.error_rate is not None else "error"}
    line = f"{what[fault.kind]} on {target}"
    if fault.kind != "latency" and fault.latency_ms:
        line += f" after {fault.latency_ms} ms"
    if fault.participant_id:
        line += f" for {fault.participant_id}"
    if fault.remaining is not None:
        line += ", the next request" if fault.remaining == 1 else f", the next {fault.remaining} requests"
    return line


# -- OpenFeature: the flag `gateway.fault`, evaluated per request -------------------------------

class FaultFlagProvider(AbstractProvider):
    """An OpenFeature provider over the gateway's fault flags. The object flag `gateway.fault`
    resolves, for an evaluation context naming a request (targeting key: its X-Request-ID;
    attributes: service, method, path, participant_id), to the fault that applies as a dict, or
    to the default when none does. An error-rate fault resolves as a split, the way flagd's
    `fractional` hashes the targeting key; its miss is the default with reason SPLIT."""

    def __init__(self, faults: Callable[[], Sequence[Fault]], now: Callable[[], datetime]) -> None:
        super().__init__()
        self._faults = faults
        self._now = now

    def get_metadata(self) -> Metadata:
        return Metadata(name="sandbox-gateway-fault-flags")

    def resolve_object_details(self, flag_key: str, default_value: Any,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[Any]:
        if flag_key != FLAG_KEY:
            return FlagResolutionDetails(default_value, reason=Reason.ERROR, error_code=ErrorCode.FLAG_NOT_FOUND)
        context = evaluation_context or EvaluationContext()
        attrs = context.attributes
        fault = applicable(self._faults(), str(attrs.get("service")), str(attrs.get("method")), str(attrs.get("path")),
                           str(attrs.get("participant_id")), self._now())
        if fault is None:
            return FlagResolutionDetails(default_value, reason=Reason.DEFAULT)
        metadata = {"fault_id": fault.id}
        if fault.kind == "error":
            if not draws_error(fault.id, context.targeting_key or "", fault.error_rate or 0.0):
                return FlagResolutionDetails(default_value, variant="pass", reason=Reason.SPLIT, flag_metadata=metadata)
            reason = Reason.SPLIT
        else:
            reason = Reason.TARGETING_MATCH
        value = {"id": fault.id, "kind": fault.kind, "latency_ms": fault.latency_ms, "error_status": fault.error_status,
                 "counted": fault.remaining is not None}
        return FlagResolutionDetails(value, variant=fault.kind, reason=reason, flag_metadata=metadata)

    # The fault flags are one object flag; any other type is not theirs.
    def _not_found(self, default_value: Any) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(default_value, reason=Reason.ERROR, error_code=ErrorCode.FLAG_NOT_FOUND)

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        return self._not_found(default_value)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        return self._not_found(default_value)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return self._not_found(default_value)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return self._not_found(default_value)


# A provider left in a closed gateway's OpenFeature domain: one instance for all of them, so
# retiring a domain starts no initialisation of its own.
_RETIRED = NoOpProvider()


# -- the faulty transport: a broken service, as the forwarding meets one ------------------------

class FaultyTransport(httpx.AsyncBaseTransport):
    """The service's transport with one fault applied to the one request sent on it."""

    def __init__(self, inner: httpx.AsyncBaseTransport, fault: dict[str, Any], service: str,
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self.inner, self.fault, self.service, self.sleep = inner, fault, service, sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault, named = self.fault, f"fault flag {self.fault['id']!r}"
        if fault["latency_ms"]:
            await self.sleep(fault["latency_ms"] / 1000)
        kind = fault["kind"]
        if kind == "unavailable":  # as a refused connection: nothing left the gateway
            raise httpx.ConnectError(f"{named}: {self.service} made unavailable", request=request)
        if kind == "error":  # as the service's own 5xx: nothing forwarded, so nothing moved
            return injected_error(fault["error_status"], fault["id"], self.service, request.url.path)
        response = await self.inner.handle_async_request(request)
        if kind == "timeout":  # the service applied it; its answer is read and dropped, as if lost
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise httpx.ReadTimeout(f"{named}: the {self.service} service's answer ({response.status_code}) withheld",
                                    request=request)
        return response


def injected_error(status: int, fault_id: str, service: str, path: str) -> httpx.Response:
    """The 5xx an error-rate fault answers with, as a problem the service might send."""
    body = json.dumps(problem_body(
        status, "injected-error", "Injected service error",
        f"The regulator's fault flag {fault_id!r} answered this request with {status} instead of forwarding it "
        f"to the {service} service: nothing was forwarded, nothing moved. Retry it.",
        instance=path, fault_id=fault_id)).encode()
    return httpx.Response(status, headers={"content-type": PROBLEM_MEDIA_TYPE, "content-length": str(len(body))},
                          stream=httpx.ByteStream(body))


# -- the store: the flags in the gateway's database, and the hook the forwarding calls ---------

def fault_of(row: FaultFlag) -> Fault:
    operation = AllowedOperation.parse(f"{row.service} {row.method} {row.path}") if row.method and row.path else None
    return Fault(id=row.id, service=row.service, kind=row.kind, operation=operation,
                 participant_id=row.participant_id, latency_ms=row.latency_ms, error_rate=row.error_rate,
                 error_status=row.error_status or 500, remaining=row.remaining, expires_at=row.expires_at)


def wall_clock() -> datetime:
    return datetime.now(UTC)


class FaultFlags:
    """The gateway's fault flags: a copy of the `fault_flags` table re-read at most every
    `refresh_s`, evaluated through OpenFeature for each forwarded participant request."""

    def __init__(self, db: Database, *, refresh_s: float = REFRESH_S,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 now: Callable[[], datetime] = wall_clock) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self.sleep = sleep  # injectable: tests see the latency asked for without waiting it out
        self.now = now  # expiries are wall-clock: every replica agrees on them
        self._faults: tuple[Fault, ...] = ()
        self._read_at = float("-inf")
        # One OpenFeature domain per gateway (tests build many in one process), its provider
        # registered when a flag is first evaluated and retired when the app stops.
        self.domain = f"sandbox-gateway-{new_id('flt')}"
        self._client: OpenFeatureClient | None = None

    @property
    def client(self) -> OpenFeatureClient:
        if self._client is None:
            provider = FaultFlagProvider(self.snapshot, lambda: self.now())
            openfeature.set_provider_and_wait(provider, domain=self.domain)
            self._client = openfeature.get_client(domain=self.domain)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client = None
            openfeature.set_provider_and_wait(_RETIRED, domain=self.domain)

    # The hook: `Gateway._forward` sends each request on the transport this returns.
    def transport(self, call: Any, inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        """`inner`, or a transport that applies the fault the request meets. Never raises: a
        store that cannot be read injects nothing (faults fail open; the request is real)."""
        if not self.snapshot() or call.policy is None:  # no flags (the usual case), or the regulator's own call
            return inner
        try:
            details = self.client.get_object_details(FLAG_KEY, {}, EvaluationContext(
                targeting_key=call.entry.request_id,
                attributes={"service": call.service, "method": call.request.method, "path": call.path,
                            "participant_id": call.entry.participant_id or ""}))
            fault = details.value
            if not fault or (fault["counted"] and not self.take_one(fault["id"])):
                return inner
        except Exception:
            log.exception("fault flags: evaluating %s failed; nothing injected", call.entry.request_id)
            return inner
        log.info("fault flag %s (%s) applied to %s %s %s", fault["id"], fault["kind"], call.entry.request_id,
                 call.request.method, call.request.url.path)
        return FaultyTransport(inner, fault, call.service, self.sleep)

    def snapshot(self) -> tuple[Fault, ...]:
        """The flags, as read at most `refresh_s` ago; the last copy if the table cannot be read."""
        moment = time.monotonic()
        if moment - self._read_at >= self.refresh_s:
            self._read_at = moment
            try:
                with Session(self.db.reader) as session:
                    self._faults = tuple(fault_of(row) for row in session.execute(select(FaultFlag)).scalars())
            except Exception:
                log.exception("fault flags: the table could not be read; keeping the last copy")
        return self._faults

    def changed(self) -> None:
        """This replica changed the flags: read them afresh on the next request."""
        self._read_at = float("-inf")

    def take_one(self, fault_id: str) -> bool:
        """Count one request against a fault's `remaining`, atomically across replicas: whether
        this request got it. The one that takes the last removes the spent flag."""
        table = FaultFlag.__table__  # type: ignore[attr-defined]
        with self.db.engine.begin() as conn:
            taken = conn.execute(update(table).where(table.c.id == fault_id, table.c.remaining > 0)
                                 .values(remaining=table.c.remaining - 1)).rowcount == 1
            if taken:
                conn.execute(delete(table).where(table.c.id == fault_id, table.c.remaining <= 0))
        self.changed()
        return taken


# -- queries: the regulator's API and the reset change the table through these -----------------

def live_faults(session: Session, now: datetime) -> list[FaultFlag]:
    """Flags still in force (not expired), by id."""
    rows = session.execute(select(FaultFlag).order_by(FaultFlag.id)).scalars()  # type: ignore[arg-type]
    return [row for row in rows if row.expires_at > now]


def get_fault(session: Session, fault_id: str, now: datetime) -> FaultFlag | None:
    row = session.get(FaultFlag, fault_id)
    return row if row is not None and row.expires_at > now else None


def put_fault(session: Session, row: FaultFlag, now: datetime) -> bool:
    """Set a flag (replacing one of that id); expired ones go. Whether it is new."""
    drop_expired(session, now)
    existing = session.get(FaultFlag, row.id)
    if existing is not None:
        session.delete(existing)
        session.flush()
    session.add(row)
    return existing is None


def delete_fault(session: Session, fault_id: str) -> bool:
    row = session.get(FaultFlag, fault_id)
    if row is None:
        return False
    session.delete(row)
    return True


def clear_faults(session: Session) -> int:
    """Remove every flag: how many there were."""
    return session.execute(delete(FaultFlag)).rowcount  # type: ignore[attr-defined]


def drop_expired(session: Session, now: datetime) -> None:
    session.execute(delete(FaultFlag).where(FaultFlag.expires_at <= now))  # type: ignore[arg-type]
