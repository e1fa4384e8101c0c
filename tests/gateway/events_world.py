"""A gateway with an outbox service behind it as `payments`, fast webhook timings, and
receivers on 127.0.0.1 that record what reaches them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.clock import Clock, frozen_clock
from tests.gateway.conftest import REGULATOR, build_gateway
from tests.gateway.outbox_service import outbox_service

# Short, so a test's retries take a fraction of a second; waits are bounded, never asserted.
FAST_WEBHOOKS = dict(relay_interval_s=0.05, webhook_poll_s=0.02, webhook_retry_base_s=0.05,
                     webhook_retry_cap_s=0.2, webhook_timeout_s=2.0)
WAIT_S = 10.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that answers each delivery with the next status of `answers`
    (the last one repeats) and keeps what it was sent."""

    answers: list[int] = field(default_factory=lambda: [200])
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = receiver.answers[min(len(receiver.received), len(receiver.answers) - 1)]
                receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll until `check()` is truthy (bounded); its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


@dataclass
class EventsWorld:
    client: TestClient  # the gateway
    service: TestClient  # the outbox service on its own port
    clock: Clock

    def admit(self, name: str = "Events Firm") -> tuple[str, str]:
        limits = {"max_single_transaction": "1000.00", "daily_volume": "10000.00", "max_customers": 10,
                  "rate_limit_per_minute": 1000}
        answer = self.client.post("/sandbox/participants", headers=REGULATOR,
                                  json={"name": name, "services": ["payments"], "limits": limits})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"], answer.json()["api_key"]

    def send_parcel(self, key: str) -> str:
        """A call through the gateway whose change records an event in the service's outbox."""
        answer = self.client.post("/payments/parcels", headers={"X-API-Key": key})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def events(self, key: str, **params: Any) -> dict[str, Any]:
        answer = self.client.get("/events", headers={"X-API-Key": key}, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_for_events(self, key: str, count: int, **params: Any) -> list[dict[str, Any]]:
        return wait_for(lambda: (data := self.events(key, **params)["data"]) and len(data) >= count and data,
                        f"{count} events")

    def register(self, key: str, url: str, **body: Any) -> dict[str, Any]:
        answer = self.client.post("/webhooks/endpoints", headers={"X-API-Key": key}, json={"url": url, **body})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def deliveries(self, key: str, endpoint_id: str) -> list[dict[str, Any]]:
        answer = self.client.get(f"/webhooks/endpoints/{endpoint_id}/deliveries", headers={"X-API-Key": key})
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EventsWorld]:
    clock = frozen_clock()
    service_app = outbox_service(tmp_path / "lesson", frozen_clock())
    app = build_gateway(tmp_path / "gateway", clock, {"payments": httpx.ASGITransport(app=service_app)},
                        **FAST_WEBHOOKS)
    with TestClient(service_app) as service, TestClient(app) as client:
        yield EventsWorld(client, service, clock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()
