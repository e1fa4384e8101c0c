"""docker-compose.yml is exactly what `sandbox.compose` generates from sandbox/topology.py, and it
runs every service the way the launcher does: same port, same settings (except where compose
must differ: service names as hosts, one PostgreSQL database per service instead of SQLite
files), a healthcheck on every container, and start-up ordered on health. When a compose
parser is installed, `docker-compose config -q` accepts the file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from sandbox import compose
from sandbox.topology import CONSOLE, GATEWAY, SERVICES, ServiceSpec, built_services, environment

SPECS = built_services()
INSTALL_HINT = (
    "no compose parser on PATH: install one to validate docker-compose.yml, e.g. "
    "`apt-get install docker-compose` (Debian) or Docker's compose plugin; .ci/run installs it"
)


@pytest.fixture(scope="module")
def committed() -> dict:
    return yaml.safe_load(compose.COMPOSE_FILE.read_text(encoding="utf-8"))


def test_committed_compose_file_is_what_the_topology_generates(committed: dict) -> None:
    assert committed == compose.document(), "docker-compose.yml drifted from the topology; run `make compose`"
    # ...and byte for byte, header included, so `make compose` leaves no diff behind.
    assert compose.COMPOSE_FILE.read_text(encoding="utf-8") == compose.render()
    assert compose.POSTGRES_INIT.read_text(encoding="utf-8") == compose.postgres_init_sql()


def test_every_topology_service_is_a_compose_service_on_its_port(committed: dict) -> None:
    assert SPECS, "no service is built"
    assert set(committed["services"]) == {"postgres", "jaeger", "load"} | {s.name for s in SPECS}
    for spec in SPECS:
        service = committed["services"][spec.name]
        assert service["ports"] == [f"{spec.port}:{spec.port}"]
        command = service["command"]
        assert command[:3] == ["uvicorn", "--factory", spec.app]
        assert command[command.index("--port") + 1] == str(spec.port)
        assert command[command.index("--host") + 1] == "0.0.0.0"
    # Every service the topology names is built in this tree, so compose runs all of them.
    assert [s.name for s in SPECS] == [s.name for s in SERVICES]


def _as_compose(spec: ServiceSpec, launcher_env: dict[str, str]) -> dict[str, str]:
    """The launcher's environment with the documented compose differences applied."""
    expected: dict[str, str] = {}
    for key, value in launcher_env.items():
        if key == f"{spec.env_prefix}DATA_DIR":  # SQLite files under the launcher...
            key = f"{spec.env_prefix}DATABASE_URL"  # ...one PostgreSQL database each in compose
            value = f"postgresql://postgres:sandbox@postgres:5432/{spec.name}"
        for other in SERVICES:  # 127.0.0.1:<port> under the launcher, <service>:<port> in compose
            value = value.replace(f"http://127.0.0.1:{other.port}", f"http://{other.name}:{other.port}")
        expected[key] = value
    return expected


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_compose_environment_is_the_launchers_modulo_hosts_and_database(committed: dict, spec: ServiceSpec) -> None:
    launcher = environment(spec, compose=False, data_dir=".sandbox-data", port_offset=0)
    in_compose = {k: v for k, v in committed["services"][spec.name]["environment"].items()
                  if not k.startswith("OTEL_")}  # compose's own addition (below)
    assert in_compose == _as_compose(spec, launcher)
    assert all(isinstance(v, str) for v in in_compose.values())  # no YAML ints or booleans
    assert all(k.startswith(spec.env_prefix) for k in in_compose)
    # Each service reaches the gateway by its compose name; the gateway reaches each upstream.
    assert in_compose[f"{spec.env_prefix}GATEWAY_URL"] == f"http://gateway:{GATEWAY.port}"
    if spec is GATEWAY:
        for other in SPECS:
            if other.kind == "service":
                assert in_compose[f"GATEWAY_UPSTREAM_{other.name.upper()}"] == f"http://{other.name}:{other.port}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_compose_exports_traces_only_when_the_host_names_an_endpoint(committed: dict, spec: ServiceSpec) -> None:
    env = committed["services"][spec.name]["environment"]
    assert env["OTEL_SERVICE_NAME"] == spec.name
    # Empty unless given (`OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318 docker compose --profile
    # tracing up`): without Jaeger running, nothing tries to reach it.
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"


def test_jaeger_is_opt_in_with_its_ui_and_otlp_ports(committed: dict) -> None:
    jaeger = committed["services"]["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["profiles"] == ["tracing"]  # `docker compose up` alone does not start it
    assert jaeger["environment"] == {"COLLECTOR_OTLP_ENABLED": "true"}
    assert set(jaeger["ports"]) == {"16686:16686", "4318:4318"}
    for spec in SPECS:  # no service waits on an opt-in container
        assert "jaeger" not in committed["services"][spec.name]["depends_on"]


def test_load_is_a_one_off_job_in_its_profile_against_the_gateway(committed: dict) -> None:
    load = committed["services"]["load"]
    assert load["profiles"] == [compose.LOAD_PROFILE]  # `docker compose up` alone does not start it
    assert load["depends_on"] == {GATEWAY.name: {"condition": "service_healthy"}}
    assert load["restart"] == "no"  # its exit status is the verdict: never rerun on its own
    command = load["command"]
    assert command[:2] == ["fintech-sandbox", "load"]
    assert command[command.index("--gateway-url") + 1] == f"http://{GATEWAY.name}:{GATEWAY.port}"
    assert "--run-time" in command or "--iterations" in command  # always bounded
    assert not [s.name for s in SPECS if "load" in committed["services"][s.name]["depends_on"]]


def test_every_container_has_a_healthcheck_probing_readiness(committed: dict) -> None:
    for name, service in committed["services"].items():
        if compose.LOAD_PROFILE in service.get("profiles", []):
            continue  # a one-off job that exits with its verdict: nothing waits on its health
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL")
        assert check.get("retries", 0) >= 1
    for spec in SPECS:
        probe = " ".join(committed["services"][spec.name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{spec.port}/readyz" in probe
    assert "pg_isready" in " ".join(committed["services"]["postgres"]["healthcheck"]["test"])


def test_start_up_waits_on_health(committed: dict) -> None:
    services = committed["services"]
    for spec in SPECS:
        depends = services[spec.name]["depends_on"]
        assert isinstance(depends, dict), "depends_on must use conditions, not a bare list"
        assert all(d == {"condition": "service_healthy"} for d in depends.values()), depends
        assert ("postgres" in depends) == spec.has_database
    gateway_deps = set(services[GATEWAY.name]["depends_on"])
    assert gateway_deps == {"postgres"} | {s.name for s in SPECS if s.kind == "service"}
    for spec in SPECS:
        if spec.kind == "service":  # no service waits on the gateway, so there is no cycle
            assert GATEWAY.name not in services[spec.name]["depends_on"]
    # The console reads the gateway's API and waits for it; nothing waits on the console.
    assert set(services[CONSOLE.name]["depends_on"]) == {GATEWAY.name}
    assert not [s.name for s in SPECS if CONSOLE.name in services[s.name]["depends_on"]]


def test_postgres_init_creates_one_database_per_service(committed: dict) -> None:
    sql = compose.POSTGRES_INIT.read_text(encoding="utf-8")
    created = re.findall(r"^CREATE DATABASE (\w+);$", sql, flags=re.MULTILINE)
    assert sorted(created) == sorted(s.name for s in SPECS if s.has_database)
    assert len(created) == len(set(created))
    postgres = committed["services"]["postgres"]
    assert f"./{compose.POSTGRES_INIT.relative_to(compose.ROOT)}:/docker-entrypoint-initdb.d/init.sql:ro" in postgres["volumes"]
    password = postgres["environment"]["POSTGRES_PASSWORD"]
    for spec in SPECS:
        if not spec.has_database:  # the console keeps nothing: it reads the others' APIs
            assert f"{spec.env_prefix}DATABASE_URL" not in committed["services"][spec.name]["environment"]
            continue
        url = committed["services"][spec.name]["environment"][f"{spec.env_prefix}DATABASE_URL"]
        assert url == f"postgresql://postgres:{password}@postgres:5432/{spec.name}"


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    result = subprocess.run(
        [*command, "-f", str(compose.COMPOSE_FILE), "config", "-q"],
        cwd=compose.ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
