"""No stuck keys (services/common/idempotency.py): an in-flight claim holds a lease, after which
a retry takes it over and runs the work; a slow original that lost its claim commits nothing;
past the gateway's deadline (`X-Sandbox-Deadline`) no key is claimed. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, UniqueConstraint, create_engine, insert
from sqlalchemy import inspect as inspect_db

from services.common.clock import frozen_clock
from services.common.db import UTCDateTime, database_url as resolve_database_url
from services.common.idempotency import REPLAY_HEADER, Idempotency, fingerprint, wall_clock
from services.common.problems import Problem
from services.payments import service
from services.payments.main import PaymentsSettings, create_app
from services.payments.schemas import AccountCreate, TransferCreate
from tests.platform.test_idempotency import PROBLEM, TRANSFER, ZHANG_MIN, _balance, _journal_ids, _key, _plus

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 3.0  # short enough to wait out, long enough to see a claim still held after a restart
TRANSFER_BYTES = json.dumps(TRANSFER).encode()


def _app(tmp_path: Path, database_url: str | None, lease_s: float = LEASE_S) -> FastAPI:
    return create_app(
        PaymentsSettings(data_dir=tmp_path, database_url=database_url, idempotency_lease_seconds=lease_s),
        clock=frozen_clock(),
    )


@pytest.fixture
def app(database_url: str | None, tmp_path: Path) -> Iterator[FastAPI]:
    application = _app(tmp_path, database_url, lease_s=30)
    with TestClient(application):
        yield application


def _outcome(client: TestClient, key: str, body: bytes = TRANSFER_BYTES, path: str = "/transfers") -> dict:
    r = client.get(f"/_sandbox/idempotency-keys/{key}", params={"fingerprint": fingerprint("POST", path, body)})
    assert r.status_code == 200, r.text
    return r.json()


# -- a process killed right after its claim ----------------------------------------------------

KILLED_AFTER_CLAIM = """
import os, signal, sys
from fastapi.testclient import TestClient
from services.common.clock import frozen_clock
from services.payments import service
from services.payments.main import PaymentsSettings, create_app

def killed(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the key is claimed; no money has moved yet

service.transfer = killed
app = create_app(PaymentsSettings(data_dir=sys.argv[1], database_url=sys.argv[2] or None), clock=frozen_clock())
with TestClient(app) as client:
    client.post("/transfers", content=sys.argv[3], headers={"Idempotency-Key": "killed",
                                                             "Content-Type": "application/json"})
"""


def _killed_after_claim(tmp_path: Path, database_url: str | None) -> None:
    """Payments in a process of its own, killed with SIGKILL inside the unit of work of a keyed
    transfer: the state `kill -9` leaves, a committed claim and no journal."""
    run = subprocess.run([sys.executable, "-c", KILLED_AFTER_CLAIM, str(tmp_path), database_url or "",
                          TRANSFER_BYTES.decode()], cwd=ROOT, capture_output=True, timeout=60)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()


def test_after_a_kill_the_claim_holds_for_its_lease_then_a_retry_runs_the_transfer_once(
    database_url: str | None, tmp_path: Path
) -> None:
    _killed_after_claim(tmp_path, database_url)

    with TestClient(_app(tmp_path, database_url)) as client:
        journals = _journal_ids(client)
        left = _outcome(client, "killed")
        assert left["state"] == "in_flight"
        expires = datetime.fromisoformat(left["lease_expires_at"])

        held = client.post("/transfers", json=TRANSFER, headers=_key("killed"))
        assert held.status_code == 409, held.text
        assert held.json()["type"] == PROBLEM + "idempotency-key-in-flight"
        assert 1 <= int(held.headers["retry-after"]) <= LEASE_S

        time.sleep(max(0.0, (expires - wall_clock()).total_seconds()) + 0.1)
        retry = client.post("/transfers", json=TRANSFER, headers=_key("killed"))
        assert retry.status_code == 201, retry.text
        assert REPLAY_HEADER not in retry.headers
        replay = client.post("/transfers", json=TRANSFER, headers=_key("killed"))
        assert replay.headers[REPLAY_HEADER] == "true" and replay.json() == retry.json()

        assert _journal_ids(client) == _plus(journals, retry.json()["id"])
        assert _balance(client, ZHANG_MIN) == "1210.00"
        assert _outcome(client, "killed")["state"] == "done"
        assert client.get("/invariants").json()["ok"]


# -- a slow original and a take-over, driven by hand --------------------------------------------

def _by_hand(app: FastAPI, key: str, body: bytes, path: str, wall: Callable[[], datetime]) -> Idempotency:
    """The idempotency context a request would get, with a wall clock the test moves."""
    return Idempotency(app.state.idempotency_table, app.state.clock, key, scope="direct",
                       fingerprint=fingerprint("POST", path, body), path=path, database=app.state.db,
                       lease=app.state.idempotency_lease, now=wall)


def _transfer_in(session: Any, idem: Idempotency) -> Callable[[], Any]:
    body = TransferCreate.model_validate(TRANSFER)
    return lambda: service.transfer(session, body, idem.clock.now(), idem.record_id, idem.caller)


def test_an_original_that_lost_its_claim_mid_work_commits_nothing_and_one_journal_is_written(
    app: FastAPI,
) -> None:
    """The original claims, stalls past its lease; a retry takes the claim over and transfers;
    then the original's transfer runs into the retry's journal and is rolled back."""
    client = TestClient(app)
    journals = _journal_ids(client)
    start = wall_clock()
    lease = app.state.idempotency_lease
    original = _by_hand(app, "overlap", TRANSFER_BYTES, "/transfers", lambda: start)
    takeover = _by_hand(app, "overlap", TRANSFER_BYTES, "/transfers", lambda: start + lease + timedelta(seconds=1))
    answers: dict[str, Any] = {}

    def stalled_original() -> Any:
        with app.state.db.session() as session:
            answers["takeover"] = takeover.run(session, _transfer_in(session, takeover))
        return original_transfer()

    with app.state.db.session() as session:
        original_transfer = _transfer_in(session, original)
        with pytest.raises(Problem) as lost:
            original.run(session, stalled_original)

    assert lost.value.status == 409 and lost.value.slug == "idempotency-key-in-flight"
    assert answers["takeover"].status_code == 201
    taken = json.loads(answers["takeover"].body)
    assert _journal_ids(client) == _plus(journals, taken["id"])
    assert _balance(client, ZHANG_MIN) == "1210.00"
    replay = client.post("/transfers", json=TRANSFER, headers=_key("overlap"))
    assert replay.headers[REPLAY_HEADER] == "true" and replay.json() == taken
    assert client.get("/invariants").json()["ok"]


def test_an_original_finishing_after_a_take_over_is_rolled_back(app: FastAPI) -> None:
    """Work that does not collide with the retry's rows (opening an account) still cannot
    commit: the original's finish finds its token gone and rolls its account back."""
    client = TestClient(app)
    wallet = {"kind": "personal", "owner_name": "Slow Original", "currency": "CNY"}
    body = json.dumps(wallet).encode()
    start, lease = wall_clock(), app.state.idempotency_lease
    original = _by_hand(app, "overlap-open", body, "/accounts", lambda: start)
    takeover = _by_hand(app, "overlap-open", body, "/accounts", lambda: start + lease + timedelta(seconds=1))
    answers: dict[str, Any] = {}

    def open_account(session: Any, idem: Idempotency) -> Any:
        return service.open_account(session, AccountCreate.model_validate(wallet), idem.clock.now(), idem.caller)

    def stalled_original(session: Any) -> Any:
        with app.state.db.session() as other:
            answers["takeover"] = takeover.run(other, lambda: open_account(other, takeover))
        return open_account(session, original)

    with app.state.db.session() as session, pytest.raises(Problem) as lost:
        original.run(session, lambda: stalled_original(session))

    assert lost.value.slug == "idempotency-key-in-flight"
    opened = [a for a in client.get("/accounts", params={"limit": 100}).json()["data"]
              if a["owner_name"] == "Slow Original"]
    assert [a["id"] for a in opened] == [json.loads(answers["takeover"].body)["id"]]


def test_concurrent_original_and_take_over_commit_one_transfer(app: FastAPI, database_url: str | None) -> None:
    """The original has moved the money (not yet committed) when the retry tries to take its
    claim over, from another thread. PostgreSQL: the take-over's compare-and-set commits, so the
    original's finish matches no row and rolls back; the retry's transfer, waiting on the
    original's row locks, then commits. SQLite: the take-over waits for the writer's lock, the
    original commits first, and the retry replays it. Either way: one journal."""
    client = TestClient(app)
    journals = _journal_ids(client)
    start, lease = wall_clock(), app.state.idempotency_lease
    original = _by_hand(app, "race", TRANSFER_BYTES, "/transfers", lambda: start)
    takeover = _by_hand(app, "race", TRANSFER_BYTES, "/transfers", lambda: start + lease + timedelta(seconds=1))
    table = app.state.idempotency_table
    answers: dict[str, Any] = {}

    def retry() -> None:
        with app.state.db.session() as other:
            try:
                answers["takeover"] = takeover.run(other, _transfer_in(other, takeover))
            except Problem as problem:
                answers["takeover"] = problem

    def claim_taken() -> bool:
        with app.state.db.session(app.state.db.reader) as reader:
            return reader.execute(table.select().where(table.c.key == "race")).one().token != original.token

    def transfer_then_let_the_retry_in(session: Any) -> Any:
        moved = _transfer_in(session, original)()
        thread.start()
        deadline = time.monotonic() + (5 if database_url else 1)  # SQLite: the retry cannot get in
        while time.monotonic() < deadline and not claim_taken():
            time.sleep(0.02)
        return moved

    thread = threading.Thread(target=retry)
    with app.state.db.session() as session:
        try:
            answers["original"] = original.run(session, lambda: transfer_then_let_the_retry_in(session))
        except Problem as problem:
            answers["original"] = problem
    thread.join(30)

    if database_url:  # PostgreSQL
        assert isinstance(answers["original"], Problem) and answers["original"].slug == "idempotency-key-in-flight"
        winner = answers["takeover"]
    else:
        assert answers["takeover"].headers[REPLAY_HEADER] == "true"
        winner = answers["original"]
    assert winner.status_code == 201 and REPLAY_HEADER not in winner.headers
    assert _journal_ids(client) == _plus(journals, json.loads(winner.body)["id"])
    assert _balance(client, ZHANG_MIN) == "1210.00"
    assert client.get("/invariants").json()["ok"]


# -- the deadline fence ------------------------------------------------------------------------

def _deadline(seconds_from_now: float) -> dict[str, str]:
    return {"X-Sandbox-Deadline": f"{time.time() + seconds_from_now:.3f}"}


def test_past_the_deadline_a_key_is_not_claimed_and_nothing_is_saved(app: FastAPI) -> None:
    client = TestClient(app)
    journals = _journal_ids(client)
    late = client.post("/transfers", json=TRANSFER, headers=_key("late", **_deadline(-1)))
    assert late.status_code == 504, late.text
    assert late.headers["content-type"] == "application/problem+json"
    problem = late.json()
    assert problem["type"] == PROBLEM + "deadline-passed"
    assert problem["title"] == "The gateway stopped waiting for this request"
    assert "nothing was applied" in problem["detail"] and "same Idempotency-Key" in problem["detail"]
    assert _outcome(client, "late")["state"] == "absent"
    assert _journal_ids(client) == journals

    # Without a key either: the gateway gave up, so nothing may move.
    unkeyed = client.post("/transfers", json=TRANSFER, headers=_deadline(-1))
    assert unkeyed.status_code == 504 and unkeyed.json()["type"] == PROBLEM + "deadline-passed"
    assert _journal_ids(client) == journals

    # The retry, within its own deadline, runs.
    retry = client.post("/transfers", json=TRANSFER, headers=_key("late", **_deadline(10)))
    assert retry.status_code == 201 and REPLAY_HEADER not in retry.headers
    assert _balance(client, ZHANG_MIN) == "1210.00"


def test_past_the_deadline_a_done_key_still_replays(app: FastAPI) -> None:
    client = TestClient(app)
    first = client.post("/transfers", json=TRANSFER, headers=_key("done-then-late"))
    late = client.post("/transfers", json=TRANSFER, headers=_key("done-then-late", **_deadline(-1)))
    assert late.status_code == 201 and late.headers[REPLAY_HEADER] == "true"
    assert late.json() == first.json()


def test_past_the_deadline_a_stale_claim_is_not_taken_over(app: FastAPI) -> None:
    client = TestClient(app)
    journals = _journal_ids(client)
    _abandon_claim(app, "stale-and-late", claimed_ago=timedelta(minutes=5))
    late = client.post("/transfers", json=TRANSFER, headers=_key("stale-and-late", **_deadline(-1)))
    assert late.status_code == 504 and late.json()["type"] == PROBLEM + "deadline-passed"
    assert _outcome(client, "stale-and-late")["state"] == "in_flight"  # left for an in-time retry
    retry = client.post("/transfers", json=TRANSFER, headers=_key("stale-and-late"))
    assert retry.status_code == 201
    assert _journal_ids(client) == _plus(journals, retry.json()["id"])


def test_a_claim_that_commits_after_the_deadline_is_given_back(app: FastAPI, monkeypatch) -> None:
    """The process paused between the deadline check and the claim's commit: the claim is
    released unused, so "no record after the deadline" keeps meaning "not applied"."""
    from services.common import idempotency

    deadline = time.time() + 60
    readings = iter([deadline - 1, deadline + 1])  # before the claim, then after its commit
    monkeypatch.setattr(idempotency, "time", type("PausedClock", (), {"time": staticmethod(lambda: next(readings))}))
    client = TestClient(app)
    journals = _journal_ids(client)
    late = client.post("/transfers", json=TRANSFER, headers=_key("paused", **{"X-Sandbox-Deadline": str(deadline)}))
    assert late.status_code == 504 and late.json()["type"] == PROBLEM + "deadline-passed"
    assert _outcome(client, "paused")["state"] == "absent"
    assert _journal_ids(client) == journals


# -- claims left by hand, and databases from before leases ---------------------------------------

def _abandon_claim(app: FastAPI, key: str, claimed_ago: timedelta) -> None:
    """Commit a claim for a keyed transfer and walk away: what a process killed after its claim leaves."""
    table = app.state.idempotency_table
    with app.state.db.session() as session:
        session.execute(insert(table).values(
            id=f"idem_{key}", scope="direct", key=key, fingerprint=fingerprint("POST", "/transfers", TRANSFER_BYTES),
            state="in_flight", created_at=app.state.clock.now(), token="someone-else",
            claimed_at=wall_clock() - claimed_ago))
        session.commit()


def test_a_live_claim_answers_in_flight_with_the_seconds_left_on_its_lease(app: FastAPI) -> None:
    client = TestClient(app)
    _abandon_claim(app, "live", claimed_ago=timedelta(seconds=10))  # 20 s left of 30
    held = client.post("/transfers", json=TRANSFER, headers=_key("live"))
    assert held.status_code == 409 and held.json()["type"] == PROBLEM + "idempotency-key-in-flight"
    assert 19 <= int(held.headers["retry-after"]) <= 20
    # Another body under the key is still a reuse, however stale the claim.
    other = client.post("/transfers", json={**TRANSFER, "description": "other"}, headers=_key("live"))
    assert other.status_code == 409 and other.json()["type"] == PROBLEM + "idempotency-key-reused"


OLD_SCHEMA = MetaData()
# The key table as services created it before claims had a token and a lease.
Table("idempotency_keys", OLD_SCHEMA,
      Column("id", String(40), primary_key=True), Column("scope", String(200), nullable=False),
      Column("key", String(255), nullable=False), Column("fingerprint", String(64), nullable=False),
      Column("state", String(12), nullable=False), Column("status_code", Integer),
      Column("media_type", String(60)), Column("body", Text),
      Column("created_at", UTCDateTime(), nullable=False),
      UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"))


def test_a_database_from_before_leases_is_upgraded_and_its_stuck_claims_are_freed(
    database_url: str | None, tmp_path: Path
) -> None:
    engine = create_engine(resolve_database_url(database_url, tmp_path, "payments"))
    OLD_SCHEMA.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(OLD_SCHEMA.tables["idempotency_keys"]).values(
            id="idem_stuck", scope="direct", key="stuck-for-a-day", state="in_flight",
            fingerprint=fingerprint("POST", "/transfers", TRANSFER_BYTES), created_at=frozen_clock().now()))
    engine.dispose()

    with TestClient(_app(tmp_path, database_url)) as client:
        columns = {c["name"] for c in inspect_db(client.app.state.db.engine).get_columns("idempotency_keys")}
        assert {"token", "claimed_at"} <= columns
        assert _outcome(client, "stuck-for-a-day")["lease_expires_at"] is None  # free at once
        retry = client.post("/transfers", json=TRANSFER, headers=_key("stuck-for-a-day"))
        assert retry.status_code == 201 and REPLAY_HEADER not in retry.headers
        assert _balance(client, ZHANG_MIN) == "1210.00"
