"""Two gateway apps in one process on one PostgreSQL database, payments a small fake with the
idempotency records the gateway reconciles against: the moments between replicas made exact
(a replica starting while another's transfer is on its way, a hold another replica took, a clock
moved before a replica started). tests/faults/test_replicas.py runs real processes under load."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from sandbox.gateway.main import GatewaySettings, create_app
from services.common.demo import DEMO_REGULATOR_KEY
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres

REGULATOR = {"X-API-Key": DEMO_REGULATOR_KEY}
PAYER, PAYEE = "acc_00000000000000000000000001", "acc_00000000000000000000000002"
NOWHERE = "http://127.0.0.1:9"


def _answer(status: int, body: dict | None = None) -> httpx.Response:
    raw = json.dumps(body or {}).encode()
    return httpx.Response(status, headers={"content-type": "application/json", "content-length": str(len(raw))},
                          stream=httpx.ByteStream(raw))  # unread, as the gateway's transport gets it


class FakePayments:
    """Transfers applied at once (their key's record `done`), answered when `answers` is set;
    the idempotency records and fences the gateway's reconciliation reads."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, int]] = {}
        self.fenced: set[str] = set()
        self.answers = threading.Event()
        self.answers.set()
        self.applied = threading.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.startswith("/accounts/"):
            return _answer(200, {"owner_name": "Replica Owner"})
        if request.method == "POST" and path == "/transfers":
            key = request.headers["idempotency-key"]
            if key in self.fenced:
                return _answer(504, {"type": "deadline-passed"})
            self.records[key] = ("done", 201)
            self.applied.set()
            await asyncio.to_thread(self.answers.wait, 30)  # the answer on its way back
            return _answer(201, {"id": f"jnl_{uuid.uuid4().hex[:8]}", "status": "completed"})
        if request.method == "GET" and path.startswith("/_sandbox/idempotency-keys/"):
            state, status = self.records.get(path.rsplit("/", 1)[1], ("absent", 0))
            return _answer(200, {"state": state, "status_code": status})
        if request.method == "POST" and path.startswith("/_sandbox/idempotency-fences/"):
            key = path.rsplit("/", 1)[1]
            if key in self.records:
                state, status = self.records[key]
                return _answer(200, {"state": state, "status_code": status})
            self.fenced.add(key)
            return _answer(200, {"state": "fenced"})
        return _answer(404)


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database("sbx_gw_replicas") as url:
        yield url


@pytest.fixture
def payments() -> FakePayments:
    return FakePayments()


def _replica(url: str, payments: FakePayments, data_dir: Path) -> TestClient:
    settings = GatewaySettings(database_url=url, data_dir=data_dir, upstream_payments=NOWHERE,
                               upstream_credit=NOWHERE, upstream_advisor=NOWHERE, upstream_openbanking=NOWHERE,
                               reconcile_interval_s=0.2)
    return TestClient(create_app(settings, transports={"payments": httpx.MockTransport(payments.handle)}))


def _admit(client: TestClient, daily_volume: str) -> tuple[str, str]:
    answer = client.post("/sandbox/participants", headers=REGULATOR, json={
        "name": f"Replica {uuid.uuid4().hex[:5]}", "services": ["payments"],
        "limits": {"max_single_transaction": "100.00", "daily_volume": daily_volume, "max_customers": 10,
                   "rate_limit_per_minute": 10_000}})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["api_key"]


def _transfer(client: TestClient, key: str, amount: str) -> httpx.Response:
    return client.post("/payments/transfers", headers={"X-API-Key": key, "Idempotency-Key": uuid.uuid4().hex},
                       json={"from_account_id": PAYER, "to_account_id": PAYEE,
                             "amount": {"amount": amount, "currency": "CNY"}})


def _logged(url: str, participant_id: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT phase, status, intent_idx, counts FROM audit_log WHERE participant_id = :p "
                "AND value_minor IS NOT NULL ORDER BY idx"), {"p": participant_id})]
    finally:
        engine.dispose()


def _volume(client: TestClient, participant_id: str) -> int:
    gateway = client.app.state.gateway
    gateway.catch_up()
    usage = gateway.usage.get(participant_id)
    return 0 if usage is None else usage.day_volume


@contextmanager
def _on_its_way(client: TestClient, payments: FakePayments, key: str, amount: str) -> Iterator[dict[str, httpx.Response]]:
    """A transfer through `client` that payments has applied, its answer held back until the
    block ends (then it is in the dict, as "answer"), whatever happens in the block."""
    payments.answers.clear()
    payments.applied.clear()
    answered: dict[str, httpx.Response] = {}
    sender = threading.Thread(target=lambda: answered.setdefault("answer", _transfer(client, key, amount)))
    sender.start()
    try:
        assert payments.applied.wait(30)
        yield answered
    finally:
        payments.answers.set()
        sender.join(30)


def test_a_replica_starting_leaves_another_replicas_transfer_on_its_way_alone(
        database: str, payments: FakePayments, tmp_path: Path) -> None:
    """B starts while A's transfer is applied at payments and its answer is still coming: B holds
    it as A's, does not reconcile it (which would count it twice with A's outcome), and both
    count it once."""
    with ExitStack() as stack:
        a = stack.enter_context(_replica(database, payments, tmp_path / "a"))
        participant_id, key = _admit(a, "1000.00")
        with _on_its_way(a, payments, key, "20.00") as answered:
            b = stack.enter_context(_replica(database, payments, tmp_path / "b"))  # start-up: load, reconcile
            assert len(b.app.state.gateway.foreign) == 1 and not b.app.state.gateway.open_intents
            assert _volume(b, participant_id) == 2000  # held as A's
        assert answered["answer"].status_code == 201
        assert [(phase, status) for phase, status, _, _ in _logged(database, participant_id)] == \
            [("intent", 0), ("outcome", 201)]
        assert _volume(a, participant_id) == _volume(b, participant_id) == 2000


def test_a_hold_taken_on_one_replica_limits_the_other(database: str, payments: FakePayments,
                                                      tmp_path: Path) -> None:
    """20.00 a day: 15.00 on its way through A holds it, so 10.00 through B is refused, and once
    A's transfer is in, 5.00 through B passes."""
    with _replica(database, payments, tmp_path / "a") as a, _replica(database, payments, tmp_path / "b") as b:
        participant_id, key = _admit(a, "20.00")
        with _on_its_way(a, payments, key, "15.00") as answered:
            refused = _transfer(b, key, "10.00")
        assert refused.status_code == 403 and refused.json()["limit"] == "daily_volume", refused.text
        assert answered["answer"].status_code == 201
        assert _transfer(b, key, "5.00").status_code == 201
        assert _transfer(a, key, "0.01").status_code == 403
        assert _volume(a, participant_id) == _volume(b, participant_id) == 2000


def test_a_replica_started_after_a_clock_move_keeps_the_sandbox_time(database: str, payments: FakePayments,
                                                                     tmp_path: Path) -> None:
    with _replica(database, payments, tmp_path / "a") as a:
        moved = a.post("/_sandbox/clock/advance", headers=REGULATOR, json={"seconds": 86_400})
        assert moved.status_code == 200, moved.text
        with _replica(database, payments, tmp_path / "b") as b:
            a_now = a.get("/_sandbox/clock", headers=REGULATOR).json()["now"]
            b_now = b.get("/_sandbox/clock", headers=REGULATOR).json()["now"]
    assert a_now[:13] == b_now[:13], (a_now, b_now)  # the same hour: a day ahead on both


def test_replicas_started_under_load_count_what_the_log_counts(database: str, payments: FakePayments,
                                                               tmp_path: Path) -> None:
    """Transfers keep coming through A while B, C and D start: each new replica's memory is the
    log's, never an entry counted twice (start-up reads the log as of its head)."""
    with _replica(database, payments, tmp_path / "a") as a:
        participant_id, key = _admit(a, "100000.00")
        stop = threading.Event()
        statuses: list[int] = []

        def send() -> None:
            while not stop.is_set():
                statuses.append(_transfer(a, key, "1.00").status_code)

        with ExitStack() as started:
            sender = threading.Thread(target=send)
            sender.start()
            try:
                replicas = [started.enter_context(_replica(database, payments, tmp_path / name))
                            for name in ("b", "c", "d")]
            finally:
                stop.set()
                sender.join(30)
            counted = sum(1 for phase, status, _, counts in _logged(database, participant_id)
                          if phase == "outcome" and status == 201 and counts in (None, "limits"))
            assert counted == statuses.count(201) > 0
            assert [_volume(r, participant_id) for r in (a, *replicas)] == [counted * 100] * 4
