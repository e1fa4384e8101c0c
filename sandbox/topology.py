"""The one description of the sandbox's topology. The launcher, docker-compose.yml (generated
from it by `fintech-sandbox compose`), the OpenAPI export and the contract tests all read it."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from typing import Literal

# What a process in the topology is: the gateway (the regulator's door), a service behind it
# (an API with its own database, exported to openapi/ and fuzzed), or the console (a web UI that
# reads the others' public APIs: no database, no OpenAPI document of its own).
SpecKind = Literal["gateway", "service", "console"]


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # also the compose service name and the database name
    port: int
    app: str  # "module:factory", a zero-argument create_app() reading its settings from env
    env_prefix: str  # settings come from <PREFIX>DATABASE_URL, <PREFIX>DATA_DIR, ...
    gateway_prefix: str | None  # path prefix at the gateway; None for the gateway and the console
    title: str
    kind: SpecKind = "service"

    @property
    def has_api(self) -> bool:
        """An API with an OpenAPI document (exported, fuzzed, /docs), not a UI."""
        return self.kind != "console"

    @property
    def has_database(self) -> bool:
        return self.kind != "console"

    @property
    def module(self) -> str:
        return self.app.split(":")[0]

    def is_built(self) -> bool:
        """Services land one issue at a time; the launcher starts those whose code exists."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


GATEWAY = ServiceSpec("gateway", 8000, "sandbox.gateway.main:create_app", "GATEWAY_", None,
                      "Regulatory sandbox gateway", kind="gateway")
CONSOLE = ServiceSpec("console", 8005, "sandbox.console.main:create_app", "CONSOLE_", None,
                      "Sandbox console: the service map, live feed, alerts and integrity", kind="console")
SERVICES: tuple[ServiceSpec, ...] = (
    GATEWAY,
    ServiceSpec("payments", 8001, "services.payments.main:create_app", "PAYMENTS_", "/payments",
                "Payments: wallets and a double-entry ledger"),
    ServiceSpec("credit", 8002, "services.credit.main:create_app", "CREDIT_", "/credit",
                "Credit: scorecard and the 310 loan"),
    ServiceSpec("advisor", 8003, "services.advisor.main:create_app", "ADVISOR_", "/advisor",
                "Robo-advisor"),
    ServiceSpec("openbanking", 8004, "services.openbanking.main:create_app", "OPENBANKING_",
                "/open-banking", "Open banking: Sandbox Bank's OBIE API"),
    CONSOLE,
)


def by_name(name: str) -> ServiceSpec:
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def built_services() -> list[ServiceSpec]:
    """Every process the launcher and compose start: the gateway, the services, the console."""
    return [spec for spec in SERVICES if spec.is_built()]


def api_services() -> list[ServiceSpec]:
    """The built processes with an API (the gateway and the services): exported, fuzzed, /docs."""
    return [spec for spec in built_services() if spec.has_api]


def environment(
    spec: ServiceSpec, *, compose: bool, data_dir: str = ".sandbox-data", port_offset: int = 0
) -> dict[str, str]:
    """The environment a service runs with: under the launcher (127.0.0.1, SQLite files) or in
    docker compose (service names as hosts, one PostgreSQL database per service)."""
    from services.common.demo import SERVICE_PARTICIPANT_KEYS

    def url(other: ServiceSpec) -> str:
        if compose:
            return f"http://{other.name}:{other.port}"
        return f"http://127.0.0.1:{other.port + port_offset}"

    p = spec.env_prefix
    env = {f"{p}GATEWAY_URL": url(GATEWAY)}
    if spec.kind == "console":
        from services.common.demo import DEMO_REGULATOR_KEY

        # The console reads only public APIs: the regulator's at the gateway, and every
        # process's health (and payments' invariants) on its own port.
        env[f"{p}REGULATOR_KEY"] = DEMO_REGULATOR_KEY
        env[f"{p}SERVICE_URLS"] = json.dumps({other.name: url(other) for other in SERVICES if other.has_api})
        return env
    if compose:
        env[f"{p}DATABASE_URL"] = f"postgresql://postgres:sandbox@postgres:5432/{spec.name}"
    else:
        env[f"{p}DATA_DIR"] = data_dir
    if spec.name in SERVICE_PARTICIPANT_KEYS:
        env[f"{p}PARTICIPANT_KEY"] = SERVICE_PARTICIPANT_KEYS[spec.name]
    if spec is GATEWAY:
        for other in SERVICES:
            if other.kind == "service":
                env[f"{p}UPSTREAM_{other.name.upper()}"] = url(other)
    return env
