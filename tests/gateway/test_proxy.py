"""The proxy itself: prefix stripping, headers in and out, request ids, and every way an
upstream can fail (down → 503 within the connect timeout, slow → 504), each logged."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from services.common.clock import frozen_clock
from tests.gateway.conftest import REGULATOR, WALLET_KEY, build_gateway
from tests.support.servers import serve

LENDER_KEY = "sbx_demo_lender_key"  # may call credit


async def echo_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """Answers with what it received: path, query and headers (a stand-in credit service)."""
    body = json.dumps({"path": scope["path"], "query": scope["query_string"].decode(),
                       "headers": {k.decode(): v.decode() for k, v in scope["headers"]}}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"connection", b"keep-alive"),
        (b"x-upstream", b"echo"), (b"x-request-id", b"upstream-made-this-up")]})
    await send({"type": "http.response.body", "body": body})


async def slow_app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "http":
        await asyncio.sleep(3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gateway(tmp_path: Path, **settings):  # type: ignore[no-untyped-def]
    return TestClient(build_gateway(tmp_path, frozen_clock(), {"credit": httpx.ASGITransport(app=echo_app)}, **settings))


def test_prefix_is_stripped_and_the_query_kept(tmp_path: Path) -> None:
    with _gateway(tmp_path) as client:
        seen = client.get("/credit/applications/app_1?limit=5", headers={"X-API-Key": LENDER_KEY}).json()
    assert (seen["path"], seen["query"]) == ("/applications/app_1", "limit=5")


def test_the_key_and_client_sandbox_headers_never_reach_the_service(tmp_path: Path) -> None:
    with _gateway(tmp_path) as client:
        seen = client.get("/credit/x", headers={
            "X-API-Key": LENDER_KEY, "X-Sandbox-Participant": "ptp_00000000000000000000000001",
            "X-Sandbox-Anything": "forged", "Connection": "keep-alive, X-Custom-Hop"}).json()["headers"]
    assert "x-api-key" not in seen
    assert "x-sandbox-anything" not in seen
    assert seen["x-sandbox-participant"] == "ptp_00000000000000000000000003"


def test_hop_by_hop_response_headers_are_dropped(tmp_path: Path) -> None:
    with _gateway(tmp_path) as client:
        response = client.get("/credit/x", headers={"X-API-Key": LENDER_KEY})
    assert response.headers["x-upstream"] == "echo"
    assert "keep-alive" not in response.headers.get("connection", "")


def test_request_id_is_propagated_and_echoed(tmp_path: Path) -> None:
    with _gateway(tmp_path) as client:
        response = client.get("/credit/x", headers={"X-API-Key": LENDER_KEY, "X-Request-ID": "trace-42"})
        generated = client.get("/credit/x", headers={"X-API-Key": LENDER_KEY})
    assert response.json()["headers"]["x-request-id"] == "trace-42"
    assert response.headers["x-request-id"] == "trace-42"
    assert generated.headers["x-request-id"] == generated.json()["headers"]["x-request-id"]
    assert generated.headers["x-request-id"].startswith("req_")


class Raising(httpx.AsyncBaseTransport):
    """An upstream that fails the way httpx reports it: no clock, no waiting."""

    def __init__(self, error: type[httpx.TransportError]) -> None:
        self.error = error

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise self.error("injected", request=request)


def _failing(tmp_path: Path, error: type[httpx.TransportError]) -> TestClient:
    return TestClient(build_gateway(tmp_path, frozen_clock(), {"credit": Raising(error)}))


def test_service_down_is_503_and_logged(tmp_path: Path) -> None:
    app = build_gateway(tmp_path, frozen_clock(), upstream_credit=f"http://127.0.0.1:{_closed_port()}")
    with TestClient(app) as client:
        response = client.get("/credit/x", headers={"X-API-Key": LENDER_KEY})
        assert response.status_code == 503
        assert response.json()["type"].endswith("upstream-unavailable")
        entry = client.get("/sandbox/audit/entries", headers=REGULATOR).json()["data"][0]
    assert (entry["status"], entry["error"]) == (503, "upstream-unavailable")


def test_connect_timeout_is_503_with_retry_after_and_logged(tmp_path: Path) -> None:
    with _failing(tmp_path, httpx.ConnectTimeout) as client:
        response = client.get("/credit/x", headers={"X-API-Key": LENDER_KEY})
        problem = response.json()
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        assert problem["type"].endswith("upstream-unavailable")
        assert problem["service"] == "credit"
        assert "could not be reached; nothing was forwarded" in problem["detail"]
        entry = client.get("/sandbox/audit/entries", headers=REGULATOR).json()["data"][0]
    assert (entry["status"], entry["error"], entry["service"]) == (503, "upstream-unavailable", "credit")


def test_read_timeout_is_504_and_logged(tmp_path: Path) -> None:
    with _failing(tmp_path, httpx.ReadTimeout) as client:
        response = client.get("/credit/x", headers={"X-API-Key": LENDER_KEY})
        problem = response.json()
        assert response.status_code == 504
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["type"].endswith("upstream-timeout")
        assert "retry with the same Idempotency-Key" in problem["detail"]
        assert "x-sandbox-receipt" in response.headers
        entry = client.get("/sandbox/audit/entries", headers=REGULATOR).json()["data"][0]
        assert (entry["status"], entry["error"]) == (504, "upstream-timeout")
        assert client.get("/healthz").status_code == 200  # the gateway itself keeps answering


class _CutOff(httpx.AsyncByteStream):
    """An answer whose body stops half-way with `error`."""

    def __init__(self, error: type[httpx.TransportError]) -> None:
        self.error = error

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b'{"path": "/x", "que'
        raise self.error("the answer was cut off")

    async def aclose(self) -> None:
        pass


def test_an_answer_lost_half_way_is_504_not_a_logged_success(tmp_path: Path) -> None:
    """The service answered 200 but its body never fully arrived: the gateway has read nothing it
    can pass on, so the caller gets the unanswered-request 504 (retry with the same key), the log
    says so, and nothing is logged as a success."""
    for error in (httpx.ReadTimeout, httpx.ReadError):
        def cut_off(request: httpx.Request, error: type[httpx.TransportError] = error) -> httpx.Response:
            return httpx.Response(200, headers={"content-length": "400", "content-type": "application/json"},
                                  stream=_CutOff(error))

        data = tmp_path / error.__name__
        app = build_gateway(data, frozen_clock(), {"credit": httpx.MockTransport(cut_off)})
        with TestClient(app) as client:
            response = client.get("/credit/x", headers={"X-API-Key": LENDER_KEY})
            assert response.status_code == 504, response.text
            assert response.json()["type"].endswith("upstream-timeout")
            assert "may or may not have been applied" in response.json()["detail"]
            entries = client.get("/sandbox/audit/entries", headers=REGULATOR).json()["data"]
            assert [(e["status"], e["error"]) for e in entries] == [(504, "upstream-timeout")]


def test_slow_service_is_504_after_the_read_timeout_and_logged(tmp_path: Path) -> None:
    with serve(slow_app) as url:
        app = build_gateway(tmp_path, frozen_clock(), upstream_credit=url, read_timeout=0.3)
        with TestClient(app) as client:
            response = client.get("/credit/x", headers={"X-API-Key": LENDER_KEY})
            assert response.status_code == 504
            assert response.json()["type"].endswith("upstream-timeout")
            entry = client.get("/sandbox/audit/entries", headers=REGULATOR).json()["data"][0]
            assert (entry["status"], entry["error"]) == (504, "upstream-timeout")
            # the gateway itself keeps answering
            assert client.get("/healthz").status_code == 200


def test_proxied_routes_are_not_in_the_gateway_schema(tmp_path: Path) -> None:
    with _gateway(tmp_path) as client:
        paths = client.get("/openapi.json").json()["paths"]
    # The gateway's own routes only: the regulator's, the participant's events and webhooks.
    assert all(p.startswith(("/sandbox", "/healthz", "/readyz", "/_sandbox", "/events", "/webhooks")) for p in paths)
    assert not any(p.startswith(("/payments", "/credit", "/advisor", "/open-banking")) for p in paths)


def test_unknown_prefix_is_404(tmp_path: Path) -> None:
    with _gateway(tmp_path) as client:
        assert client.get("/insurance/x", headers={"X-API-Key": WALLET_KEY}).status_code == 404


def test_an_encoded_control_character_in_the_path_reaches_the_service(sandbox) -> None:  # type: ignore[no-untyped-def]
    """Found by fuzzing through the gateway: the decoded path made an invalid upstream URL (500)."""
    response = sandbox.client.get("/payments/journals/%11U", headers={"X-API-Key": "sbx_demo_wallet_key"})
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_an_empty_account_id_is_refused_by_payments_not_unscreened(sandbox) -> None:  # type: ignore[no-untyped-def]
    """Found by fuzzing: the owner look-up of "" was taken for screening being down (503)."""
    response = sandbox.client.post("/payments/transfers", headers={"X-API-Key": "sbx_demo_wallet_key"}, json={
        "from_account_id": "acc_00000000000000000000000001", "to_account_id": "",
        "amount": {"amount": "66.66", "currency": "CNY"}})
    assert response.status_code == 422, response.text
