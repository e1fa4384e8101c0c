"""Idempotency-Key on the payments POSTs, with Stripe's semantics (services/common/idempotency.py):
same key + same request → the saved status and body again, marked `Idempotent-Replayed: true`,
and the money moves once; same key + another request → 409; same key while the first request is
still running → 409 (Retry-After: the seconds left on its lease); keys live 24 hours by the service
clock; keys are scoped per participant. Leases, the deadline fence and the outcome read are in
test_idempotency_lease.py and test_outcomes.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.clock import frozen_clock
from services.common.idempotency import REPLAY_HEADER
from services.payments import repository, service
from services.payments.main import PaymentsSettings, create_app
from tests.support.servers import serve

LI_WEI = "acc_00000000000000000000000001"  # demo wallet, 5000.00 CNY
ZHANG_MIN = "acc_00000000000000000000000002"  # demo wallet, 1200.00 CNY
PROBLEM = "urn:fintech-sandbox:problem:"
DAY = 24 * 3600

TRANSFER = {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": {"amount": "10.00", "currency": "CNY"}}
DEPOSIT = {"account_id": LI_WEI, "card_number": "4242424242424242", "amount": {"amount": "25.50", "currency": "CNY"}}


def _app(tmp_path, database_url: str | None = None):  # type: ignore[no-untyped-def]
    return create_app(
        PaymentsSettings(data_dir=tmp_path, database_url=database_url, allow_time_travel=True),
        clock=frozen_clock(),
    )


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    with TestClient(_app(tmp_path)) as c:
        yield c


@pytest.fixture
def any_db_client(database_url, tmp_path) -> Iterator[TestClient]:
    """The same service on a SQLite file and on a fresh PostgreSQL database."""
    with TestClient(_app(tmp_path, database_url)) as c:
        yield c


def _journal_ids(client: Any) -> list[str]:
    ids: list[str] = []  # returned sorted: only which journals exist matters here
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get("/journals", params=params).json()
        ids += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            return sorted(ids)


def _plus(journal_ids: list[str], new: str) -> list[str]:
    """The list after one more journal (the list is in id order; compare as sorted)."""
    return sorted([*journal_ids, new])


def _balance(client: Any, account_id: str) -> str:
    return client.get(f"/accounts/{account_id}").json()["balance"]["amount"]


def _key(key: str, **extra: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **extra}


@pytest.mark.parametrize(
    ("path", "body", "account", "moved_to"),
    [("/transfers", TRANSFER, ZHANG_MIN, "1210.00"), ("/deposits", DEPOSIT, LI_WEI, "5025.50")],
    ids=["transfer", "deposit"],
)
def test_same_key_same_body_replays_the_saved_response_and_moves_money_once(
    any_db_client: TestClient, path: str, body: dict, account: str, moved_to: str
) -> None:
    client = any_db_client
    before = _journal_ids(client)
    first = client.post(path, json=body, headers=_key("retry-me"))
    assert first.status_code == 201, first.text
    assert REPLAY_HEADER not in first.headers

    again = client.post(path, json=body, headers=_key("retry-me"))
    # Key order and spacing do not make it another request.
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    third = client.post(path, content=reordered, headers=_key("retry-me", **{"Content-Type": "application/json"}))

    for replay in (again, third):
        assert replay.status_code == 201
        assert replay.headers[REPLAY_HEADER] == "true"
        assert replay.headers["content-type"] == "application/json"
        assert replay.json() == first.json()
    assert _journal_ids(client) == _plus(before, first.json()["id"])  # exactly one journal written
    assert _balance(client, account) == moved_to
    assert client.get("/invariants").json()["ok"]


def test_same_key_with_another_body_or_route_is_a_409_and_writes_nothing(any_db_client: TestClient) -> None:
    client = any_db_client
    first = client.post("/transfers", json=TRANSFER, headers=_key("k-1"))
    assert first.status_code == 201
    journals = _journal_ids(client)

    other_amount = {**TRANSFER, "amount": {"amount": "11.00", "currency": "CNY"}}
    for path, body in (("/transfers", other_amount), ("/deposits", DEPOSIT)):
        r = client.post(path, json=body, headers=_key("k-1"))
        assert r.status_code == 409, r.text
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["type"] == PROBLEM + "idempotency-key-reused"
        assert problem["title"] == "Idempotency key reused with another request"
        assert "'k-1'" in problem["detail"]
        assert REPLAY_HEADER not in r.headers

    assert _journal_ids(client) == journals
    assert _balance(client, ZHANG_MIN) == "1210.00"
    # The original is still what the key replays.
    replay = client.post("/transfers", json=TRANSFER, headers=_key("k-1"))
    assert replay.headers[REPLAY_HEADER] == "true" and replay.json() == first.json()


def test_same_key_while_the_first_request_is_in_flight_is_a_409(database_url, tmp_path, monkeypatch) -> None:
    """Two workers of the service on one database, as `uvicorn --workers 2` runs it, each with
    a real HTTP client: the first request is held inside its unit of work in one worker (after
    the kit claimed the key, before any money moves) while the second arrives at the other with
    the same key. (Within one worker on SQLite, units of work run one after another on the event
    loop, so a same-key request there waits its turn and gets the replay.)"""
    entered, release = threading.Event(), threading.Event()
    original = service.transfer

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        if not release.wait(30):
            raise RuntimeError("the test never released the first request")
        return original(*args, **kwargs)

    monkeypatch.setattr(service, "transfer", held)
    app, other_worker = _app(tmp_path, database_url), _app(tmp_path, database_url)
    with serve(app) as base, serve(other_worker) as other_base, \
            httpx.Client(base_url=other_base, timeout=60) as second_client:
        journals = _journal_ids(second_client)
        with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=base, timeout=60) as first_client:
            try:
                first = pool.submit(first_client.post, "/transfers", json=TRANSFER, headers=_key("slow"))
                assert entered.wait(30), "the first request never reached the ledger"
                second = second_client.post("/transfers", json=TRANSFER, headers=_key("slow"))
                other = second_client.post(
                    "/transfers", json={**TRANSFER, "description": "other"}, headers=_key("slow")
                )
            finally:
                release.set()
            first_response = first.result(timeout=60)

        assert second.status_code == 409, second.text
        assert second.headers["content-type"] == "application/problem+json"
        assert second.json()["type"] == PROBLEM + "idempotency-key-in-flight"
        assert second.json()["title"] == "A request with this idempotency key is still running"
        # Retry-After: the seconds left on the first request's 30 s lease.
        assert 25 <= int(second.headers["retry-after"]) <= 30
        assert other.status_code == 409
        assert other.json()["type"] == PROBLEM + "idempotency-key-reused"

        assert first_response.status_code == 201, first_response.text
        # Once the first has finished, the retry gets its response.
        retry = second_client.post("/transfers", json=TRANSFER, headers=_key("slow"))
        assert retry.status_code == 201
        assert retry.headers[REPLAY_HEADER] == "true"
        assert retry.json() == first_response.json()
        assert _journal_ids(second_client) == _plus(journals, first_response.json()["id"])
        assert second_client.get(f"/accounts/{ZHANG_MIN}").json()["balance"]["amount"] == "1210.00"
        assert second_client.get("/invariants").json()["ok"]


def test_a_key_is_free_again_after_24_hours_by_the_service_clock(any_db_client: TestClient) -> None:
    client = any_db_client
    first = client.post("/transfers", json=TRANSFER, headers=_key("daily"))
    assert first.status_code == 201

    advanced = client.post("/_sandbox/clock/advance", json={"seconds": DAY - 1})
    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["now"] == "2026-01-06T08:59:59Z"
    replay = client.post("/transfers", json=TRANSFER, headers=_key("daily"))
    assert replay.headers[REPLAY_HEADER] == "true"
    assert replay.json() == first.json()

    client.post("/_sandbox/clock/advance", json={"seconds": 2})
    assert client.get("/_sandbox/clock").json()["now"] == "2026-01-06T09:00:01Z"
    fresh = client.post("/transfers", json=TRANSFER, headers=_key("daily"))
    assert fresh.status_code == 201
    assert REPLAY_HEADER not in fresh.headers
    assert fresh.json()["id"] != first.json()["id"]
    assert fresh.json()["created_at"] == "2026-01-06T09:00:01Z"
    assert _balance(client, ZHANG_MIN) == "1220.00"  # moved twice: once per key lifetime
    # ...and the key now belongs to the new request.
    again = client.post("/transfers", json=TRANSFER, headers=_key("daily"))
    assert again.headers[REPLAY_HEADER] == "true" and again.json() == fresh.json()


def test_invariants_stay_ok_after_an_expired_key_is_reused(client: TestClient) -> None:
    assert client.post("/transfers", json=TRANSFER, headers=_key("daily")).status_code == 201
    client.post("/_sandbox/clock/advance", json={"seconds": DAY + 1})
    assert client.post("/transfers", json=TRANSFER, headers=_key("daily")).status_code == 201
    report = client.get("/invariants").json()
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]


def test_keys_are_scoped_per_participant(client: TestClient) -> None:
    # The gateway names the caller in X-Sandbox-Participant; direct calls share one scope.
    a = _key("shared-key", **{"X-Sandbox-Participant": "ptp_00000000000000000000000001"})
    b = _key("shared-key", **{"X-Sandbox-Participant": "ptp_00000000000000000000000002"})
    wallet = {"kind": "personal", "owner_name": "Li Wei", "currency": "CNY"}
    first_a = client.post("/accounts", json=wallet, headers=a)
    first_b = client.post("/accounts", json=wallet, headers=b)
    direct = client.post("/accounts", json=wallet, headers=_key("shared-key"))
    for r in (first_a, first_b, direct):
        assert r.status_code == 201 and REPLAY_HEADER not in r.headers, r.text
    assert len({first_a.json()["id"], first_b.json()["id"], direct.json()["id"]}) == 3
    replay_a = client.post("/accounts", json=wallet, headers=a)
    assert replay_a.headers[REPLAY_HEADER] == "true" and replay_a.json() == first_a.json()
    # Another request from B under B's key is a reuse of B's key, whatever A did with it.
    other_b = client.post("/accounts", json={**wallet, "owner_name": "Zhang Min"}, headers=b)
    assert other_b.status_code == 409 and other_b.json()["type"] == PROBLEM + "idempotency-key-reused"
    assert client.get("/accounts", params={"limit": 100}).json()["data"].count(replay_a.json()) == 1


def test_a_request_that_fails_validation_does_not_use_up_the_key(client: TestClient) -> None:
    bad = {**TRANSFER, "amount": {"amount": "10.001", "currency": "CNY"}}
    r = client.post("/transfers", json=bad, headers=_key("fix-and-retry"))
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["body.amount.amount"]
    ok = client.post("/transfers", json=TRANSFER, headers=_key("fix-and-retry"))
    assert ok.status_code == 201 and REPLAY_HEADER not in ok.headers


def test_a_business_refusal_is_saved_and_replayed(client: TestClient) -> None:
    too_much = {**TRANSFER, "amount": {"amount": "9999.00", "currency": "CNY"}}
    refused = client.post("/transfers", json=too_much, headers=_key("too-much"))
    assert refused.status_code == 409
    assert refused.json()["type"] == PROBLEM + "insufficient-funds"
    journals = _journal_ids(client)
    # Even once the money is there, the key still answers what it answered.
    assert client.post("/deposits", json={**DEPOSIT, "amount": {"amount": "6000.00", "currency": "CNY"}}).status_code == 201
    replay = client.post("/transfers", json=too_much, headers=_key("too-much"))
    assert replay.status_code == 409
    assert replay.headers[REPLAY_HEADER] == "true"
    assert replay.headers["content-type"] == "application/problem+json"
    # The same problem (its `instance` is checked in the test below).
    assert _without_instance(replay.json()) == _without_instance(refused.json())
    assert len(_journal_ids(client)) == len(journals) + 1  # only the top-up

    declined = {**DEPOSIT, "card_number": "4000000000000002"}
    first = client.post("/deposits", json=declined, headers=_key("declined"))
    again = client.post("/deposits", json=declined, headers=_key("declined"))
    assert first.status_code == again.status_code == 402
    assert again.headers[REPLAY_HEADER] == "true"
    assert _without_instance(again.json()) == _without_instance(first.json())
    assert again.json()["decline_code"] == "card_declined"


def _without_instance(problem: dict) -> dict:
    return {k: v for k, v in problem.items() if k != "instance"}


def test_a_replayed_refusal_is_the_same_problem_body(client: TestClient) -> None:
    too_much = {**TRANSFER, "amount": {"amount": "9999.00", "currency": "CNY"}}
    refused = client.post("/transfers", json=too_much, headers=_key("too-much"))
    replay = client.post("/transfers", json=too_much, headers=_key("too-much"))
    assert refused.status_code == replay.status_code == 409
    assert replay.headers[REPLAY_HEADER] == "true"
    assert replay.json() == refused.json()


def test_a_crash_forgets_the_key_so_a_retry_runs_once(client: TestClient, monkeypatch) -> None:
    journals = _journal_ids(client)

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(repository.JournalsRepository, "post", crash)
        crashed = client.post("/transfers", json=TRANSFER, headers=_key("after-crash"))
    assert crashed.status_code == 500
    assert _journal_ids(client) == journals
    assert _balance(client, ZHANG_MIN) == "1200.00"

    retry = client.post("/transfers", json=TRANSFER, headers=_key("after-crash"))
    assert retry.status_code == 201 and REPLAY_HEADER not in retry.headers
    replay = client.post("/transfers", json=TRANSFER, headers=_key("after-crash"))
    assert replay.headers[REPLAY_HEADER] == "true" and replay.json() == retry.json()
    assert _journal_ids(client) == _plus(journals, retry.json()["id"])
    assert client.get("/invariants").json()["ok"]


def test_without_a_key_each_post_is_a_new_request(client: TestClient) -> None:
    first = client.post("/transfers", json=TRANSFER)
    second = client.post("/transfers", json=TRANSFER)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert _balance(client, ZHANG_MIN) == "1220.00"


@pytest.mark.parametrize("key", ["has space", "x" * 256, "", "naïve".encode()], ids=["space", "long", "empty", "non-ascii"])
def test_a_malformed_key_is_a_422_naming_the_header(client: TestClient, key: str | bytes) -> None:
    journals = _journal_ids(client)
    r = client.post("/transfers", json=TRANSFER, headers={"Idempotency-Key": key})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["header.Idempotency-Key"]
    assert _journal_ids(client) == journals
