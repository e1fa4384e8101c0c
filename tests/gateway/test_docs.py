"""The gateway's /docs show the participant's contract: `/sandbox.json` is what `make openapi`
writes to openapi/sandbox.json, built from the running services' documents, with the gateway's
own address (any port offset) as its server; its own regulator document keeps /openapi.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sandbox.contracts import build_app, participant_document
from sandbox.participant_contract import SERVER
from sandbox.topology import built_services
from services.common.clock import frozen_clock
from tests.gateway.conftest import build_gateway

PROXIED = [spec for spec in built_services() if spec.gateway_prefix is not None]
AT = "http://127.0.0.1:20000"  # a gateway moved by a port offset


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return {spec.name: build_app(spec) for spec in PROXIED}


def _gateway(tmp_path: Path, services: dict[str, Any]) -> TestClient:
    transports = {name: httpx.ASGITransport(app=app) for name, app in services.items()}
    return TestClient(build_gateway(tmp_path, frozen_clock(), transports), base_url=AT)


def test_the_participant_contract_is_served_as_make_openapi_builds_it(tmp_path: Path, services: dict[str, Any]) -> None:
    with _gateway(tmp_path, services) as client:
        served = client.get("/sandbox.json")
        own = client.get("/openapi.json").json()  # its events and webhooks operations are in the contract too
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    expected = participant_document({**{name: app.openapi() for name, app in services.items()}, "gateway": own})
    document = served.json()
    assert {k: v for k, v in document.items() if k not in ("info", "servers")} == \
        {k: v for k, v in expected.items() if k not in ("info", "servers")}
    assert document["servers"] == [{"url": AT, "description": "this gateway"}]
    assert SERVER not in document["info"]["description"] and AT in document["info"]["description"]
    assert document["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"


def test_the_docs_pages_render_the_participant_contract_and_keep_the_key(tmp_path: Path, services: dict[str, Any]) -> None:
    with _gateway(tmp_path, services) as client:
        docs, redoc = client.get("/docs").text, client.get("/redoc").text
        own_docs, own_redoc = client.get("/sandbox/docs").text, client.get("/sandbox/redoc").text
        own = client.get("/openapi.json").json()
    assert "url: '/sandbox.json'" in docs and '"persistAuthorization": true' in docs
    assert 'spec-url="/sandbox.json"' in redoc
    assert "url: '/openapi.json'" in own_docs and 'spec-url="/openapi.json"' in own_redoc
    # The gateway's own document stays the regulator's API (openapi/gateway.json), no proxied route.
    assert any(path.startswith("/sandbox/") for path in own["paths"])
    assert not [path for path in own["paths"] for spec in PROXIED if path.startswith(f"{spec.gateway_prefix}/")]


def test_a_service_that_does_not_answer_is_left_out_until_it_does(tmp_path: Path, services: dict[str, Any]) -> None:
    down = {name: app for name, app in services.items() if name != "credit"}
    with _gateway(tmp_path, down) as client:
        client.app.state.gateway.upstreams["credit"] = "http://127.0.0.1:9"  # the discard port: refused
        document = client.get("/sandbox.json").json()
    assert any(p.startswith("/payments/") for p in document["paths"])
    assert not any(p.startswith("/credit/") for p in document["paths"])
    assert "Not listed now:** `/credit/…`" in document["info"]["description"]
