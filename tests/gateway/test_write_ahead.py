"""Write-ahead: a money movement's intent is logged (and its usage held) before the service sees
it; an answer that never comes leaves the intent open, and the gateway closes it from the
service's own record of the idempotency key, at start-up, on its timer, or before a retry."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, insert

from services.common.clock import frozen_clock
from services.common.idempotency import fingerprint
from services.payments.models import IdempotencyKeys
from tests.gateway.conftest import LI_WEI, REGULATOR, WALLET_KEY, ZHANG_MIN, build_gateway

WALLET = "ptp_00000000000000000000000001"
BODY = {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": {"amount": "77.70", "currency": "CNY"}}


class Ledger(httpx.AsyncBaseTransport):
    """Payments behind a wire that can lose answers: `lose` says what the next transfer does —
    None (answered), "after" (applied, the answer lost), "before" (lost on the way: never applied)."""

    def __init__(self, app: Any, gateway_db: Path) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.gateway_db = gateway_db
        self.lose: str | None = None
        self.down = False  # payments unreachable: every request refused at connect
        self.seen: list[tuple[dict[str, str], list[tuple[Any, ...]]]] = []
        self.lost: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "POST" and request.url.path == "/transfers":
            with sqlite3.connect(self.gateway_db) as conn:  # what the log held when the service got it
                logged = conn.execute("SELECT idx, phase, idempotency_key FROM audit_log ORDER BY idx").fetchall()
            self.seen.append((dict(request.headers), logged))
            lose, self.lose = self.lose, None
            if lose == "before":
                self.lost.append(request)
                raise httpx.ReadTimeout("lost on the way", request=request)
            response = await self.inner.handle_async_request(request)
            if lose == "after":
                raise httpx.ReadTimeout("the answer was lost", request=request)
            return response
        return await self.inner.handle_async_request(request)


@pytest.fixture
def ledger(tmp_path: Path, payments_app) -> Ledger:  # type: ignore[no-untyped-def]
    return Ledger(payments_app, tmp_path / "gateway" / "gateway.sqlite3")


def _gateway(tmp_path: Path, ledger: Ledger, **settings: Any) -> TestClient:
    settings = {"read_timeout": 0.5, "connect_timeout": 0.5, "reconcile_interval_s": 3600, **settings}
    return TestClient(build_gateway(tmp_path / "gateway", frozen_clock(), {"payments": ledger}, **settings))


def _entries(client: TestClient) -> list[dict[str, Any]]:
    return client.get("/sandbox/audit/entries", params={"limit": 100}, headers=REGULATOR).json()["data"]


def _volume(client: TestClient) -> str:
    return client.get(f"/sandbox/participants/{WALLET}/activity", headers=REGULATOR).json()["volume"]["amount"]


def _balance(payments_app: Any) -> str:
    with TestClient(payments_app) as payments:
        return payments.get(f"/accounts/{LI_WEI}").json()["balance"]["amount"]


def test_the_intent_is_logged_before_the_service_sees_the_request(tmp_path: Path, ledger: Ledger) -> None:
    with _gateway(tmp_path, ledger) as client:
        response = client.post("/payments/transfers", json=BODY, headers={"X-API-Key": WALLET_KEY})
        assert response.status_code == 201, response.text
        [(headers, logged)] = ledger.seen
        # No key sent: the gateway assigned one, logged it with the intent, and forwarded it.
        assert headers["idempotency-key"].startswith("sbx-gw-")
        assert logged == [(0, "intent", headers["idempotency-key"])]
        assert float(headers["x-sandbox-deadline"]) > time.time()
        intent, outcome = _entries(client)
        assert (intent["phase"], intent["status"], intent["counts_toward"]) == ("intent", 0, None)
        assert (outcome["phase"], outcome["intent_index"], outcome["status"]) == ("outcome", 0, 201)
        assert outcome["counts_toward"] == ["limits", "history"]
        assert _volume(client) == "77.70"


def test_an_answer_lost_after_the_ledger_moved_is_reconciled_and_counted_once(
        tmp_path: Path, ledger: Ledger, payments_app) -> None:  # type: ignore[no-untyped-def]
    with _gateway(tmp_path, ledger) as client:
        gateway = client.app.state.gateway
        ledger.lose = "after"
        lost = client.post("/payments/transfers", json=BODY, headers={"X-API-Key": WALLET_KEY})
        assert lost.status_code == 504
        assert "asks the service" in lost.json()["detail"]
        assert _balance(payments_app) == "4922.30"  # it did move
        assert gateway.usage[WALLET].day_volume == 7770  # held while the outcome is unknown
        assert _volume(client) == "0.00"
        assert client.portal.call(gateway.reconcile_open) == {"applied": 1}
        phases = [(e["phase"], e["status"], e["counts_toward"]) for e in _entries(client)]
        assert phases == [("intent", 0, None), ("unanswered", 504, None), ("reconciled", 201, ["limits", "history"])]
        assert _volume(client) == "77.70"
        assert gateway.usage[WALLET].day_volume == 7770
        assert client.portal.call(gateway.reconcile_open) == {}  # closed: nothing left to ask


def test_a_request_lost_before_the_ledger_is_fenced_and_released(
        tmp_path: Path, ledger: Ledger, payments_app) -> None:  # type: ignore[no-untyped-def]
    with _gateway(tmp_path, ledger) as client:
        gateway = client.app.state.gateway
        ledger.lose = "before"
        keyed = {"X-API-Key": WALLET_KEY, "Idempotency-Key": "lost-1"}
        assert client.post("/payments/transfers", json=BODY, headers=keyed).status_code == 504
        # No record at payments: the gateway fences the key, so the attempt it gave up on can
        # never apply, and closes the intent at once (no waiting for clocks to pass a deadline).
        assert client.portal.call(gateway.reconcile_open) == {"not-applied": 1}
        reconciled = _entries(client)[-1]
        assert (reconciled["phase"], reconciled["status"], reconciled["error"]) == ("reconciled", 0, "not-applied")
        assert reconciled["counts_toward"] is None
        assert gateway.usage[WALLET].day_volume == 0
        # The lost request turns up at payments after all (it sat in a stopped process's socket).
        [late] = ledger.lost
        with TestClient(payments_app) as payments:
            arrived = payments.post("/transfers", content=late.content, headers=dict(late.headers))
            assert arrived.status_code == 504 and arrived.json()["type"].endswith(":deadline-passed")
        assert _balance(payments_app) == "5000.00"
        # The participant's retry (a later attempt) takes the fenced key over and moves the money once.
        retry = client.post("/payments/transfers", json=BODY, headers=keyed)
        assert retry.status_code == 201 and "idempotent-replayed" not in retry.headers
        assert _volume(client) == "77.70" and _balance(payments_app) == "4922.30"


def test_an_intent_left_open_by_a_crash_is_reconciled_at_start_up(
        tmp_path: Path, ledger: Ledger, payments_app) -> None:  # type: ignore[no-untyped-def]
    with _gateway(tmp_path, ledger) as client:
        ledger.lose = "after"
        keyed = {"X-API-Key": WALLET_KEY, "Idempotency-Key": "crash-1"}
        assert client.post("/payments/transfers", json=BODY, headers=keyed).status_code == 504
    # A new gateway process on the same log (the old one died with the intent open).
    with _gateway(tmp_path, ledger) as client:
        phases = [e["phase"] for e in _entries(client)]
        assert phases == ["intent", "unanswered", "reconciled"]
        assert _volume(client) == "77.70"
        retry = client.post("/payments/transfers", json=BODY, headers=keyed)
        assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
        assert _entries(client)[-1]["counts_toward"] == []
        assert _volume(client) == "77.70"
        assert _balance(payments_app) == "4922.30"
        assert client.get("/sandbox/audit/verify", headers=REGULATOR).json()["ok"] is True


def test_an_open_intent_holds_its_usage_again_after_a_restart(tmp_path: Path, ledger: Ledger) -> None:
    """Until it is reconciled, a movement of unknown outcome still counts against the limits."""
    with _gateway(tmp_path, ledger) as client:
        ledger.lose = "after"
        assert client.post("/payments/transfers", json=BODY, headers={"X-API-Key": WALLET_KEY}).status_code == 504
    ledger.down = True  # payments cannot be asked when the new gateway starts
    with _gateway(tmp_path, ledger) as client:
        gateway = client.app.state.gateway
        assert list(gateway.open_intents) == [0]
        assert gateway.usage[WALLET].day_volume == 7770
        ledger.down = False
        assert client.portal.call(gateway.reconcile_open) == {"applied": 1}
        assert gateway.usage[WALLET].day_volume == 7770 and _volume(client) == "77.70"


def _claim_left_by_a_dead_process(payments_dir: Path, request: httpx.Request, claimed: datetime) -> None:
    """The row a payments process leaves when it dies right after claiming the request's key."""
    engine = create_engine(f"sqlite:///{payments_dir / 'payments.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(insert(IdempotencyKeys).values(
            id="idem_dead", scope=request.headers["x-sandbox-participant"], key=request.headers["idempotency-key"],
            fingerprint=fingerprint("POST", "/transfers", request.content), state="in_flight",
            created_at=claimed, token="dead-process", claimed_at=claimed))
    engine.dispose()


class DiesAfterClaiming(Ledger):
    def __init__(self, app: Any, gateway_db: Path, payments_dir: Path, claimed: datetime) -> None:
        super().__init__(app, gateway_db)
        self.payments_dir, self.claimed = payments_dir, claimed
        self.died = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/transfers" and not self.died:
            self.died = True
            _claim_left_by_a_dead_process(self.payments_dir, request, self.claimed)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return await super().handle_async_request(request)


def test_a_claim_left_by_a_dead_service_is_released_once_its_lease_is_over(
        tmp_path: Path, payments_app) -> None:  # type: ignore[no-untyped-def]
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    wire = DiesAfterClaiming(payments_app, tmp_path / "gateway" / "gateway.sqlite3", tmp_path / "payments", an_hour_ago)
    with _gateway(tmp_path, wire, read_timeout=0.05, connect_timeout=0.05) as client, TestClient(payments_app):
        gateway = client.app.state.gateway
        keyed = {"X-API-Key": WALLET_KEY, "Idempotency-Key": "died-1"}
        assert client.post("/payments/transfers", json=BODY, headers=keyed).status_code == 504
        # The service still shows the dead process's claim; its lease is over, so the gateway
        # fences it (its request can never commit now): not applied.
        assert client.portal.call(gateway.reconcile_open) == {"not-applied": 1}
        assert gateway.usage[WALLET].day_volume == 0
        retry = client.post("/payments/transfers", json=BODY, headers=keyed)  # no stuck key: it runs
        assert retry.status_code == 201, retry.text
        assert "idempotent-replayed" not in retry.headers
        assert _volume(client) == "77.70" and _balance(payments_app) == "4922.30"


def test_a_live_claim_is_not_released(tmp_path: Path, payments_app) -> None:  # type: ignore[no-untyped-def]
    request = httpx.Request("POST", "http://payments/transfers", json=BODY,
                            headers={"x-sandbox-participant": WALLET, "idempotency-key": "live-1"})
    with TestClient(payments_app) as payments:
        _claim_left_by_a_dead_process(tmp_path / "payments", request, datetime.now(UTC))
        url = "/_sandbox/idempotency-fences/live-1"
        answer = payments.post(url, params={"fingerprint": fingerprint("POST", "/transfers", request.content),
                                            "scope": WALLET, "deadline": time.time()})
        assert answer.status_code == 200 and answer.json()["state"] == "in_flight"


def test_another_participant_s_request_under_the_same_key_does_not_decide_mine(
        tmp_path: Path, ledger: Ledger, payments_app) -> None:  # type: ignore[no-untyped-def]
    """Keys are per participant: reconciliation asks about the key in the sender's scope only."""
    with _gateway(tmp_path, ledger) as client:
        gateway = client.app.state.gateway
        ledger.lose = "after"
        assert client.post("/payments/transfers", json=BODY,
                           headers={"X-API-Key": WALLET_KEY, "Idempotency-Key": "order-1"}).status_code == 504
        other = client.post("/sandbox/participants", headers=REGULATOR, json={
            "name": "Other Firm", "services": ["payments"], "limits": {
                "max_single_transaction": "1000.00", "daily_volume": "1000.00", "max_customers": 5,
                "rate_limit_per_minute": 100}}).json()["api_key"]
        refused = client.post("/payments/transfers", json=BODY, headers={"X-API-Key": other, "Idempotency-Key": "order-1"})
        assert refused.status_code == 404  # not its wallet; saved under its own scope
        assert client.portal.call(gateway.reconcile_open) == {"applied": 1}
        assert _volume(client) == "77.70"


def test_a_replay_never_counts_and_another_body_does_not_displace_the_key(tmp_path: Path, ledger: Ledger) -> None:
    with _gateway(tmp_path, ledger) as client:
        keyed = {"X-API-Key": WALLET_KEY, "Idempotency-Key": "k-1"}
        assert client.post("/payments/transfers", json=BODY, headers=keyed).status_code == 201
        other_body = {**BODY, "amount": {"amount": "200.00", "currency": "CNY"}}
        assert client.post("/payments/transfers", json=other_body, headers=keyed).status_code == 409
        replay = client.post("/payments/transfers", json=BODY, headers=keyed)
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert _entries(client)[-1]["counts_toward"] == []
        assert _volume(client) == "77.70"
        assert client.app.state.gateway.usage[WALLET].day_volume == 7770


def test_only_the_header_the_service_honours_is_its_key(tmp_path: Path, ledger: Ledger) -> None:
    """Payments reads Idempotency-Key; OBIE's x-idempotency-key sent to it is not a key there, so
    the gateway assigns one of its own and reconciles by that."""
    with _gateway(tmp_path, ledger) as client:
        response = client.post("/payments/transfers", json=BODY,
                               headers={"X-API-Key": WALLET_KEY, "x-idempotency-key": "obie-style"})
        assert response.status_code == 201
        [(headers, _)] = ledger.seen
        assert headers["idempotency-key"].startswith("sbx-gw-")
        assert _entries(client)[0]["idempotency_key"] == headers["idempotency-key"]


def test_a_retry_lost_like_the_first_attempt_is_fenced_too(
        tmp_path: Path, ledger: Ledger, payments_app) -> None:  # type: ignore[no-untyped-def]
    """The key already holds the first attempt's fence; the retry's later deadline would lift it,
    so the gateway raises the fence to the retry's deadline before calling it not applied."""
    with _gateway(tmp_path, ledger) as client:
        gateway = client.app.state.gateway
        keyed = {"X-API-Key": WALLET_KEY, "Idempotency-Key": "lost-twice"}
        for _ in range(2):
            ledger.lose = "before"
            assert client.post("/payments/transfers", json=BODY, headers=keyed).status_code == 504
            assert client.portal.call(gateway.reconcile_open) == {"not-applied": 1}
        with TestClient(payments_app) as payments:
            for late in ledger.lost:  # both turn up late: neither may apply
                arrived = payments.post("/transfers", content=late.content, headers=dict(late.headers))
                assert arrived.status_code == 504, arrived.text
        assert _balance(payments_app) == "5000.00"
        third = client.post("/payments/transfers", json=BODY, headers=keyed)
        assert third.status_code == 201 and _volume(client) == "77.70" and _balance(payments_app) == "4922.30"


@pytest.mark.parametrize("key", [".", ".."])
def test_a_key_made_of_dots_is_still_reconciled(tmp_path: Path, ledger: Ledger, key: str) -> None:
    with _gateway(tmp_path, ledger) as client:
        ledger.lose = "after"
        keyed = {"X-API-Key": WALLET_KEY, "Idempotency-Key": key}
        assert client.post("/payments/transfers", json=BODY, headers=keyed).status_code == 504
        assert client.portal.call(client.app.state.gateway.reconcile_open) == {"applied": 1}
        assert _volume(client) == "77.70"
