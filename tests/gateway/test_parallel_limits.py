"""Limits hold under parallel requests: a money movement's amount, customer and screening
history are held before it is forwarded, and given back when the service refuses it or cannot
be reached, so requests in flight cannot all pass the same check."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.clock import frozen_clock
from tests.gateway.conftest import REGULATOR, ZHANG_MIN, Sandbox, build_gateway, fund
from tests.support.servers import serve

WAIT_S = 30  # generous: how long the test waits for the requests to settle, never an assertion


class Gate:
    """Wraps the payments app: transfers wait at the door until the test opens it, so every
    request the gateway forwards is in flight at the same moment."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.opened = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/transfers":
            with self._lock:
                self.waiting += 1
            while not self.opened.is_set():
                await asyncio.sleep(0.005)
        await self.app(scope, receive, send)


def _transfer_body(amount: str, source: str, target: str = ZHANG_MIN) -> dict[str, Any]:
    return {"from_account_id": source, "to_account_id": target, "amount": {"amount": amount, "currency": "CNY"}}


@contextmanager
def _served_gateway(tmp_path: Path, gate: Gate) -> Iterator[tuple[httpx.Client, TestClient]]:
    """The gateway on a real port in front of the gated payments app, and payments' own port."""
    app = build_gateway(tmp_path / "gateway", frozen_clock(), {"payments": httpx.ASGITransport(app=gate)})
    with serve(app) as base, httpx.Client(base_url=base, timeout=WAIT_S) as client, \
            TestClient(gate.app) as payments:
        yield client, payments


def _admit(client: httpx.Client, **limits: Any) -> tuple[str, str]:
    body = {"name": "Parallel Pay", "services": ["payments"], "limits": {
        "max_single_transaction": "100000.00", "daily_volume": "1000000.00", "max_customers": 100,
        "rate_limit_per_minute": 1000, **limits}}
    response = client.post("/sandbox/participants", json=body, headers=REGULATOR)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["api_key"]


def _funded(client: httpx.Client, payments: TestClient, key: str, amount: str, owner: str) -> str:
    """An account the participant opens through the gateway (so it may debit it), topped up
    on payments' own port (nothing screened or counted)."""
    response = client.post("/payments/accounts", headers={"X-API-Key": key},
                           json={"kind": "personal", "owner_name": owner, "currency": "CNY"})
    assert response.status_code == 201, response.text
    fund(payments, response.json()["id"], amount)
    return response.json()["id"]


def _fire_in_parallel(client: httpx.Client, gate: Gate, requests: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """Send every request at once; open the gate when each is either answered or waiting at
    payments (under the old record-after-answer code all of them would be waiting)."""
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(client.post, "/payments/transfers", json=body, headers={"X-API-Key": key})
                   for key, body in requests]
        for _ in range(WAIT_S * 200):
            if gate.waiting + sum(f.done() for f in futures) >= len(requests):
                break
            threading.Event().wait(0.005)
        else:
            pytest.fail(f"requests never settled: {gate.waiting} at payments")
        gate.opened.set()
        return [f.result() for f in futures]


def test_parallel_transfers_cannot_all_pass_the_daily_volume_limit(tmp_path: Path, payments_app) -> None:  # type: ignore[no-untyped-def]
    """The audit's case: five parallel 100 CNY transfers against a 100 CNY daily limit."""
    gate = Gate(payments_app)
    with _served_gateway(tmp_path, gate) as (client, payments):
        pid, key = _admit(client, daily_volume="100.00")
        source = _funded(client, payments, key, "1000.00", "Parallel Customer")
        responses = _fire_in_parallel(client, gate, [(key, _transfer_body("100.00", source))] * 5)
        activity = client.get(f"/sandbox/participants/{pid}/activity", headers=REGULATOR).json()

    assert sorted(r.status_code for r in responses) == [201, 403, 403, 403, 403]
    refused = [r.json() for r in responses if r.status_code == 403]
    assert {p["limit"] for p in refused} == {"daily_volume"}
    assert gate.waiting == 1  # only one transfer ever reached payments
    assert activity["volume"] == {"amount": "100.00", "currency": "CNY"}
    assert activity["breaches_by_limit"] == {"daily_volume": 4}


def test_parallel_transfers_for_new_customers_cannot_pass_the_customer_limit(tmp_path: Path, payments_app) -> None:  # type: ignore[no-untyped-def]
    gate = Gate(payments_app)
    with _served_gateway(tmp_path, gate) as (client, payments):
        _, key = _admit(client, max_customers=1)
        first = _funded(client, payments, key, "10.00", "First Customer")
        second = _funded(client, payments, key, "10.00", "Second Customer")
        responses = _fire_in_parallel(client, gate, [(key, _transfer_body("1.00", first)),
                                                     (key, _transfer_body("1.00", second))])
    assert sorted(r.status_code for r in responses) == [201, 403]
    assert next(r for r in responses if r.status_code == 403).json()["limit"] == "max_customers"


def test_parallel_structuring_is_seen_while_the_transfers_are_in_flight(tmp_path: Path, payments_app) -> None:  # type: ignore[no-untyped-def]
    """Screening history is held before forwarding too: three just-below-threshold transfers
    sent at once cannot each be screened as if it were the first."""
    gate = Gate(payments_app)
    with _served_gateway(tmp_path, gate) as (client, payments):
        _, key = _admit(client)
        source = _funded(client, payments, key, "30000.00", "Structured Customer")
        responses = _fire_in_parallel(client, gate, [(key, _transfer_body(a, source))
                                                     for a in ("9500.00", "9400.00", "9600.00")])
        alerts = client.get("/sandbox/alerts", headers=REGULATOR).json()["data"]
    assert [r.status_code for r in responses] == [201, 201, 201]
    decisions = sorted(r.headers["x-sandbox-decision"].split(";")[0] for r in responses)
    assert decisions == ["approve", "approve", "review"]
    assert [a["rules"][0]["rule"] for a in alerts] == ["structuring"]


def test_a_refused_transfer_gives_its_hold_back(sandbox: Sandbox) -> None:
    pid, key = sandbox.admit(limits={"daily_volume": "100.00", "max_customers": 1})
    empty = sandbox.open_account(key, "Nobody Funded")
    funded = sandbox.funded_account(key, "100.00", "Funded Customer")
    refused = sandbox.transfer(key, "100.00", source=empty)  # payments: insufficient funds
    assert 400 <= refused.status_code < 500 and "x-sandbox-decision" in refused.headers
    # Neither the 100 CNY nor the empty account as a customer stayed held.
    assert sandbox.transfer(key, "100.00", source=funded).status_code == 201
    activity = sandbox.client.get(f"/sandbox/participants/{pid}/activity", headers=REGULATOR).json()
    assert (activity["volume"]["amount"], activity["customers"]) == ("100.00", 1)


class FailsFirstTransfer(httpx.AsyncBaseTransport):
    """Payments, except that the first transfer cannot be reached."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.failed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/transfers" and not self.failed:
            self.failed = True
            raise httpx.ConnectError("injected", request=request)
        return await self.inner.handle_async_request(request)


def test_an_unreachable_service_gives_the_hold_back(tmp_path: Path, payments_app) -> None:  # type: ignore[no-untyped-def]
    app = build_gateway(tmp_path, frozen_clock(), {"payments": FailsFirstTransfer(payments_app)})
    with TestClient(app) as client, TestClient(payments_app) as payments:
        admitted = client.post("/sandbox/participants", headers=REGULATOR, json={
            "name": "Unlucky Pay", "services": ["payments"], "limits": {
                "max_single_transaction": "100.00", "daily_volume": "100.00", "max_customers": 1,
                "rate_limit_per_minute": 100}}).json()
        body = _transfer_body("100.00", _funded(client, payments, admitted["api_key"], "100.00", "Unlucky Customer"))
        first = client.post("/payments/transfers", json=body, headers={"X-API-Key": admitted["api_key"]})
        assert first.status_code == 503
        again = client.post("/payments/transfers", json=body, headers={"X-API-Key": admitted["api_key"]})
        assert again.status_code == 201, again.text
        assert again.headers["x-sandbox-decision"].startswith("approve")
