"""Contracts of every built service: the committed OpenAPI file matches the code, and
schemathesis fuzzes every operation in-process with every check, statelessly and following
the OpenAPI links (its stateful phase)."""

from __future__ import annotations

import atexit
import importlib
import itertools
import shutil
import tempfile
from functools import cache
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sandbox.contracts import OPENAPI_DIR, load_factory, render
from sandbox.topology import ServiceSpec, api_services
from tests.support.resettable import ResettableApp

SERVICES = api_services()  # the console is a UI: no contract to keep
MAX_EXAMPLES = 40
STATEFUL_EXAMPLES = 15
HYPOTHESIS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_committed_openapi_matches_the_code(spec: ServiceSpec) -> None:
    committed = OPENAPI_DIR / f"{spec.name}.json"
    assert committed.exists(), f"missing {committed}; run `make openapi`"
    assert committed.read_text(encoding="utf-8") == render(_app(spec).openapi()), (
        f"{committed} drifted from the code; run `make openapi` and commit the result"
    )


_scratch = Path(tempfile.mkdtemp(prefix="contracts-"))
atexit.register(shutil.rmtree, _scratch, True)


@cache
def _app(spec: ServiceSpec):  # type: ignore[no-untyped-def]
    """Each service as its launcher would build it, with demo data, on a scratch SQLite file."""
    import os

    os.environ[f"{spec.env_prefix}DATA_DIR"] = str(_scratch / spec.name)
    return load_factory(spec)()


def _headers(spec: ServiceSpec) -> dict[str, str]:
    return _headers_for(spec, _app(spec))


@cache
def _headers_for(spec: ServiceSpec, app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Headers a service needs to be reached at all (a token, a key): tests/<name>/contract_hooks.py."""
    try:
        hooks = importlib.import_module(f"tests.{spec.name}.contract_hooks")
    except ModuleNotFoundError:
        return {}
    return hooks.prepare(app)


def _fuzzed(spec: ServiceSpec, schema):  # type: ignore[no-untyped-def]
    """The operations fuzzed in process: all but those the service's hooks exclude (with why)."""
    try:
        hooks = importlib.import_module(f"tests.{spec.name}.contract_hooks")
    except ModuleNotFoundError:
        return schema
    excluded = getattr(hooks, "EXCLUDED_OPERATIONS", ())
    return schema.exclude(operation_id=list(excluded)) if excluded else schema


def _stateless_test(spec: ServiceSpec):  # type: ignore[no-untyped-def]
    schema = _fuzzed(spec, schemathesis.openapi.from_asgi("/openapi.json", _app(spec)))

    @schema.parametrize()
    @settings(max_examples=MAX_EXAMPLES, **HYPOTHESIS)
    def test(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(headers=_headers(spec))

    return test


def _stateful_test(spec: ServiceSpec):  # type: ignore[no-untyped-def]
    # Each stateful example starts on a fresh service, so hypothesis can replay it exactly.
    fresh = itertools.count()

    def build():  # type: ignore[no-untyped-def]
        import os

        os.environ[f"{spec.env_prefix}DATA_DIR"] = str(_scratch / f"{spec.name}-stateful-{next(fresh)}")
        return load_factory(spec)()

    app = ResettableApp(build)
    schema = _fuzzed(spec, schemathesis.openapi.from_asgi("/openapi.json", app))
    machine = schema.as_state_machine()

    class Workflow(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            app.reset()

        def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
            return {"headers": _headers_for(spec, app.current)}

    Workflow.TestCase.settings = settings(
        max_examples=STATEFUL_EXAMPLES, stateful_step_count=10, database=None, **HYPOTHESIS
    )
    return Workflow.TestCase


for _spec in SERVICES:
    globals()[f"test_schemathesis_{_spec.name}"] = _stateless_test(_spec)
    globals()[f"TestStateful_{_spec.name}"] = _stateful_test(_spec)
