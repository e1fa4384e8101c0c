"""Every path a service documents, asked with a method it does not serve, answers 405 with an
`Allow` header listing exactly the documented methods and words naming them: problem+json's
`detail`, or (open banking speaks OBIE's errors, not RFC 9457) the `OBErrorResponse1` message.
On each service's own app (the gateway's /sandbox routes included) and through the real gateway,
as a participant, for every proxied path of openapi/sandbox.json. HEAD and OPTIONS are asked
too: each is 405 wherever Allow leaves it out."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sandbox.contracts import OPENAPI_DIR, PARTICIPANT_FILE, load_factory, scratch_env
from sandbox.topology import api_services
from services.common.problems import PROBLEM_MEDIA_TYPE
from tests.support.gateway_fuzz import admit_fuzz_participant, sandbox_in_process

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
OBIE_PREFIXES = ("/open-banking/",)  # at the gateway; on its own app every path is the bank's


def documented_methods(document: dict[str, Any]) -> dict[str, set[str]]:
    """{concrete path: methods served there}, a placeholder for each path parameter; a concrete
    path several templates match is served by all of them."""
    templates = {path: {m.upper() for m in item if m.upper() in METHODS} for path, item in document["paths"].items()}
    patterns = {path: re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$") for path in templates}
    served: dict[str, set[str]] = {}
    for path in templates:
        concrete = re.sub(r"\{[^}]+\}", "x1", path)
        served[concrete] = set().union(*(templates[t] for t, p in patterns.items() if p.match(concrete)))
    return served


def unserved_calls(document: dict[str, Any]) -> Iterator[tuple[str, str, set[str]]]:
    for path, allowed in documented_methods(document).items():
        for method in METHODS:
            if method not in allowed:
                yield method, path, allowed


def speaks_obie(path: str) -> bool:
    return path.startswith(OBIE_PREFIXES)


def check_405(response: httpx.Response, method: str, path: str, allowed: set[str], *, obie: bool = False) -> list[str]:
    """What is wrong with this answer (nothing when it is right)."""
    where = f"{method} {path}"
    if response.status_code != 405:
        return [f"{where}: {response.status_code}, not 405"]
    problems = []
    media_type = "application/json" if obie else PROBLEM_MEDIA_TYPE
    if response.headers.get("content-type") != media_type:
        problems.append(f"{where}: content-type {response.headers.get('content-type')!r}")
    allow = {m.strip() for m in response.headers.get("allow", "").split(",") if m.strip()}
    if allow != allowed:
        problems.append(f"{where}: Allow {response.headers.get('allow')!r}, serves {sorted(allowed)}")
    if method != "HEAD":  # a HEAD answer has no body
        body = response.json()
        detail = body["Errors"][0]["Message"] if obie else body.get("detail", "")
        if ", ".join(sorted(allowed)) not in detail or "use one of them" not in detail:
            problems.append(f"{where}: detail {detail!r}")
    return problems


@pytest.mark.parametrize("spec", api_services(), ids=lambda spec: spec.name)
def test_each_service_answers_a_method_it_does_not_serve_with_405_and_allow(spec) -> None:  # type: ignore[no-untyped-def]
    with scratch_env(spec):
        app = load_factory(spec)()
        with TestClient(app) as client:
            calls = list(unserved_calls(app.openapi()))
            wrong = [p for method, path, allowed in calls
                     for p in check_405(client.request(method, path), method, path, allowed,
                                        obie=spec.name == "openbanking")]
    assert len(calls) > 20
    assert wrong == []


def test_through_the_gateway_a_services_405_keeps_its_allow_and_detail(tmp_path: Path) -> None:
    contract = json.loads((OPENAPI_DIR / PARTICIPANT_FILE).read_text(encoding="utf-8"))
    calls = list(unserved_calls(contract))
    with sandbox_in_process(tmp_path) as base:
        _, key = admit_fuzz_participant(base, name="Method Checker")
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
            wrong = [p for method, path, allowed in calls
                     for p in check_405(client.request(method, path), method, path, allowed, obie=speaks_obie(path))]
            # The issue's own example, and one on the gateway's own routes, as a participant calls them.
            accounts = client.delete("/payments/accounts")
            participants = client.put("/sandbox/participants")
    # Every service's routes, and the gateway's own participant routes (events, webhooks).
    assert {prefix for _, path, _ in calls for prefix in [path.split("/")[1]]} == {
        "payments", "credit", "advisor", "open-banking", "events", "webhooks"}
    assert wrong == []
    assert accounts.headers["allow"] == "GET, POST"
    assert accounts.json()["detail"] == "DELETE is not allowed here; this path allows GET, POST: use one of them."
    assert participants.status_code == 405 and participants.headers["allow"] == "GET, POST"
