"""Composition root of the gateway."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic_settings import SettingsConfigDict

from sandbox.gateway import service
from sandbox.gateway.docs import install_docs
from sandbox.gateway.door import UnauthenticatedLimiter
from sandbox.gateway.endpoints import clock_router, receipts, router
from sandbox.gateway.events import EventStore, Relay
from sandbox.gateway.events_api import participant_router, regulator_router
from sandbox.gateway.faults import FaultFlags
from sandbox.gateway.faults_api import router as faults_router
from sandbox.gateway.webhook_rules import AllowList, DisablePolicy, RetryPolicy
from sandbox.gateway.webhooks import DispatchSettings, Dispatcher
from sandbox.gateway.models import GatewayModel
from sandbox.gateway.proxy import Gateway, iso
from sandbox.gateway.screening import DEFAULT_RULES_FILE, RuleSet
from sandbox.topology import GATEWAY, SERVICES
from services.common.app import build_service_app, configure_logging
from services.common.clock import Clock
from services.common.db import Database, database_url
from services.common.ids import new_id
from services.common.demo import DEMO_PARTICIPANTS, DEMO_REGULATOR_KEY, SERVICE_PARTICIPANT_KEYS
from services.common.settings import ServiceSettings


log = logging.getLogger("sandbox.gateway")


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    upstream_payments: str = "http://127.0.0.1:8001"
    upstream_credit: str = "http://127.0.0.1:8002"
    upstream_advisor: str = "http://127.0.0.1:8003"
    upstream_openbanking: str = "http://127.0.0.1:8004"
    regulator_key: str = DEMO_REGULATOR_KEY
    # The AML rule set (versioned YAML); the shipped one by default.
    rules_file: Path = DEFAULT_RULES_FILE
    # Down: connection refused is immediate, an unroutable host gives up after connect_timeout.
    connect_timeout: float = 2.0
    # Slow: no response headers within read_timeout → 504.
    read_timeout: float = 10.0
    max_connections: int = 200
    # Intents left open (a timeout, a crash) are reconciled at start-up and then this often.
    reconcile_interval_s: float = 5.0
    # Money-moving bodies nested deeper than this are refused (422) before they are parsed.
    max_json_depth: int = 32
    # Requests without a valid key, per client address (docs/door.md): a token bucket, and a flood
    # logged as a few entries and one summary per window rather than one entry per request.
    unauthenticated_per_minute: float = 30.0
    unauthenticated_burst: int = 30
    unauthenticated_window_s: float = 60.0
    unauthenticated_logged_per_window: int = 5
    unauthenticated_tracked_addresses: int = 10_000
    # Which participant each service calls the gateway as (gateway prefix → participant id), as
    # JSON. A screened request's second hop (open banking's ledger transfer, same X-Request-ID,
    # same amount) made by that participant is the same payment, counted once. Default: the
    # demo service participants.
    service_participants: dict[str, str] | None = None
    # Events (docs/events.md): the relay reads every service's outbox this often, this many at a
    # time; a clock move relays at once.
    relay_interval_s: float = 0.5
    relay_batch: int = 200
    # Webhooks: where deliveries may go (comma-separated names, addresses, networks; empty:
    # loopback only), how long a receiver has to answer, the retry schedule (exponential with
    # jitter, wall-clock seconds) and when an endpoint is disabled (this many consecutive failed
    # attempts spanning at least this long).
    webhook_allowed_hosts: str = ""
    webhook_poll_s: float = 0.25
    webhook_batch: int = 100
    webhook_timeout_s: float = 5.0
    webhook_retry_base_s: float = 5.0
    webhook_retry_cap_s: float = 3600.0
    webhook_max_attempts: int = 8
    webhook_disable_after_failures: int = 10
    webhook_disable_after_s: float = 3600.0


def demo_service_participants() -> dict[str, str]:
    by_key = {p.api_key: p.id for p in DEMO_PARTICIPANTS}
    return {spec.gateway_prefix.strip("/"): by_key[SERVICE_PARTICIPANT_KEYS[spec.name]]
            for spec in SERVICES if spec.gateway_prefix and spec.name in SERVICE_PARTICIPANT_KEYS}


DESCRIPTION = """The regulatory sandbox's only door, as in the Beijing and UK FCA sandboxes: firms
test inside limits while the regulator watches.

Participants call `/payments/…`, `/credit/…`, `/advisor/…` and `/open-banking/…` with their
`X-API-Key`; each request is checked against the participant's testing window, allow-list,
limits and rate limit (`RateLimit-*` headers), money-moving requests are AML-screened
(`X-Sandbox-Decision`), and every request is appended to a hash-chained audit log whose receipt
comes back in `X-Sandbox-Receipt`. Those proxied routes are the participant's contract, served at
`/sandbox.json` with its pages at `/docs` and `/redoc`; this document is the regulator's API at
`/sandbox/…` (regulator key), its pages at `/sandbox/docs` and `/sandbox/redoc`.
"""


def create_app(settings: GatewaySettings | None = None, clock: Clock | None = None,
               transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> FastAPI:
    """`transports` routes an upstream (by service name: payments, credit, advisor, openbanking)
    to an in-process app, e.g. `{"payments": httpx.ASGITransport(app=payments_app)}`."""
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level)
    clock = clock or Clock()
    db = Database(database_url(settings.database_url, settings.data_dir, "gateway"), GatewayModel.metadata)
    db.create_tables()
    if settings.seed_demo_data:
        db.unit_of_work(lambda session: service.seed_demo_participants(session, clock.now()))
    upstreams: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for spec in SERVICES:
        if spec is GATEWAY or spec.gateway_prefix is None:
            continue
        label = spec.gateway_prefix.strip("/")
        upstreams[label] = getattr(settings, f"upstream_{spec.name}")
        prefixes[label] = spec.gateway_prefix
    named = {spec.gateway_prefix.strip("/"): spec.name for spec in SERVICES if spec.gateway_prefix}
    gateway = Gateway(
        db=db, clock=clock, rules=RuleSet.load(settings.rules_file), upstreams=upstreams,
        regulator_key=settings.regulator_key,
        transports={label: transports[name] for label, name in named.items() if transports and name in transports},
        connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
        max_connections=settings.max_connections,
        service_participants=settings.service_participants if settings.service_participants is not None
        else demo_service_participants(),
    )
    gateway.max_json_depth = settings.max_json_depth
    gateway.door = UnauthenticatedLimiter(
        per_minute=settings.unauthenticated_per_minute, burst=settings.unauthenticated_burst,
        window_s=settings.unauthenticated_window_s, logged_per_window=settings.unauthenticated_logged_per_window,
        tracked_addresses=settings.unauthenticated_tracked_addresses)
    gateway.load()
    gateway.faults = FaultFlags(db)  # the regulator's fault flags, shared by replicas through the database
    gateway.events = EventStore(db.engine, db.reader)
    gateway.relay = Relay(db.engine, gateway.events, gateway.upstreams, lambda: gateway.client, settings.relay_batch)
    gateway.webhook_allow = AllowList.from_setting(settings.webhook_allowed_hosts)
    gateway.dispatcher = Dispatcher(db.engine, db.reader, gateway.events, DispatchSettings(
        poll_s=settings.webhook_poll_s, batch=settings.webhook_batch, timeout_s=settings.webhook_timeout_s,
        retry=RetryPolicy(settings.webhook_retry_base_s, settings.webhook_retry_cap_s, settings.webhook_max_attempts),
        disable=DisablePolicy(settings.webhook_disable_after_failures, settings.webhook_disable_after_s),
        allow=gateway.webhook_allow), on_disabled=lambda endpoint, reason: _log_disabled(gateway, endpoint, reason))
    gateway.relay.on_stored.append(gateway.dispatcher.wake)

    app = build_service_app(
        name="gateway",
        title="Regulatory sandbox gateway",
        description=DESCRIPTION,
        settings=settings,
        database=db,
        clock=clock,
        routers=[router, receipts, regulator_router, participant_router, faults_router],
        openapi_tags=[
            {"name": "participants", "description": "Admit, suspend and inspect participants"},
            {"name": "alerts", "description": "Alerts from review and block decisions; the rule set"},
            {"name": "audit", "description": "The tamper-evident log, its verification and receipts"},
            {"name": "reports", "description": "Exit reports over a testing window"},
            {"name": "events", "description": "Events from every service and the gateway: a participant's "
             "own at `/events`, every one at `/sandbox/events` (docs/events.md)"},
            {"name": "webhooks", "description": "A participant's signed webhook endpoints (Standard Webhooks) "
             "and their delivery log"},
            {"name": "faults", "description": "Fault flags: latency, errors, an unavailable service or a lost "
             "answer injected into the gateway's forwarding (docs/faults.md)"},
        ],
    )
    app.state.gateway = gateway
    gateway.tracer_provider = app.state.tracer_provider  # its hops to the services are client spans
    # The gateway's own clock decides testing windows, daily limits and screening windows: its
    # /_sandbox routes are the regulator's (endpoints.clock_router), not the shared open ones.
    app.router.routes[:] = [r for r in app.router.routes if not _is_shared_clock_route(r)]
    app.include_router(clock_router)
    install_docs(app, gateway)

    inner_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI):  # type: ignore[no-untyped-def]
        async with inner_lifespan(a) as state:
            if gateway.open_intents:
                log.info("reconciling %d open intents: %s", len(gateway.open_intents),
                         await gateway.reconcile_open())
            background = [asyncio.create_task(gateway.run_reconciler(settings.reconcile_interval_s)),
                          asyncio.create_task(gateway.relay.run_forever(settings.relay_interval_s)),
                          asyncio.create_task(gateway.dispatcher.run_forever())]
            try:
                yield state
            finally:
                for task in background:
                    task.cancel()
                for task in background:
                    with suppress(asyncio.CancelledError):
                        await task
                await gateway.dispatcher.aclose()
                await gateway.aclose()
                gateway.faults.close()

    app.router.lifespan_context = lifespan

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    for label, prefix in prefixes.items():
        app.router.add_route(f"{prefix}/{{path:path}}", _proxy_endpoint(gateway, label, prefix),
                             methods=methods, include_in_schema=False)
        app.router.add_route(prefix, _proxy_endpoint(gateway, label, prefix), methods=methods,
                             include_in_schema=False)
    return app


def _log_disabled(gateway: Gateway, endpoint: Any, reason: str) -> None:
    """The gateway's own change to a participant's endpoint is on the record like the others."""
    gateway.audit({"at": iso(gateway.clock.now()), "request_id": new_id("req"), "participant_id": endpoint.participant_id,
                   "method": "POST", "path": f"/webhooks/endpoints/{endpoint.id}"[:500], "status": 200,
                   "latency_us": 0, "operation": f"webhook endpoint disabled: {reason}"[:200]})


def _is_shared_clock_route(route: Any) -> bool:
    """The open /_sandbox clock routes every service gets from build_service_app: a route, or
    (FastAPI ≥ 0.16x keeps included routers whole) the router that holds them."""
    included = getattr(route, "original_router", None)
    if included is not None:
        return included is not clock_router and getattr(included, "prefix", None) == "/_sandbox"
    return str(getattr(route, "path", "")).startswith("/_sandbox/")


def _proxy_endpoint(gateway: Gateway, service_label: str, prefix: str):  # type: ignore[no-untyped-def]
    async def proxy(request: Request) -> Response:
        return await gateway.handle(request, service_label, prefix)

    proxy.__name__ = f"proxy_{service_label.replace('-', '_')}"
    return proxy
