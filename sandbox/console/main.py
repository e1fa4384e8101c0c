"""The sandbox console's composition root: a small web UI for learners and the regulator. It is
a client like any other: it reads the gateway's regulator API, every process's health and
payments' invariants over HTTP, renders pages server-side (Jinja2) and streams the live feed as
server-sent events. Templates, the stylesheet and the script ship in this package (no CDN)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandbox.console import endpoints
from sandbox.console.sources import SandboxApi
from sandbox.topology import SERVICES
from services.common.app import configure_logging
from services.common.demo import DEMO_REGULATOR_KEY
from services.common.problems import Problem, install_problem_handlers

HERE = Path(__file__).resolve().parent


def _local_service_urls() -> dict[str, str]:
    return {spec.name: f"http://127.0.0.1:{spec.port}" for spec in SERVICES if spec.has_api}


class ConsoleSettings(BaseSettings):
    """Read from `CONSOLE_*` (the topology's environment sets them under the launcher and compose)."""

    model_config = SettingsConfigDict(env_prefix="CONSOLE_", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8000"
    regulator_key: str = DEMO_REGULATOR_KEY
    # Every process whose health the map shows, by name (JSON in the environment).
    service_urls: dict[str, str] = Field(default_factory=_local_service_urls)
    # How often an open feed asks the gateway for new entries.
    feed_poll_s: float = Field(default=0.5, gt=0)
    request_timeout_s: float = Field(default=5.0, gt=0)
    log_level: str = "INFO"


def create_app(settings: ConsoleSettings | None = None, api: SandboxApi | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    configure_logging(settings.log_level)
    api = api or SandboxApi(settings.gateway_url, settings.regulator_key, settings.service_urls,
                            timeout_s=settings.request_timeout_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        await api.aclose()

    # A UI, not an API: no OpenAPI document or /docs (the console is not exported or fuzzed).
    app = FastAPI(title="Sandbox console", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.api = api
    install_problem_handlers(app)
    app.add_exception_handler(Problem, endpoints.problem_page)  # a browser gets the problem as a page
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(endpoints.router)
    return app

