"""The composition root every service shares: `build_service_app` wires settings, database,
clock, problems, request ids, health and the OpenAPI conventions around a service's routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field

from services.common.clock import Clock
from services.common.db import Database
from services.common.duework import DueWork, run_due_work, run_due_work_forever
from services.common.fields import JsonInt
from services.common.health import health_router
from services.common.outbox import OUTBOX_TABLE, outbox_router
from services.common.outcomes import outcomes_router
from services.common.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    ProblemDetails,
    install_problem_handlers,
    problem_responses,
)
from services.common.requestctx import RequestContextMiddleware, RequestIdLogFilter
from services.common.reset import ResetHooks, install_reset
from services.common.settings import ServiceSettings
from services.common.tracing import install_tracing


# `async def` although they only read app state: FastAPI runs a plain `def` dependency in the
# threadpool, a thread hop per dependency per request for a dictionary look-up.
async def get_clock(request: Request) -> Clock:
    return request.app.state.clock


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


ClockDep = Annotated[Clock, Depends(get_clock)]
SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]


class ClockAdvance(BaseModel):
    """How far to move this service's clock forward."""

    model_config = ConfigDict(extra="forbid")

    seconds: JsonInt = Field(ge=0, le=366 * 24 * 3600, description="Seconds to move forward.")


class ClockState(BaseModel):
    """The service's current time, as every rule in it sees it."""

    now: datetime
    fired: dict[str, int] = Field(default_factory=dict, description=(
        "What fell due by the new time and was done, by kind (e.g. `cross-border-settlement`: 2); "
        "empty when nothing was due or on a read."))


def clock_router() -> APIRouter:
    router = APIRouter(prefix="/_sandbox", tags=["sandbox"])

    @router.get("/clock", operation_id="get_clock", response_model=ClockState)
    def read_clock(clock: ClockDep) -> ClockState:
        """The service's current time."""
        return ClockState(now=clock.now())

    @router.post(
        "/clock/advance",
        operation_id="advance_clock",
        response_model=ClockState,
        responses=problem_responses(403, 422),
    )
    async def advance_clock(body: ClockAdvance, clock: ClockDep, settings: SettingsDep,
                            request: Request) -> ClockState:
        """Move time forward (consent expiry, key retention, wash-sale windows), then do what
        fell due by the new time (settlements, instalments, expiries)."""
        if not settings.allow_time_travel:
            raise Problem(403, "time-travel-disabled", "Time travel is disabled on this service")
        now = clock.advance(timedelta(seconds=body.seconds))
        return ClockState(now=now, fired=await run_due_work(request.app.state.due_work, now))

    return router


def _operation_id(route: APIRoute) -> str:
    return route.name


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RequestIdLogFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.addFilter(RequestIdLogFilter())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied call is noise


def build_service_app(
    *,
    name: str,
    title: str,
    description: str,
    settings: ServiceSettings,
    database: Database,
    clock: Clock,
    routers: Iterable[APIRouter],
    version: str = "1.0.0",
    openapi_tags: list[dict[str, Any]] | None = None,
    on_shutdown: Callable[[], None] | None = None,
    reset: ResetHooks | None = None,
    due_work: Sequence[DueWork] = (),
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        runner = None
        if due_work and settings.due_work_interval_seconds > 0:
            runner = asyncio.create_task(run_due_work_forever(
                due_work, clock.now, settings.due_work_interval_seconds))
        yield
        if runner is not None:
            runner.cancel()
            with suppress(asyncio.CancelledError):
                await runner
        if on_shutdown:
            on_shutdown()
        database.dispose()
        if app.state.tracer_provider is not None:
            app.state.tracer_provider.shutdown()  # sends the spans still batched

    # /docs and /redoc load Swagger UI and ReDoc from the installed fastapi-offline package (at
    # /static-offline-docs, no web fonts), not a CDN: the pages work in an offline classroom.
    app = FastAPIOffline(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        openapi_tags=openapi_tags,
    )
    app.state.settings = settings
    app.state.db = database
    app.state.clock = clock
    app.state.service_name = name
    app.state.due_work = tuple(due_work)
    app.state.idempotency_lease = timedelta(seconds=settings.idempotency_lease_seconds)
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    app.include_router(health_router(name, lambda request: request.app.state.db.ping()))
    app.include_router(clock_router())
    install_reset(app, reset)  # POST /_sandbox/reset: back to the seeded demo state
    key_table = database.metadata.tables.get("idempotency_keys")
    if key_table is not None:  # the gateway reconciles its open intents through this read
        app.include_router(outcomes_router(key_table))
    events_table = database.metadata.tables.get(OUTBOX_TABLE)
    if events_table is not None:  # the gateway relays the service's events from here
        app.state.outbox_table = events_table
        app.include_router(outbox_router(events_table))
    for router in routers:
        app.include_router(router)
    install_openapi_conventions(app, deadline_fenced=key_table is not None)
    # Last: its middleware goes outside the request context's, so a crash's 500 has the header.
    install_tracing(app, name, [database.engine])
    return app


# Request headers naming an idempotency key (the kit's, and OBIE's for open banking).
IDEMPOTENCY_HEADERS = {"idempotency-key", "x-idempotency-key"}


def _takes_idempotency_key(operation: dict[str, Any]) -> bool:
    return any(p.get("in") == "header" and p.get("name", "").lower() in IDEMPOTENCY_HEADERS
               for p in operation.get("parameters", []))


def install_openapi_conventions(app: FastAPI, deadline_fenced: bool = False) -> None:
    """Validation errors are documented as problem+json, as they are served. In a service whose
    keys the kit keeps (`deadline_fenced`), an operation that takes an idempotency key documents
    the deadline fence's 504 `deadline-passed` (services/common/idempotency.py)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["ProblemDetails"] = ProblemDetails.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        nested = components["ProblemDetails"].pop("$defs", {})
        components.update(nested)
        problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if "requestBody" in operation:
                    # Every body is parsed and size-checked before any handler runs.
                    for status, why in (("400", "Body is not valid JSON"),
                                        ("413", "Request body too large")):
                        operation["responses"].setdefault(
                            status,
                            {"description": why, "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}},
                        )
                if deadline_fenced and _takes_idempotency_key(operation):
                    operation["responses"].setdefault("504", {
                        "description": "The gateway's deadline for this request passed before it "
                        "started (`deadline-passed`): nothing was applied; retry with the same key",
                        "content": {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}},
                    })
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status == "422" or PROBLEM_MEDIA_TYPE in content or (
                        status[0] in "45" and "application/json" in content
                    ):
                        response["content"] = {
                            PROBLEM_MEDIA_TYPE: {
                                "schema": {"$ref": "#/components/schemas/ProblemDetails"}
                            }
                        }
                        if status == "422":
                            response["description"] = (
                                "Request failed schema validation; `errors` names each field"
                            )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
