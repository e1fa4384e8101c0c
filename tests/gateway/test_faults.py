"""Fault flags the regulator sets (docs/faults.md): regulator key only, every change logged, and
each injected fault takes a real fault's path through the gateway, so holds, idempotency and the
audit log are those of a real outage. No test here waits on the wall clock: latency is seen
through an injected sleep, or as a lower bound on the entry's recorded latency."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from sandbox.gateway import faults
from sandbox.gateway.faults import Fault, FaultFlags, applicable, draws_error
from sandbox.gateway.limits import AllowedOperation
from sandbox.gateway.models import FaultFlag, GatewayModel
from sandbox.gateway.reset import reset_gateway_offline
from services.common.clock import frozen_clock
from services.common.db import Database
from services.common.db import database_url as resolve_url
from tests.gateway.conftest import (
    LI_WEI,
    REGULATOR,
    WALLET_KEY,
    ZHANG_MIN,
    Sandbox,
    build_gateway,
)

WALLET = {"X-API-Key": WALLET_KEY}
WALLET_ID = "ptp_00000000000000000000000001"
TPP = {"X-API-Key": "sbx_demo_tpp_key"}
BODY = {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": {"amount": "12.30", "currency": "CNY"}}


def set_fault(client: TestClient, fault_id: str, **body: Any) -> httpx.Response:
    return client.put(f"/sandbox/faults/{fault_id}", json={"service": "payments", **body}, headers=REGULATOR)


def entries(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/sandbox/audit/entries", params={"limit": 100, **params}, headers=REGULATOR)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def volume(client: TestClient) -> str:
    return client.get(f"/sandbox/participants/{WALLET_ID}/activity", headers=REGULATOR).json()["volume"]["amount"]


class Sleeps:
    """An injected sleep: what the gateway asked to wait, without waiting it out."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


@pytest.fixture
def sleeps(sandbox: Sandbox) -> Sleeps:
    recorder = Sleeps()
    sandbox.client.app.state.gateway.faults.sleep = recorder
    return recorder


# -- the regulator's API --------------------------------------------------------------------------

def test_only_the_regulator_sets_reads_or_removes_faults(sandbox: Sandbox) -> None:
    client = sandbox.client
    body = {"service": "payments", "kind": "unavailable"}
    for method, path in (("PUT", "/sandbox/faults/down"), ("GET", "/sandbox/faults"),
                         ("GET", "/sandbox/faults/down"), ("DELETE", "/sandbox/faults/down"),
                         ("DELETE", "/sandbox/faults")):
        refused = client.request(method, path, headers=WALLET, json=body if method == "PUT" else None)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith(":regulator-only")
        assert client.request(method, path, json=body if method == "PUT" else None).status_code == 401
    assert client.get("/sandbox/faults", headers=REGULATOR).json()["data"] == []
    assert sandbox.transfer(WALLET_KEY, "1.00", source=LI_WEI).status_code == 201  # nothing was set


def test_every_change_is_one_entry_in_the_audit_log(sandbox: Sandbox) -> None:
    client = sandbox.client
    set_ = set_fault(client, "slow-transfers", kind="latency", latency_ms=200, operation="POST /transfers",
                     note="a slow ledger")
    assert set_.status_code == 201, set_.text
    fault = set_.json()
    assert (fault["id"], fault["operation"], fault["kind"], fault["latency_ms"], fault["remaining"]) == \
        ("slow-transfers", "POST /transfers", "latency", 200, None)
    assert set_fault(client, "slow-transfers", kind="latency", latency_ms=300).status_code == 200  # replaced
    assert client.get("/sandbox/faults/slow-transfers", headers=REGULATOR).json()["latency_ms"] == 300
    assert set_fault(client, "down", kind="unavailable", remaining=3).status_code == 201
    assert client.delete("/sandbox/faults/down", headers=REGULATOR).status_code == 204
    assert client.delete("/sandbox/faults/down", headers=REGULATOR).status_code == 404  # not a change: not logged
    assert client.delete("/sandbox/faults", headers=REGULATOR).json() == {"cleared": 1}
    logged = [(e["method"], e["path"], e["status"], e["participant_id"], e["operation"]) for e in entries(client)
              if e["path"].startswith("/sandbox/faults")]
    assert logged == [
        ("PUT", "/sandbox/faults/slow-transfers", 201, "regulator",
         "fault set slow-transfers: +200 ms on payments POST /transfers"),
        ("PUT", "/sandbox/faults/slow-transfers", 200, "regulator",
         "fault set slow-transfers: +300 ms on every payments operation"),
        ("PUT", "/sandbox/faults/down", 201, "regulator", "fault set down: unavailable on every payments operation, "
         "the next 3 requests"),
        ("DELETE", "/sandbox/faults/down", 204, "regulator", "fault removed down"),
        ("DELETE", "/sandbox/faults", 200, "regulator", "faults cleared: 1"),
    ]
    assert client.get("/sandbox/faults", headers=REGULATOR).json()["data"] == []
    assert client.get("/sandbox/audit/verify", headers=REGULATOR).json()["ok"] is True


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "latency"}, "body.latency.latency_ms"),
    ({"kind": "latency", "latency_ms": 0}, "body.latency.latency_ms"),
    ({"kind": "error", "error_rate": 1.5}, "body.error.error_rate"),
    ({"kind": "error", "error_rate": "0.5"}, "body.error.error_rate"),
    ({"kind": "error", "error_rate": 0.5, "error_status": 404}, "body.error.error_status"),
    ({"kind": "timeout", "error_rate": 0.5}, "body.timeout.error_rate"),
    ({"kind": "unavailable", "operation": "transfers"}, "body.unavailable.operation"),
    ({"kind": "unavailable", "remaining": 0}, "body.unavailable.remaining"),
    ({"kind": "unavailable", "expires_in_s": 86_401}, "body.unavailable.expires_in_s"),
    ({"kind": "flaky"}, "body"),
])
def test_an_invalid_fault_is_refused_naming_the_field(sandbox: Sandbox, body: dict[str, Any], field: str) -> None:
    refused = set_fault(sandbox.client, "bad", **body)
    assert refused.status_code == 422, refused.text
    assert field in {e["field"] for e in refused.json()["errors"]}, refused.json()
    assert sandbox.client.get("/sandbox/faults/bad", headers=REGULATOR).status_code == 404


def test_a_fault_for_a_participant_that_is_not_admitted_is_404(sandbox: Sandbox) -> None:
    refused = set_fault(sandbox.client, "nobody", kind="unavailable", participant_id="ptp_" + "9" * 26)
    assert refused.status_code == 404 and refused.json()["type"].endswith(":not-found")


# -- each kind, through the gateway ----------------------------------------------------------

def test_latency_is_added_before_forwarding(sandbox: Sandbox, sleeps: Sleeps) -> None:
    client = sandbox.client
    assert set_fault(client, "slow", kind="latency", latency_ms=250, operation="GET /accounts/{id}").status_code == 201
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 200
    assert sleeps.asked == [0.25]
    assert client.get(f"/payments/accounts/{LI_WEI}/balance", headers=WALLET).status_code == 200  # another operation
    assert sleeps.asked == [0.25]


def test_the_entry_records_at_least_the_added_latency(sandbox: Sandbox) -> None:
    """A lower bound, not a timing threshold: the gateway really waited before forwarding."""
    client = sandbox.client
    assert set_fault(client, "slow", kind="latency", latency_ms=40, operation="GET /accounts/{id}").status_code == 201
    answer = client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET)
    assert answer.status_code == 200
    [entry] = entries(client, request_id=answer.headers["x-request-id"])
    assert entry["latency_ms"] >= 40


def test_an_error_rate_answers_the_drawn_requests_and_forwards_nothing(sandbox: Sandbox) -> None:
    client = sandbox.client
    assert set_fault(client, "flaky", kind="error", error_rate=0.5, error_status=502,
                     operation="GET /accounts/{id}").status_code == 201
    ids = [f"req_flaky_{n}" for n in range(40)]
    statuses = {rid: client.get(f"/payments/accounts/{LI_WEI}", headers={**WALLET, "X-Request-ID": rid}).status_code
                for rid in ids}
    drawn = {rid for rid in ids if draws_error("flaky", rid, 0.5)}
    assert {rid for rid, status in statuses.items() if status == 502} == drawn
    assert {status for rid, status in statuses.items() if rid not in drawn} == {200}
    assert 0 < len(drawn) < len(ids)
    # The same request id draws the same, and the answer says what happened.
    again = client.get(f"/payments/accounts/{LI_WEI}", headers={**WALLET, "X-Request-ID": sorted(drawn)[0]})
    assert again.status_code == 502 and again.json()["type"].endswith(":injected-error")
    assert again.json()["fault_id"] == "flaky" and "x-sandbox-receipt" in again.headers


def test_an_injected_error_on_a_movement_moves_nothing_and_gives_the_hold_back(sandbox: Sandbox) -> None:
    client = sandbox.client
    assert set_fault(client, "broken", kind="error", error_rate=1, operation="POST /transfers").status_code == 201
    refused = client.post("/payments/transfers", json=BODY, headers={**WALLET, "Idempotency-Key": "err-1"})
    assert refused.status_code == 500 and refused.json()["type"].endswith(":injected-error")
    assert sandbox.balance(LI_WEI) == "5000.00"
    assert volume(client) == "0.00" and client.app.state.gateway.usage[WALLET_ID].day_volume == 0
    assert [(e["phase"], e["status"]) for e in entries(client, service="payments")] == [("intent", 0), ("outcome", 500)]
    assert client.delete("/sandbox/faults/broken", headers=REGULATOR).status_code == 204
    # Nothing reached payments, so the same key is a first attempt there.
    retry = client.post("/payments/transfers", json=BODY, headers={**WALLET, "Idempotency-Key": "err-1"})
    assert retry.status_code == 201 and "idempotent-replayed" not in retry.headers
    assert sandbox.balance(LI_WEI) == "4987.70" and volume(client) == "12.30"


def test_unavailable_forwards_nothing_and_gives_the_hold_back(sandbox: Sandbox, sleeps: Sleeps) -> None:
    client = sandbox.client
    down = set_fault(client, "down", kind="unavailable", operation="POST /transfers", latency_ms=2000)
    assert down.status_code == 201
    refused = client.post("/payments/transfers", json=BODY, headers={**WALLET, "Idempotency-Key": "down-1"})
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"].endswith(":upstream-unavailable") and refused.headers["retry-after"] == "5"
    assert sleeps.asked == [2.0]  # a connect that hangs, then fails
    assert sandbox.balance(LI_WEI) == "5000.00"
    assert volume(client) == "0.00" and client.app.state.gateway.usage[WALLET_ID].day_volume == 0
    logged = [(e["phase"], e["status"], e["error"]) for e in entries(client, service="payments")]
    assert logged == [("intent", 0, None), ("outcome", 503, "upstream-unavailable")]
    assert client.app.state.gateway.open_intents == {}
    # Another operation of the same service is reached as usual.
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 200


def test_a_lost_answer_is_reconciled_and_a_keyed_retry_moves_the_money_once(sandbox: Sandbox) -> None:
    client = sandbox.client
    gateway = client.app.state.gateway
    assert set_fault(client, "lost", kind="timeout", operation="POST /transfers", remaining=1).status_code == 201
    keyed = {**WALLET, "Idempotency-Key": "retry-me-1"}
    lost = client.post("/payments/transfers", json=BODY, headers=keyed)
    assert lost.status_code == 504 and lost.json()["type"].endswith(":upstream-timeout")
    assert "retry with the same Idempotency-Key" in lost.json()["detail"]
    assert sandbox.balance(LI_WEI) == "4987.70"  # payments applied it; only the answer was lost
    assert gateway.usage[WALLET_ID].day_volume == 1230  # held while the outcome is unknown
    assert client.get("/sandbox/faults/lost", headers=REGULATOR).status_code == 404  # one-shot: spent and gone
    retry = client.post("/payments/transfers", json=BODY, headers=keyed)
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert sandbox.balance(LI_WEI) == "4987.70" and sandbox.balance(ZHANG_MIN) == "1212.30"
    assert volume(client) == "12.30"
    phases = [(e["phase"], e["status"], e["counts_toward"]) for e in entries(client, service="payments")]
    assert phases == [("intent", 0, None), ("unanswered", 504, None), ("reconciled", 201, ["limits", "history"]),
                      ("outcome", 201, [])]
    assert sandbox.payments.get("/invariants").json()["ok"] is True
    assert client.get("/sandbox/audit/verify", headers=REGULATOR).json()["ok"] is True


def test_an_unkeyed_movement_lost_to_a_timeout_is_reconciled_by_the_gateway(sandbox: Sandbox) -> None:
    client = sandbox.client
    gateway = client.app.state.gateway
    assert set_fault(client, "lost", kind="timeout", operation="POST /transfers", remaining=1).status_code == 201
    lost = client.post("/payments/transfers", json=BODY, headers=WALLET)
    assert lost.status_code == 504 and "asks the service" in lost.json()["detail"]
    assert client.portal.call(gateway.reconcile_open) == {"applied": 1}
    assert volume(client) == "12.30" and sandbox.balance(LI_WEI) == "4987.70"


def test_remaining_counts_the_requests_down_then_the_fault_is_gone(sandbox: Sandbox) -> None:
    client = sandbox.client
    twice = set_fault(client, "twice", kind="unavailable", operation="GET /accounts/{id}", remaining=2)
    assert twice.status_code == 201
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 503
    assert client.get("/sandbox/faults/twice", headers=REGULATOR).json()["remaining"] == 1
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 503
    assert client.get("/sandbox/faults/twice", headers=REGULATOR).status_code == 404
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 200


def test_an_error_rate_counts_only_the_errors_it_answers(sandbox: Sandbox) -> None:
    client = sandbox.client
    assert set_fault(client, "once", kind="error", error_rate=0.5, remaining=1,
                     operation="GET /accounts/{id}").status_code == 201
    ids = [f"req_once_{n}" for n in range(20)]
    first_drawn = next(i for i, rid in enumerate(ids) if draws_error("once", rid, 0.5))
    statuses = [client.get(f"/payments/accounts/{LI_WEI}", headers={**WALLET, "X-Request-ID": rid}).status_code
                for rid in ids]
    assert statuses == [500 if i == first_drawn else 200 for i in range(len(ids))]


def test_a_fault_applies_to_its_operation_and_participant_only(sandbox: Sandbox) -> None:
    client = sandbox.client
    wallet_co_down = set_fault(client, "wallet-down", kind="unavailable", operation="GET /accounts/{id}",
                               participant_id=WALLET_ID)
    assert wallet_co_down.status_code == 201
    assert set_fault(client, "credit-down", kind="unavailable", service="credit").status_code == 201
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 503
    assert client.get(f"/payments/accounts/{LI_WEI}/balance", headers=WALLET).status_code == 200  # another operation
    other_id, other_key = sandbox.admit()
    account = sandbox.open_account(other_key, "Other Customer")
    assert client.get(f"/payments/accounts/{account}", headers={"X-API-Key": other_key}).status_code == 200
    # The regulator's own calls to a service's sandbox controls are never faulted.
    assert set_fault(client, "all-payments-down", kind="unavailable").status_code == 201
    assert client.get("/payments/_sandbox/clock", headers=REGULATOR).status_code == 200
    assert client.get(f"/payments/accounts/{account}", headers={"X-API-Key": other_key}).status_code == 503


def test_the_most_specific_fault_wins() -> None:
    now = datetime(2026, 1, 5, tzinfo=UTC)
    transfers = AllowedOperation.parse("payments POST /transfers")
    service_wide = Fault("a-slow", "payments", "latency", latency_ms=100)
    operation = Fault("b-lost", "payments", "timeout", operation=transfers)
    for_one = Fault("c-down", "payments", "unavailable", operation=transfers, participant_id="ptp_1")
    spent = Fault("d-spent", "payments", "unavailable", participant_id="ptp_1", remaining=0)
    expired = Fault("e-old", "payments", "unavailable", participant_id="ptp_1", expires_at=now)
    flags = [service_wide, operation, for_one, spent, expired]
    assert applicable(flags, "payments", "POST", "/transfers", "ptp_1", now) is for_one
    assert applicable(flags, "payments", "POST", "/transfers", "ptp_2", now) is operation
    assert applicable(flags, "payments", "GET", "/accounts/acc_1", "ptp_1", now) is service_wide
    assert applicable(flags, "credit", "POST", "/transfers", "ptp_1", now) is None


def test_the_error_draw_is_the_rate_over_many_requests() -> None:
    drawn = sum(draws_error("flaky", f"req_{n}", 0.25) for n in range(10_000))
    assert drawn == 2_492  # deterministic: SHA-256 of the fault id and the request id
    assert all(draws_error("always", f"req_{n}", 1.0) for n in range(100))


def test_an_expired_fault_no_longer_applies_nor_is_listed(sandbox: Sandbox) -> None:
    client = sandbox.client
    flags = client.app.state.gateway.faults
    assert set_fault(client, "brief", kind="unavailable", expires_in_s=60).status_code == 201
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 503
    flags.now = lambda: faults.wall_clock() + timedelta(seconds=61)
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 200
    assert client.get("/sandbox/faults", headers=REGULATOR).json()["data"] == []


def test_with_no_flags_nothing_is_evaluated(sandbox: Sandbox) -> None:
    """The usual case costs one look at the cached copy: no OpenFeature evaluation, no query."""
    client = sandbox.client
    flags = client.app.state.gateway.faults
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 200
    assert flags._client is None  # the provider was never even registered


# -- replicas and the reset ---------------------------------------------------------------------

def _flag_row(fault_id: str, **values: Any) -> FaultFlag:
    now = faults.wall_clock()
    return FaultFlag(id=fault_id, service="payments", kind="unavailable", expires_at=now + timedelta(hours=1),
                     created_at=now, **values)


@pytest.fixture
def replicas(tmp_path: Path, database_url: str | None) -> Iterator[tuple[Database, Database]]:
    """Two gateway processes' databases: two engines on one database, SQLite or PostgreSQL."""
    url = resolve_url(database_url, tmp_path, "gateway")
    one, two = Database(url, GatewayModel.metadata), Database(url, GatewayModel.metadata)
    one.create_tables()
    try:
        yield one, two
    finally:
        one.dispose()
        two.dispose()


def test_replicas_on_one_database_apply_the_same_flags_and_share_the_count(
        replicas: tuple[Database, Database]) -> None:
    one, two = FaultFlags(replicas[0], refresh_s=0), FaultFlags(replicas[1], refresh_s=0)
    with Session(replicas[0].engine) as session:
        session.add(_flag_row("shared-once", remaining=1))
        session.commit()
    assert [f.id for f in one.snapshot()] == [f.id for f in two.snapshot()] == ["shared-once"]
    assert (one.take_one("shared-once"), two.take_one("shared-once")) == (True, False)
    assert one.snapshot() == two.snapshot() == ()


def test_a_replica_sees_another_s_change_within_its_refresh(replicas: tuple[Database, Database]) -> None:
    replica = FaultFlags(replicas[1], refresh_s=3600)
    assert replica.snapshot() == ()
    with Session(replicas[0].engine) as session:
        session.add(_flag_row("later"))
        session.commit()
    assert replica.snapshot() == ()  # its copy is not stale yet
    replica.changed()
    assert [f.id for f in replica.snapshot()] == ["later"]


class ServiceResets(httpx.AsyncBaseTransport):
    """A service that answers its `/_sandbox/reset` and nothing else."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/_sandbox/reset"
        return httpx.Response(200, json={"service": request.url.host, "deleted": {}, "seeded": {},
                                         "clock": "2026-01-05T09:00:00Z", "took_ms": 0.1})


@pytest.fixture
def resettable(tmp_path: Path, payments_app: Any) -> Iterator[TestClient]:
    transports = {"payments": httpx.ASGITransport(app=payments_app), "credit": ServiceResets(),
                  "advisor": ServiceResets(), "openbanking": ServiceResets()}
    with TestClient(build_gateway(tmp_path / "gateway", frozen_clock(), transports)) as client:
        yield client


def test_the_sandbox_reset_clears_every_fault(resettable: TestClient) -> None:
    client = resettable
    assert set_fault(client, "down", kind="unavailable").status_code == 201
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 503
    reset = client.post("/sandbox/reset", headers=REGULATOR)
    assert reset.status_code == 200, reset.text
    assert client.get("/sandbox/faults", headers=REGULATOR).json()["data"] == []
    assert client.get(f"/payments/accounts/{LI_WEI}", headers=WALLET).status_code == 200


def test_the_offline_reset_clears_every_fault(tmp_path: Path) -> None:
    app = build_gateway(tmp_path / "gateway", frozen_clock())
    db = app.state.gateway.db
    with Session(db.engine) as session:
        session.add(_flag_row("left-over"))
        session.commit()
    reset_gateway_offline(db, True, datetime.now(UTC))
    with Session(db.engine) as session:
        assert session.get(FaultFlag, "left-over") is None


def test_a_one_shot_timeout_on_each_database(tmp_path: Path, payments_app: Any, database_url: str | None) -> None:
    settings = {"database_url": database_url} if database_url else {}
    transports = {"payments": httpx.ASGITransport(app=payments_app)}
    with TestClient(build_gateway(tmp_path / "gateway", frozen_clock(), transports, **settings)) as client:
        assert set_fault(client, "lost", kind="timeout", operation="POST /transfers", remaining=1).status_code == 201
        keyed = {**WALLET, "Idempotency-Key": "each-db-1"}
        assert client.post("/payments/transfers", json=BODY, headers=keyed).status_code == 504
        retry = client.post("/payments/transfers", json=BODY, headers=keyed)
        assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
        assert volume(client) == "12.30"
        assert client.get("/sandbox/faults", headers=REGULATOR).json()["data"] == []
