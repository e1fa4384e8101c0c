"""Export every built service's OpenAPI document to openapi/<service>.json, and the participant's
contract at the gateway to openapi/sandbox.json (tests/platform check both for drift)."""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from sandbox.participant_contract import ServiceContract, participant_contract, screened_by_gateway
from sandbox.topology import ServiceSpec, api_services

OPENAPI_DIR = Path(__file__).resolve().parent.parent / "openapi"
PARTICIPANT_FILE = "sandbox.json"  # what participants call at the gateway (sandbox/participant_contract.py)


@contextmanager
def scratch_env(spec: ServiceSpec) -> Iterator[None]:
    """Build an app against a throwaway data folder with no demo data: the contract must not
    depend on what a database holds."""
    with tempfile.TemporaryDirectory(prefix=f"openapi-{spec.name}-") as tmp:
        overrides = {f"{spec.env_prefix}DATA_DIR": tmp, f"{spec.env_prefix}SEED_DEMO_DATA": "false"}
        saved = {k: os.environ.get(k) for k in overrides}
        os.environ.update(overrides)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def load_factory(spec: ServiceSpec):  # type: ignore[no-untyped-def]
    module, _, name = spec.app.partition(":")
    return getattr(importlib.import_module(module), name)


def build_app(spec: ServiceSpec) -> FastAPI:
    with scratch_env(spec):
        return load_factory(spec)()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def participant_document(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """openapi/sandbox.json from the services' documents (by service name), as the gateway serves them."""
    services = [ServiceContract(spec.name, spec.gateway_prefix, documents[spec.name])
                for spec in api_services() if spec.kind == "service"]
    return participant_contract(services, screened_by_gateway(), gateway=documents.get("gateway"))


def export(out_dir: Path = OPENAPI_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    documents = {}
    for spec in api_services():  # the console is a UI: no document of its own
        path = out_dir / f"{spec.name}.json"
        documents[spec.name] = build_app(spec).openapi()
        path.write_text(render(documents[spec.name]), encoding="utf-8")
        written.append(path)
    path = out_dir / PARTICIPANT_FILE
    path.write_text(render(participant_document(documents)), encoding="utf-8")
    written.append(path)
    return written
