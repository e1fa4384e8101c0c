"""Generate the Kubernetes manifests in deploy/k8s/ from sandbox/topology.py, as
docker-compose.yml is generated: a kustomize base, an optional tracing component (Jaeger) and
overlays for a local kind cluster. `fintech-sandbox k8s` writes them, `--check` fails when the
committed files drifted; tests/platform/test_k8s.py validates them against the Kubernetes schemas.

Every process gets the environment compose gives it (the Services carry the compose service
names, so `http://payments:8001` and `postgres:5432` mean the same in both), split in two:
settings in a ConfigMap, keys and database URLs in a Secret (demo values, published in the
README, as compose's are)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from sandbox import compose
from sandbox.server import GRACEFUL_SHUTDOWN_S, uvicorn_args
from sandbox.topology import GATEWAY, ServiceSpec, SpecKind, built_services, environment

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
IMAGE = "fintech-sandbox:local"  # the image compose builds; `kind load docker-image` puts it on the nodes
NAMESPACE = "fintech-sandbox"  # set by the overlays; the base has none, so it can go anywhere
PART_OF = "fintech-sandbox"
HEADER = (
    "# Generated from sandbox/topology.py by `make k8s`: edit the topology or sandbox/k8s.py, not this file.\n"
    "# tests/platform/test_k8s.py fails when the two disagree.\n"
)
DEMO_WARNING = (
    "# DEMO VALUES ONLY: the sandbox's published demo keys and PostgreSQL password (README.md), the\n"
    "# same as docker-compose.yml's. Anyone can read them; never reuse them outside a sandbox.\n"
)
DEMO_ANNOTATION = {"fintech-sandbox/demo-values": "true"}

# Which processes may run more than one replica. The console keeps nothing of its own. The
# gateway's state is its audit log's projection, and each replica catches up the others' entries
# before it decides (sandbox/gateway/shared.py; tests/faults/test_replicas.py runs two on one
# PostgreSQL database): an HPA scales both. Every service still keeps its clock in memory
# (services/common/clock.py: a lesson's clock move would reach one replica of it), so services run
# one replica each, replaced with Recreate (a rolling update runs the old and the new pod side by
# side). Flip "service" once their clocks live in their databases: they get an HPA and rolling
# updates, and tests/platform/test_k8s.py follows.
SCALES_OUT: dict[SpecKind, bool] = {"console": True, "gateway": True, "service": False}
HPA_MAX_REPLICAS = 3
HPA_CPU_UTILIZATION = 70  # % of the CPU request

# Settings that are keys or carry the database password go to the Secret; the rest to the ConfigMap.
SECRET_SETTINGS = ("DATABASE_URL", "PARTICIPANT_KEY", "REGULATOR_KEY")
POSTGRES_PASSWORD = "sandbox"  # compose's: every <PREFIX>DATABASE_URL carries it
TRACING_CONFIG = "tracing-config"  # the ConfigMap with OTEL_EXPORTER_OTLP_ENDPOINT, shared by every process
OTLP_ENDPOINT = "http://jaeger:4318"  # the tracing component's (compose's, given on the host)

# Idle resident memory (MiB) measured with the launcher on SQLite (sandbox.bench.payments'
# sandbox_idle_rss, 2026-12, 654 MiB in all with the launcher's 70); on PostgreSQL about 10 MiB
# more (docs/payments.md), and payments stays under 100 MiB through its benchmark. One uvicorn
# worker uses one core at most. Requests sit above idle, limits leave room for load; the local
# overlay asks for less, for a laptop. tests/platform/test_k8s.py holds them to these figures.
IDLE_RSS_MIB = {"gateway": 117, "payments": 92, "credit": 92, "advisor": 104, "openbanking": 93, "console": 87}
APP_RESOURCES = {"requests": {"cpu": "100m", "memory": "160Mi"}, "limits": {"cpu": "1", "memory": "384Mi"}}
LOCAL_APP_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}
# PostgreSQL 16 with its default 128 MB of shared buffers, one database per service.
POSTGRES_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
LOCAL_POSTGRES_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
POSTGRES_STORAGE = "1Gi"
INIT_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "96Mi"}}
# Jaeger all-in-one keeps traces in memory.
JAEGER_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}

LOCAL_OVERLAY = "overlays/local"
LOCAL_TRACING_OVERLAY = "overlays/local-tracing"
TRACING_COMPONENT = "components/tracing"


# -- what each process runs with ----------------------------------------------------------------

def labels(app: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": PART_OF}


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def metadata(name: str, component: str, app: str | None = None, **extra: Any) -> dict[str, Any]:
    """An object's name and labels; `app` is the process it belongs to (default: its name)."""
    return {"name": name, "labels": labels(app or name, component), **extra}


def is_secret(spec: ServiceSpec, key: str) -> bool:
    return key.removeprefix(spec.env_prefix) in SECRET_SETTINGS


def settings(spec: ServiceSpec) -> tuple[dict[str, str], dict[str, str]]:
    """(ConfigMap data, Secret data) of a process: compose's environment, keys sorted. In both,
    each process reaches the others by their service names."""
    env = environment(spec, compose=True)
    env["OTEL_SERVICE_NAME"] = compose.tracing_environment(spec)["OTEL_SERVICE_NAME"]
    config = {k: v for k, v in sorted(env.items()) if not is_secret(spec, k)}
    secret = {k: v for k, v in sorted(env.items()) if is_secret(spec, k)}
    return config, secret


def config_name(spec: ServiceSpec) -> str:
    return f"{spec.name}-config"


def secret_name(spec: ServiceSpec) -> str:
    return f"{spec.name}-secrets"


def scales_out(spec: ServiceSpec) -> bool:
    return SCALES_OUT[spec.kind]


# -- start-up order: compose's depends_on, as init containers -----------------------------------

WAIT_FOR_DATABASE = """\
import os, time
import psycopg
for attempt in range(150):
    try:
        psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=2).close()
        break
    except psycopg.OperationalError as exc:
        print("waiting for the database:", str(exc).strip(), flush=True)
        time.sleep(2)
else:
    raise SystemExit("the database did not answer in 5 minutes")
"""

WAIT_FOR_READY = """\
import os, time, urllib.request
for url in os.environ["READY_URLS"].split():
    for attempt in range(150):
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError as exc:
            print("waiting for", url, exc, flush=True)
            time.sleep(2)
    else:
        raise SystemExit(url + " was not ready in 5 minutes")
"""


def ready_urls(spec: ServiceSpec, specs: list[ServiceSpec]) -> list[str]:
    """The /readyz a process waits for before it starts, as compose orders start-up: the gateway
    opens once every service behind it is ready, the console once the gateway is."""
    if spec is GATEWAY:
        return [f"http://{s.name}:{s.port}/readyz" for s in specs if s.kind == "service"]
    if spec.kind == "console":
        return [f"http://{GATEWAY.name}:{GATEWAY.port}/readyz"]
    return []


def _init_container(name: str, script: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": ["python", "-c", script], "env": env,
            "resources": INIT_RESOURCES, "securityContext": CONTAINER_SECURITY}


def init_containers(spec: ServiceSpec, specs: list[ServiceSpec]) -> list[dict[str, Any]]:
    containers = []
    if spec.has_database:
        url = {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {
            "name": secret_name(spec), "key": f"{spec.env_prefix}DATABASE_URL"}}}
        containers.append(_init_container("wait-for-database", WAIT_FOR_DATABASE, [url]))
    urls = ready_urls(spec, specs)
    if urls:
        containers.append(_init_container("wait-for-ready", WAIT_FOR_READY,
                                          [{"name": "READY_URLS", "value": " ".join(urls)}]))
    return containers


# -- objects --------------------------------------------------------------------------------------

CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# The image's `sandbox` user (the Dockerfile's useradd: the first uid, 1000).
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}}


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period_s, "timeoutSeconds": 3,
            "failureThreshold": failures}


def app_container(spec: ServiceSpec) -> dict[str, Any]:
    env_from: list[dict[str, Any]] = [{"configMapRef": {"name": config_name(spec)}},
                                      {"configMapRef": {"name": TRACING_CONFIG}}]
    if settings(spec)[1]:
        env_from.append({"secretRef": {"name": secret_name(spec)}})
    return {
        "name": spec.name,
        "image": IMAGE,
        "command": ["uvicorn", *uvicorn_args(spec, "0.0.0.0", spec.port)],
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "envFrom": env_from,
        # Alive: /healthz; ready for traffic (its database reachable): /readyz. The start-up
        # probe gives a cold start (imports, migrations, the demo seed) two minutes before
        # liveness counts, about what compose's healthcheck allows (10 s, then 20 tries 5 s apart).
        "startupProbe": _probe("/healthz", 2, 60),
        "readinessProbe": _probe("/readyz", 5, 3),
        "livenessProbe": _probe("/healthz", 10, 3),
        "resources": APP_RESOURCES,
        "securityContext": CONTAINER_SECURITY,
    }


def deployment(spec: ServiceSpec, specs: list[ServiceSpec]) -> dict[str, Any]:
    pod: dict[str, Any] = {
        # No <SERVICE>_PORT=tcp://… variables: they would fall under the processes' own prefixes
        # (a Service named gateway gives GATEWAY_PORT, GATEWAY_SERVICE_HOST, ...).
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY,
        "terminationGracePeriodSeconds": GRACEFUL_SHUTDOWN_S + 5,  # uvicorn's graceful shutdown, then some
    }
    inits = init_containers(spec, specs)
    if inits:
        pod["initContainers"] = inits
    pod["containers"] = [app_container(spec)]
    body: dict[str, Any] = {}
    if scales_out(spec):  # its HPA sets the count; a replicas field here would undo it on every apply
        body["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    else:
        body["replicas"] = 1
        body["strategy"] = {"type": "Recreate"}
    body.update({
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": selector(spec.name)},
        "template": {"metadata": {"labels": labels(spec.name, spec.kind)}, "spec": pod},
    })
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(spec.name, spec.kind),
            "spec": body}


def service(spec: ServiceSpec) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(spec.name, spec.kind),
            "spec": {"selector": selector(spec.name),
                     "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}]}}


def config_map(spec: ServiceSpec) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(config_name(spec), spec.kind, spec.name),
            "data": settings(spec)[0]}


def tracing_config() -> dict[str, Any]:
    # Empty: trace ids only, nothing exported (as compose without the tracing profile). The
    # tracing component sets it to Jaeger's OTLP endpoint.
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(TRACING_CONFIG, "tracing", "jaeger"),
            "data": {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}}


def secret(spec: ServiceSpec) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": metadata(secret_name(spec), spec.kind, spec.name, annotations=DEMO_ANNOTATION),
            "type": "Opaque", "stringData": settings(spec)[1]}


def hpa(spec: ServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec.name, spec.kind),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": 1,
            "maxReplicas": HPA_MAX_REPLICAS,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": HPA_CPU_UTILIZATION}}}],
        },
    }


# -- PostgreSQL: one database per service, as compose's ----------------------------------------

def postgres_init_sql(specs: list[ServiceSpec]) -> str:
    lines = ["-- Generated by `make k8s`: one database per service (as docker/postgres-init.sql)."]
    lines += [f"CREATE DATABASE {spec.name};" for spec in specs if spec.has_database]
    return "\n".join(lines) + "\n"


def postgres(specs: list[ServiceSpec]) -> list[dict[str, Any]]:
    name, component = "postgres", "database"
    ready = ["pg_isready", "-U", "postgres", "-h", "127.0.0.1"]  # TCP: the init scripts' server has none
    container = {
        "name": name,
        "image": compose.document()["services"]["postgres"]["image"],  # compose's
        "env": [
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "postgres-secrets",
                                                                         "key": "POSTGRES_PASSWORD"}}},
            # A subdirectory: a fresh volume may hold lost+found, and initdb wants an empty directory.
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": 5432, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ready}, "periodSeconds": 2, "timeoutSeconds": 3,
                           "failureThreshold": 3},
        "livenessProbe": {"exec": {"command": ready}, "initialDelaySeconds": 30, "periodSeconds": 10,
                          "timeoutSeconds": 5, "failureThreshold": 6},
        "resources": POSTGRES_RESOURCES,
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                         {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True}],
    }
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata("postgres-init", component, name),
         "data": {"init.sql": postgres_init_sql(specs)}},
        # Headless: the StatefulSet's governing Service. `postgres` resolves to the pod once it is
        # ready, as in every <PREFIX>DATABASE_URL.
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata(name, component),
         "spec": {"clusterIP": "None", "selector": selector(name),
                  "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres", "protocol": "TCP"}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(name, component),
         "spec": {
             "serviceName": name,
             "replicas": 1,
             "selector": {"matchLabels": selector(name)},
             "template": {"metadata": {"labels": labels(name, component)},
                          "spec": {"enableServiceLinks": False, "containers": [container],
                                   "volumes": [{"name": "init", "configMap": {"name": "postgres-init"}}]}},
             "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                 "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": POSTGRES_STORAGE}}}}],
         }},
    ]


def postgres_secret() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": metadata("postgres-secrets", "database", "postgres", annotations=DEMO_ANNOTATION),
            "type": "Opaque", "stringData": {"POSTGRES_PASSWORD": POSTGRES_PASSWORD}}


# -- Jaeger (the tracing component): compose's `tracing` profile --------------------------------

def jaeger() -> list[dict[str, Any]]:
    name, component = "jaeger", "tracing"
    ports = {"ui": 16686, "otlp-http": 4318, "admin": 14269}  # compose publishes the first two
    container = {
        "name": name,
        "image": compose.JAEGER["image"],
        "env": [{"name": k, "value": v} for k, v in compose.JAEGER["environment"].items()],
        "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"} for port_name, port in ports.items()],
        "readinessProbe": {"httpGet": {"path": "/", "port": "admin"}, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {"httpGet": {"path": "/", "port": "admin"}, "periodSeconds": 10, "timeoutSeconds": 3},
        "resources": JAEGER_RESOURCES,
        "securityContext": CONTAINER_SECURITY,
    }
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata(name, component),
         "spec": {"selector": selector(name), "ports": [
             {"name": port_name, "port": ports[port_name], "targetPort": port_name, "protocol": "TCP"}
             for port_name in ("ui", "otlp-http")]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(name, component),
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "revisionHistoryLimit": 3,
                  "selector": {"matchLabels": selector(name)},
                  "template": {"metadata": {"labels": labels(name, component)},
                               "spec": {"enableServiceLinks": False, "containers": [container]}}}},
    ]


# -- the tree -----------------------------------------------------------------------------------

def kustomization(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}


def _local_patch(obj: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch of one workload for kind: images loaded onto the node (never
    pulled), and smaller requests."""
    spec = obj["spec"]["template"]["spec"]
    patch_pod: dict[str, Any] = {}
    if spec.get("initContainers"):
        patch_pod["initContainers"] = [{"name": c["name"], "imagePullPolicy": "IfNotPresent"}
                                       for c in spec["initContainers"]]
    patch_pod["containers"] = [{"name": c["name"], "imagePullPolicy": "IfNotPresent", "resources": resources}
                               for c in spec["containers"]]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {"name": obj["metadata"]["name"]},
            "spec": {"template": {"spec": patch_pod}}}


def documents() -> dict[str, list[Any]]:
    """Every file of deploy/k8s/ (a path relative to it) and the documents it holds, in order."""
    specs = built_services()
    files: dict[str, list[Any]] = {
        "base/config.yaml": [*(config_map(spec) for spec in specs), tracing_config()],
        "base/secrets.yaml": [*(secret(spec) for spec in specs if settings(spec)[1]), postgres_secret()],
        "base/postgres.yaml": postgres(specs),
    }
    for spec in specs:
        files[f"base/{spec.name}.yaml"] = [deployment(spec, specs), service(spec)]
    scaled = [hpa(spec) for spec in specs if scales_out(spec)]
    if scaled:
        files["base/hpa.yaml"] = scaled
    base_files = sorted(path.removeprefix("base/") for path in files)
    files["base/kustomization.yaml"] = [kustomization(resources=base_files)]

    files[f"{TRACING_COMPONENT}/jaeger.yaml"] = jaeger()
    # A JSON patch (RFC 6902): the component's only change to the base.
    files[f"{TRACING_COMPONENT}/otlp-endpoint.yaml"] = [[
        {"op": "replace", "path": "/data/OTEL_EXPORTER_OTLP_ENDPOINT", "value": OTLP_ENDPOINT}]]
    files[f"{TRACING_COMPONENT}/kustomization.yaml"] = [{
        "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
        "resources": ["jaeger.yaml"],
        "patches": [{"path": "otlp-endpoint.yaml", "target": {"version": "v1", "kind": "ConfigMap",
                                                              "name": TRACING_CONFIG}}],
    }]

    workloads = [*(deployment(spec, specs) for spec in specs), postgres(specs)[-1]]
    patches = []
    for obj in workloads:
        resources = LOCAL_POSTGRES_RESOURCES if obj["kind"] == "StatefulSet" else LOCAL_APP_RESOURCES
        path = f"patches/{obj['metadata']['name']}.yaml"
        files[f"{LOCAL_OVERLAY}/{path}"] = [_local_patch(obj, resources)]
        patches.append({"path": path})
    files[f"{LOCAL_OVERLAY}/namespace.yaml"] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {
            "app.kubernetes.io/part-of": PART_OF}}}]
    files[f"{LOCAL_OVERLAY}/kustomization.yaml"] = [kustomization(
        namespace=NAMESPACE, resources=["namespace.yaml", "../../base"], patches=patches)]
    files[f"{LOCAL_TRACING_OVERLAY}/kustomization.yaml"] = [kustomization(
        namespace=NAMESPACE, resources=["../local"], components=[f"../../{TRACING_COMPONENT}"])]
    return dict(sorted(files.items()))


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (the init scripts, the SQL), so the files read as
    written; no anchors and aliases for the settings several containers share."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> dict[str, str]:
    """Every file of deploy/k8s/ (a path relative to it) and its text."""
    texts = {}
    for path, docs in documents().items():
        header = HEADER + (DEMO_WARNING if path.endswith("secrets.yaml") else "")
        body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=120, explicit_start=len(docs) > 1)
        texts[path] = header + body
    return texts


def drift(root: Path = K8S_DIR) -> list[str]:
    """The files under `root` that differ from what the topology generates, or are missing, or
    are left over (every .yaml file there is generated)."""
    rendered = render()
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.yaml")} if root.is_dir() else set()
    stale = sorted(on_disk - set(rendered))
    changed = [path for path, text in rendered.items()
               if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text]
    return sorted(changed + stale)


def write(root: Path = K8S_DIR) -> list[Path]:
    """Write the tree under `root`, removing generated files the topology no longer has."""
    rendered = render()
    if root.is_dir():
        for old in root.rglob("*.yaml"):
            if old.relative_to(root).as_posix() not in rendered:
                old.unlink()
    written = []
    for path, text in rendered.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def main(check: bool = False) -> int:
    """`fintech-sandbox k8s`: write deploy/k8s/; with `check`, only say whether it is in sync."""
    if check:
        stale = drift()
        for path in stale:
            print(f"out of sync: deploy/k8s/{path}", file=sys.stderr)
        if stale:
            print("run `make k8s` (fintech-sandbox k8s) and commit deploy/k8s/", file=sys.stderr)
            return 1
        print(f"deploy/k8s is what sandbox/topology.py generates ({len(render())} files)")
        return 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0
