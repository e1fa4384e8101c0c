"""deploy/k8s/ is exactly what `sandbox.k8s` generates from sandbox/topology.py, every object in
it is valid against the Kubernetes schemas (kubernetes-validate's, offline, strict: no unknown
field), and it runs every process as docker compose does: same port, same command, same
environment (split into a ConfigMap and a demo Secret), probes on /readyz and /healthz, the
others reached by their Service names, start-up ordered on readiness, one PostgreSQL database per
service. When a kubectl with kustomize v4+ is on PATH, the overlays are rendered with it and every
rendered object is validated too; without one, the kustomizations are resolved here (every
resource and patch file exists, every patch meets an object it can see)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from sandbox import compose, k8s
from sandbox.topology import CONSOLE, GATEWAY, SERVICES, ServiceSpec, built_services
from services.common.demo import (
    DEMO_PARTICIPANTS,
    DEMO_REGULATOR_KEY,
    SERVICE_PARTICIPANT_KEYS,
)

SPECS = built_services()
# The oldest Kubernetes these manifests promise to fit, and a recent one (both ship in
# kubernetes-validate >= 1.34; kind's node images are 1.30 and newer).
KUBERNETES_VERSIONS = ("1.30", "1.34")
KUSTOMIZE_HINT = ("no kubectl with kustomize v4+ on PATH: the overlays were resolved by the test, not "
                  "rendered (Debian's kubernetes-client ships kustomize v2, too old for `patches` and components)")


# -- reading the tree -----------------------------------------------------------------------------

def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@cache
def tree() -> dict[str, list[Any]]:
    """Every committed file under deploy/k8s/ (relative path) and its documents."""
    return {p.relative_to(k8s.K8S_DIR).as_posix(): _docs(p) for p in sorted(k8s.K8S_DIR.rglob("*.yaml"))}


def _is_kustomization(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("apiVersion", "").startswith("kustomize.config.k8s.io/")


def _is_patch_file(path: str) -> bool:
    """Files a kustomization names under `patches` (partial objects or JSON patches)."""
    return any(path.startswith(d) and path.removeprefix(d) in _patch_paths(d) for d in _kustomization_dirs())


@cache
def _kustomization_dirs() -> list[str]:
    return [p.removesuffix("kustomization.yaml") for p in tree() if p.endswith("kustomization.yaml")]


def _patch_paths(directory: str) -> set[str]:
    return {p["path"] for p in tree()[f"{directory}kustomization.yaml"][0].get("patches", []) if "path" in p}


@cache
def objects() -> list[tuple[str, dict[str, Any]]]:
    """(file, object) for every whole Kubernetes object committed: resources, not kustomizations or patches."""
    return [(path, doc) for path, docs in tree().items() if not _is_patch_file(path)
            for doc in docs if not _is_kustomization(doc)]


def _find(kind: str, name: str, prefix: str = "") -> dict[str, Any]:
    found = [o for p, o in objects() if p.startswith(prefix) and o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found under deploy/k8s/{prefix}"
    return found[0]


def base(kind: str, name: str) -> dict[str, Any]:
    return _find(kind, name, "base/")


def pod_of(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container_of(spec: ServiceSpec) -> dict[str, Any]:
    containers = pod_of(base("Deployment", spec.name))["containers"]
    assert [c["name"] for c in containers] == [spec.name]
    return containers[0]


def environment_of(container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: its envFrom ConfigMaps and Secrets, then its env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(base("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(base("Secret", source["secretRef"]["name"])["stringData"])
    for var in container.get("env", []):
        env[var["name"]] = var["value"] if "value" in var else _ref(var["valueFrom"])
    return env


def _ref(value_from: dict[str, Any]) -> str:
    if "secretKeyRef" in value_from:
        ref = value_from["secretKeyRef"]
        return base("Secret", ref["name"])["stringData"][ref["key"]]
    ref = value_from["configMapKeyRef"]
    return base("ConfigMap", ref["name"])["data"][ref["key"]]


def mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return float(quantity.removesuffix(unit)) * factor
    return float(quantity) / 2**20


def millicores(quantity: str) -> float:
    return float(quantity.removesuffix("m")) if quantity.endswith("m") else float(quantity) * 1000


@pytest.fixture(scope="module")
def compose_file() -> dict[str, Any]:
    return yaml.safe_load(compose.COMPOSE_FILE.read_text(encoding="utf-8"))


# -- in sync with the topology ----------------------------------------------------------------

def test_committed_tree_is_what_the_topology_generates(tmp_path: Path) -> None:
    k8s.write(tmp_path)
    rendered = {p.relative_to(tmp_path).as_posix(): p.read_text(encoding="utf-8") for p in tmp_path.rglob("*")
                if p.is_file()}
    committed = {p.relative_to(k8s.K8S_DIR).as_posix(): p.read_text(encoding="utf-8")
                 for p in k8s.K8S_DIR.rglob("*") if p.is_file()}
    assert sorted(committed) == sorted(rendered), "deploy/k8s has other files than the topology gives; run `make k8s`"
    for path, text in rendered.items():
        assert committed[path] == text, f"deploy/k8s/{path} drifted from the topology; run `make k8s`"
    assert k8s.drift() == []


def test_check_names_a_changed_a_missing_and_a_left_over_file(tmp_path: Path) -> None:
    k8s.write(tmp_path)
    (tmp_path / "base" / "payments.yaml").write_text("# edited by hand\n", encoding="utf-8")
    (tmp_path / "base" / "hpa.yaml").unlink()
    (tmp_path / "base" / "retired.yaml").write_text("kind: ConfigMap\n", encoding="utf-8")
    assert k8s.drift(tmp_path) == ["base/hpa.yaml", "base/payments.yaml", "base/retired.yaml"]
    k8s.write(tmp_path)  # and writing again puts it right, the left-over file removed
    assert k8s.drift(tmp_path) == [] and not (tmp_path / "base" / "retired.yaml").exists()


def test_the_cli_check_passes_on_the_committed_tree(capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox.cli import main

    assert main(["k8s", "--check"]) == 0
    assert "deploy/k8s is what sandbox/topology.py generates" in capsys.readouterr().out


# -- valid Kubernetes ---------------------------------------------------------------------------

def assert_valid(obj: dict[str, Any], version: str, where: str) -> None:
    """Strict: an unknown or misspelt field fails, as `kubectl apply --validate=strict` would."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {obj['kind']}/{obj['metadata']['name']} is not valid Kubernetes {version}: "
                    f"{exc.message} at {'/'.join(map(str, exc.path))}", pytrace=False)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    assert objects()
    for path, obj in objects():
        assert_valid(obj, version, f"deploy/k8s/{path}")


def test_the_validator_catches_a_misspelt_field() -> None:
    """A control: strict validation refuses what the cluster would silently drop."""
    hpa = json.loads(json.dumps(base("HorizontalPodAutoscaler", CONSOLE.name)))
    hpa["spec"]["maxReplica"] = hpa["spec"].pop("maxReplicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSIONS[0], strict=True)


def _resolve(directory: str, parent: tuple[dict[str, Any], ...] = ()) -> list[dict[str, Any]]:
    """The objects a kustomization directory yields: its resources', its components', after
    checking that each file it names exists and each patch meets an object. A component patches
    what its parent has gathered (`parent`) as well as its own."""
    kustomization = tree()[f"{directory}kustomization.yaml"][0]
    seen: list[dict[str, Any]] = list(parent)
    for entry in kustomization.get("resources", []):
        path = (k8s.K8S_DIR / directory / entry).resolve()
        rel = path.relative_to(k8s.K8S_DIR).as_posix()
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), f"{directory}: {entry} has no kustomization.yaml"
            seen += _resolve(rel + "/")
        else:
            assert path.is_file(), f"{directory}kustomization.yaml names {entry}, which does not exist"
            seen += tree()[rel]
    for entry in kustomization.get("components", []):
        path = (k8s.K8S_DIR / directory / entry).resolve()
        rel = path.relative_to(k8s.K8S_DIR).as_posix() + "/"
        component = tree()[f"{rel}kustomization.yaml"][0]
        assert component["kind"] == "Component", f"{entry} is no kustomize Component"
        seen = _resolve(rel, tuple(seen))
    for patch in kustomization.get("patches", []):
        _check_patch(directory, patch, seen)
    return seen


def _check_patch(directory: str, patch: dict[str, Any], seen: list[dict[str, Any]]) -> None:
    assert (k8s.K8S_DIR / directory / patch["path"]).is_file(), f"{directory}: patch {patch['path']} is missing"
    body = tree()[f"{directory}{patch['path']}"][0]
    if isinstance(body, list):  # a JSON patch: its target names the object
        target = patch["target"]
        matches = [o for o in seen if o["kind"] == target["kind"] and re.fullmatch(target["name"], o["metadata"]["name"])]
        assert matches, f"{directory}: patch {patch['path']} targets no {target['kind']}/{target['name']}"
        for obj in matches:
            for op in body:
                if op["op"] in ("replace", "remove", "test"):  # these need the path to exist
                    node: Any = obj
                    for part in op["path"].strip("/").split("/"):
                        assert part in node, f"{directory}{patch['path']}: {op['path']} is not in {obj['kind']}"
                        node = node[part]
        return
    matches = [o for o in seen if o["kind"] == body["kind"] and o["metadata"]["name"] == body["metadata"]["name"]]
    assert len(matches) == 1, f"{directory}: patch {patch['path']} meets no {body['kind']}/{body['metadata']['name']}"
    target_pod, patch_pod = pod_of(matches[0]), pod_of(body)
    for field in ("containers", "initContainers"):  # a container the target lacks would be added, not patched
        names = {c["name"] for c in target_pod.get(field, [])}
        assert {c["name"] for c in patch_pod.get(field, [])} <= names, f"{patch['path']}: {field} not in the target"


@pytest.mark.parametrize("overlay", ["base/", f"{k8s.LOCAL_OVERLAY}/", f"{k8s.LOCAL_TRACING_OVERLAY}/"])
def test_every_kustomization_names_files_that_exist_and_patches_that_apply(overlay: str) -> None:
    assert _resolve(overlay)


def _kubectl_with_kustomize() -> str | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    try:
        result = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True,
                                timeout=30)
        version = json.loads(result.stdout).get("kustomizeVersion", "")
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    match = re.match(r"v(\d+)\.", version)
    return kubectl if match and int(match.group(1)) >= 4 else None


@cache
def rendered(directory: str) -> list[dict[str, Any]]:
    kubectl = _kubectl_with_kustomize()
    if kubectl is None:
        pytest.skip(KUSTOMIZE_HINT)
    result = subprocess.run([kubectl, "kustomize", str(k8s.K8S_DIR / directory)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("overlay", [k8s.LOCAL_OVERLAY, k8s.LOCAL_TRACING_OVERLAY])
def test_kustomize_renders_each_overlay_into_valid_objects_in_one_namespace(overlay: str) -> None:
    objs = rendered(overlay)
    for obj in objs:
        for version in KUBERNETES_VERSIONS:
            assert_valid(obj, version, f"kubectl kustomize deploy/k8s/{overlay}")
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == k8s.NAMESPACE
        else:
            assert obj["metadata"]["namespace"] == k8s.NAMESPACE, obj["metadata"]["name"]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {("Deployment", s.name) for s in SPECS} | {("StatefulSet", "postgres")} <= names
    assert (("Deployment", "jaeger") in names) == (overlay == k8s.LOCAL_TRACING_OVERLAY)


def test_the_local_overlay_runs_the_loaded_image_with_smaller_requests() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in rendered(k8s.LOCAL_OVERLAY)}
    for spec in SPECS:
        pod = pod_of(objs[("Deployment", spec.name)])
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"] == k8s.IMAGE
            assert container["imagePullPolicy"] == "IfNotPresent"  # `kind load docker-image` put it there
        app = pod["containers"][0]
        assert app["resources"] == k8s.LOCAL_APP_RESOURCES
        assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the patch kept the rest
    assert pod_of(objs[("StatefulSet", "postgres")])["containers"][0]["resources"] == k8s.LOCAL_POSTGRES_RESOURCES


def test_the_tracing_overlay_sends_every_process_traces_to_jaeger() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in rendered(k8s.LOCAL_TRACING_OVERLAY)}
    assert objs[("ConfigMap", k8s.TRACING_CONFIG)]["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == k8s.OTLP_ENDPOINT
    plain = {(o["kind"], o["metadata"]["name"]): o for o in rendered(k8s.LOCAL_OVERLAY)}
    assert plain[("ConfigMap", k8s.TRACING_CONFIG)]["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == ""


# -- the topology, as compose runs it -----------------------------------------------------------

def test_one_deployment_and_service_per_process_on_its_port() -> None:
    assert [s.name for s in SPECS] == [s.name for s in SERVICES]  # every process is built in this tree
    deployments = {o["metadata"]["name"] for _, o in objects() if o["kind"] == "Deployment"}
    assert deployments == {s.name for s in SPECS} | {"jaeger"}
    for spec in SPECS:
        assert base("Deployment", spec.name)["spec"]["selector"]["matchLabels"] == base("Service", spec.name)["spec"]["selector"]
        container = container_of(spec)
        assert container["image"] == k8s.IMAGE
        assert container["ports"] == [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}]
        assert base("Service", spec.name)["spec"]["ports"] == [
            {"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}]
        assert pod_of(base("Deployment", spec.name))["enableServiceLinks"] is False  # no GATEWAY_PORT=tcp://…


def test_each_container_runs_the_command_compose_runs(compose_file: dict[str, Any]) -> None:
    for spec in SPECS:
        command = container_of(spec)["command"]
        assert k8s.IMAGE == compose_file["services"][spec.name]["image"]  # what `docker build`/compose makes
        assert command == compose_file["services"][spec.name]["command"]
        assert command[:3] == ["uvicorn", "--factory", spec.app]
        assert command[command.index("--port") + 1] == str(spec.port)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_each_process_sees_the_environment_compose_gives_it(compose_file: dict[str, Any], spec: ServiceSpec) -> None:
    env = environment_of(container_of(spec))
    in_compose = dict(compose_file["services"][spec.name]["environment"])
    # The one difference: compose takes the OTLP endpoint from the host, here the tracing
    # ConfigMap holds it (empty; the tracing component sets Jaeger's).
    assert in_compose.pop("OTEL_EXPORTER_OTLP_ENDPOINT") == compose.OTLP_ENDPOINT
    assert env.pop("OTEL_EXPORTER_OTLP_ENDPOINT") == ""
    assert env == in_compose
    assert all(k.startswith(spec.env_prefix) for k in env if not k.startswith("OTEL_"))
    assert env[f"{spec.env_prefix}GATEWAY_URL"] == f"http://{GATEWAY.name}:{GATEWAY.port}"


def _demo_secrets() -> set[str]:
    return {p.api_key for p in DEMO_PARTICIPANTS} | set(SERVICE_PARTICIPANT_KEYS.values()) | {DEMO_REGULATOR_KEY}


def test_keys_and_database_urls_are_in_demo_secrets_never_in_config_maps() -> None:
    secrets = _demo_secrets()
    for _, obj in objects():
        if obj["kind"] == "ConfigMap":
            for key, value in obj.get("data", {}).items():
                assert value not in secrets and "postgresql://" not in value, f"{obj['metadata']['name']}: {key}"
        if obj["kind"] == "Secret":
            assert obj["metadata"]["annotations"]["fintech-sandbox/demo-values"] == "true"
    assert k8s.DEMO_WARNING in (k8s.K8S_DIR / "base" / "secrets.yaml").read_text(encoding="utf-8")
    for spec in SPECS:
        secret = base("Secret", k8s.secret_name(spec))["stringData"]
        if spec.has_database:
            assert f"{spec.env_prefix}DATABASE_URL" in secret
        if spec.name in SERVICE_PARTICIPANT_KEYS:
            assert secret[f"{spec.env_prefix}PARTICIPANT_KEY"] == SERVICE_PARTICIPANT_KEYS[spec.name]
        others = {k8s.secret_name(o) for o in SPECS if o is not spec}
        refs = {s["secretRef"]["name"] for s in container_of(spec)["envFrom"] if "secretRef" in s}
        assert refs == {k8s.secret_name(spec)} and not refs & others  # no process reads another's keys


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_probes_ask_readyz_for_traffic_and_healthz_for_life_on_the_containers_port(spec: ServiceSpec) -> None:
    container = container_of(spec)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == spec.port


def _service_ports() -> dict[str, set[int]]:
    return {o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]} for _, o in objects() if o["kind"] == "Service"}


def _assert_reaches_a_service(url: str, expected: ServiceSpec) -> None:
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname == expected.name and parts.port == expected.port, url
    assert parts.port in _service_ports()[parts.hostname], f"{url}: no Service {parts.hostname} on {parts.port}"


def test_the_gateway_and_the_console_reach_every_process_by_its_service_name() -> None:
    gateway_env = environment_of(container_of(GATEWAY))
    upstreams = {k: v for k, v in gateway_env.items() if k.startswith("GATEWAY_UPSTREAM_")}
    services = [s for s in SPECS if s.kind == "service"]
    assert set(upstreams) == {f"GATEWAY_UPSTREAM_{s.name.upper()}" for s in services}
    for spec in services:
        _assert_reaches_a_service(upstreams[f"GATEWAY_UPSTREAM_{spec.name.upper()}"], spec)
    for spec in SPECS:
        _assert_reaches_a_service(environment_of(container_of(spec))[f"{spec.env_prefix}GATEWAY_URL"], GATEWAY)
    console_urls = json.loads(environment_of(container_of(CONSOLE))["CONSOLE_SERVICE_URLS"])
    assert set(console_urls) == {s.name for s in SPECS if s.has_api}
    for name, url in console_urls.items():
        _assert_reaches_a_service(url, next(s for s in SPECS if s.name == name))


def test_start_up_waits_on_readiness_as_compose_does(compose_file: dict[str, Any]) -> None:
    for spec in SPECS:
        inits = {c["name"]: c for c in pod_of(base("Deployment", spec.name)).get("initContainers", [])}
        assert ("wait-for-database" in inits) == spec.has_database
        if spec.has_database:
            waits = environment_of(inits["wait-for-database"])["DATABASE_URL"]
            assert waits == environment_of(container_of(spec))[f"{spec.env_prefix}DATABASE_URL"]
        ready = environment_of(inits["wait-for-ready"])["READY_URLS"].split() if "wait-for-ready" in inits else []
        # compose: depends_on with service_healthy, whose healthcheck is /readyz
        expected = sorted(n for n in compose_file["services"][spec.name]["depends_on"] if n != "postgres")
        assert sorted(urlsplit(u).hostname for u in ready) == expected
        for url in ready:
            assert urlsplit(url).path == "/readyz"
            _assert_reaches_a_service(url, next(s for s in SPECS if s.name == urlsplit(url).hostname))


def test_hpas_scale_only_processes_that_keep_nothing_in_memory() -> None:
    hpas = [o for _, o in objects() if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpas, "no HorizontalPodAutoscaler: the console at least scales out"
    deployments = {o["metadata"]["name"] for _, o in objects() if o["kind"] == "Deployment"}
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["apiVersion"] == "apps/v1"
        assert target["name"] in deployments, f"HPA {hpa['metadata']['name']} targets no Deployment"
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in hpas}
    assert len(scaled) == len(hpas)  # one HPA per Deployment at most
    for spec in SPECS:
        deployment = base("Deployment", spec.name)["spec"]
        if k8s.scales_out(spec):
            assert spec.name in scaled
            assert "replicas" not in deployment  # the HPA's to set; an apply would reset it
            assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        else:  # in-process state (k8s.SCALES_OUT): one replica, never two side by side
            assert spec.name not in scaled
            assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    assert k8s.scales_out(CONSOLE) and k8s.scales_out(GATEWAY)


def test_postgres_has_one_database_per_service_as_compose_does(compose_file: dict[str, Any]) -> None:
    sql = base("ConfigMap", "postgres-init")["data"]["init.sql"]
    created = re.findall(r"^CREATE DATABASE (\w+);$", sql, flags=re.MULTILINE)
    in_compose = re.findall(r"^CREATE DATABASE (\w+);$", compose.POSTGRES_INIT.read_text(encoding="utf-8"),
                            flags=re.MULTILINE)
    assert sorted(created) == sorted(in_compose) == sorted(s.name for s in SPECS if s.has_database)
    statefulset = base("StatefulSet", "postgres")
    service = base("Service", "postgres")
    assert statefulset["spec"]["serviceName"] == "postgres" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    pod = pod_of(statefulset)
    container = pod["containers"][0]
    assert container["image"] == compose_file["services"]["postgres"]["image"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {v["name"]: v["configMap"]["name"] for v in pod["volumes"]}[mounts["/docker-entrypoint-initdb.d"]] == "postgres-init"
    assert mounts["/var/lib/postgresql/data"] in {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    password = environment_of(container)["POSTGRES_PASSWORD"]
    assert password == compose_file["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    for spec in SPECS:
        env = environment_of(container_of(spec))
        if spec.has_database:
            assert env[f"{spec.env_prefix}DATABASE_URL"] == f"postgresql://postgres:{password}@postgres:5432/{spec.name}"
        else:  # the console keeps nothing
            assert f"{spec.env_prefix}DATABASE_URL" not in env
    assert any("pg_isready" in " ".join(container[p]["exec"]["command"]) for p in ("readinessProbe", "livenessProbe"))


@pytest.mark.parametrize("resources", [k8s.APP_RESOURCES, k8s.LOCAL_APP_RESOURCES], ids=["base", "local"])
def test_requests_cover_the_measured_idle_memory_and_limits_leave_room(resources: dict[str, Any]) -> None:
    for spec in SPECS:
        idle_on_postgres = k8s.IDLE_RSS_MIB[spec.name] + 10  # docs/payments.md: PostgreSQL's driver adds ~10 MiB
        assert mib(resources["requests"]["memory"]) >= idle_on_postgres, spec.name
        assert mib(resources["limits"]["memory"]) >= 2 * k8s.IDLE_RSS_MIB[spec.name], spec.name
        assert millicores(resources["requests"]["cpu"]) > 0
        assert millicores(resources["limits"]["cpu"]) <= 1000  # one uvicorn worker: one core at most
    for spec in SPECS:
        assert container_of(spec)["resources"] == k8s.APP_RESOURCES
    # Six processes at idle fit a laptop's kind node: what the local overlay asks for in all.
    total = sum(mib(k8s.LOCAL_APP_RESOURCES["requests"]["memory"]) for _ in SPECS)
    total += mib(k8s.LOCAL_POSTGRES_RESOURCES["requests"]["memory"])
    assert total <= 1024


def test_jaeger_is_an_optional_component_with_composes_image_and_ports(compose_file: dict[str, Any]) -> None:
    prefix = f"{k8s.TRACING_COMPONENT}/"
    jaeger, service = _find("Deployment", "jaeger", prefix), _find("Service", "jaeger", prefix)
    container = pod_of(jaeger)["containers"][0]
    in_compose = compose_file["services"]["jaeger"]
    assert container["image"] == in_compose["image"]
    assert {e["name"]: e["value"] for e in container["env"]} == in_compose["environment"]
    assert {p["port"] for p in service["spec"]["ports"]} == {int(p.split(":")[1]) for p in in_compose["ports"]}
    endpoint = urlsplit(k8s.OTLP_ENDPOINT)
    assert endpoint.hostname == "jaeger" and endpoint.port in _service_ports()["jaeger"]
    assert pod_of(jaeger)["enableServiceLinks"] is False  # JAEGER_PORT=tcp://… would confuse its own settings
    assert not any(p.startswith(prefix) for p, _ in objects() if p.startswith("base/"))
    assert "components" not in tree()[f"{k8s.LOCAL_OVERLAY}/kustomization.yaml"][0]  # opt-in, as compose's profile
