"""Money that takes time: a cross-border payment is pending (the payer debited, the payee not yet
credited) until its rail's settlement time by the service clock, then settles; one to the magic
beneficiary `Test Return` comes back to the payer instead. The ledger's invariants hold at
every step, and each step is an event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.common.clock import Clock, frozen_clock
from services.payments import cross_border, events
from tests.payments.factories import MakeApp, as_

LI_WEI = "acc_00000000000000000000000001"  # CNY wallet, 5000.00
ALICE = "acc_00000000000000000000000007"  # USD wallet, 2500.00
THREE_BUSINESS_DAYS = 3 * 86400  # from Monday 09:00: Thursday 09:00


@pytest.fixture
def client(make_app: MakeApp, database_url: str | None) -> Iterator[TestClient]:
    # No background round: each test moves the clock and reads what the move fired.
    with TestClient(make_app(database_url=database_url, due_work_interval_seconds=0)) as c:
        yield c


def pay(client: TestClient, rail: str, payee: str = ALICE, headers: dict[str, str] | None = None) -> dict[str, Any]:
    q = client.post("/fx/quotes", json={"sell": {"amount": "1000.00", "currency": "CNY"}, "buy_currency": "USD",
                                        "rail": rail}).json()
    r = client.post("/cross-border-payments", headers=headers or {},
                    json={"quote_id": q["id"], "from_account_id": LI_WEI, "to_account_id": payee})
    assert r.status_code == 201, r.text
    return r.json()


def balance(client: TestClient, account: str) -> str:
    return client.get(f"/accounts/{account}").json()["balance"]["amount"]


def status(client: TestClient, payment: dict[str, Any]) -> str:
    return client.get(f"/journals/{payment['id']}").json()["fx"]["status"]


def advance(client: TestClient, seconds: int) -> dict[str, int]:
    return client.post("/_sandbox/clock/advance", json={"seconds": seconds}).json()["fired"]


def invariants_ok(client: TestClient) -> bool:
    report = client.get("/invariants").json()
    return report["ok"] and all(c["ok"] for c in report["checks"])


def event_types(client: TestClient, subject: str) -> list[str]:
    return [e["type"] for e in client.get("/_sandbox/events", params={"limit": 500}).json()["data"]
            if e["subject_id"] == subject]


def test_a_correspondent_payment_is_pending_until_its_settlement_time_then_settles(client: TestClient) -> None:
    payment = pay(client, "correspondent")
    assert payment["fx"]["status"] == "pending"
    assert payment["fx"]["settlement"]["settles_by"] == "2026-01-08T09:00:00Z"
    assert (balance(client, LI_WEI), balance(client, ALICE)) == ("4000.00", "2500.00")  # left, not arrived
    assert invariants_ok(client)

    assert advance(client, THREE_BUSINESS_DAYS - 1) == {}
    assert status(client, payment) == "pending" and balance(client, ALICE) == "2500.00"

    assert advance(client, 1) == {"cross-border-settlement": 1}
    settled = client.get(f"/journals/{payment['id']}").json()["fx"]
    assert (settled["status"], settled["settled_at"]) == ("settled", "2026-01-08T09:00:00Z")
    assert balance(client, ALICE) == "2614.29" and balance(client, LI_WEI) == "4000.00"
    assert invariants_ok(client)
    assert advance(client, 86400) == {}  # settled once
    assert event_types(client, payment["id"]) == ["payments.cross_border.pending", "payments.cross_border.settled"]


def test_a_correspondent_payment_sent_on_a_friday_settles_on_wednesday(make_app: MakeApp) -> None:
    with TestClient(make_app(clock=frozen_clock("2026-01-09T09:00:00+00:00"), due_work_interval_seconds=0)) as client:
        payment = pay(client, "correspondent")
        assert payment["fx"]["settlement"]["settles_by"] == "2026-01-14T09:00:00Z"
        assert advance(client, THREE_BUSINESS_DAYS) == {}  # Monday: the weekend does not count
        assert advance(client, 2 * 86400) == {"cross-border-settlement": 1}


def test_a_ripple_payment_settles_after_a_five_second_clock_move(client: TestClient) -> None:
    payment = pay(client, "ripple")
    assert advance(client, 4) == {}
    assert advance(client, 1) == {"cross-border-settlement": 1}
    assert status(client, payment) == "settled" and balance(client, ALICE) == "2637.81"


def test_a_ripple_payment_settles_within_seconds_of_real_time(make_app: MakeApp) -> None:
    with TestClient(make_app(clock=Clock(), due_work_interval_seconds=0.2)) as client:
        payment = pay(client, "ripple")
        assert payment["fx"]["status"] == "pending"
        deadline = time.monotonic() + 30  # it is due in 5 s; the bound only stops a broken run
        while status(client, payment) == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(client, payment) == "settled"
        assert balance(client, ALICE) == "2637.81" and invariants_ok(client)


def test_a_payment_to_test_return_comes_back_to_the_payer_in_full(client: TestClient) -> None:
    returned_to = client.post("/accounts", json={"kind": "personal", "owner_name": "Test Return",
                                                 "currency": "USD"}).json()["id"]
    payment = pay(client, "correspondent", payee=returned_to)
    assert balance(client, LI_WEI) == "4000.00" and invariants_ok(client)
    assert advance(client, THREE_BUSINESS_DAYS) == {"cross-border-return": 1}
    back = client.get(f"/journals/{payment['id']}").json()["fx"]
    assert (back["status"], back["returned_at"], back["settled_at"]) == ("returned", "2026-01-08T09:00:00Z", None)
    returned = client.get(f"/journals/{back['closing_journal_id']}").json()
    assert returned["kind"] == "return" and returned["to_account_id"] == LI_WEI
    assert balance(client, LI_WEI) == "5000.00" and balance(client, returned_to) == "0.00"  # fee included
    assert invariants_ok(client)
    assert event_types(client, payment["id"]) == ["payments.cross_border.pending", "payments.cross_border.returned"]


def test_the_payees_participant_is_told_when_the_money_arrives(make_app: MakeApp) -> None:
    with TestClient(make_app(due_work_interval_seconds=0)) as client:
        bob = client.post("/accounts", headers=as_("ptp_bobwallets"),
                          json={"kind": "personal", "owner_name": "Bob", "currency": "USD"}).json()["id"]
        payment = pay(client, "ripple", payee=bob)
        advance(client, 5)
        recorded = [(e["type"], e["participant_id"], e["data"]["fx"]["status"])
                    for e in client.get("/_sandbox/events", params={"limit": 500}).json()["data"]
                    if e["subject_id"] == payment["id"]]
    payer = "ptp_00000000000000000000000001"  # Li Wei's wallet provider in the demo world
    assert recorded == [("payments.cross_border.pending", payer, "pending"),
                        ("payments.cross_border.settled", payer, "settled"),
                        ("payments.cross_border.received", "ptp_bobwallets", "settled")]


def test_two_settlement_runs_at_once_settle_a_payment_once(make_app: MakeApp, database_url: str | None) -> None:
    app = make_app(database_url=database_url, due_work_interval_seconds=0)
    with TestClient(app) as client:
        payment = pay(client, "ripple")
        advance_time = client.post("/_sandbox/clock/advance", json={"seconds": 0}).json()  # nothing due yet
        assert advance_time["fired"] == {}
        db, later = app.state.db, app.state.clock.now().replace(year=2027)
        outcomes: list[int] = []
        start = threading.Barrier(2)

        def runner() -> None:
            start.wait()
            outcomes.append(db.unit_of_work(lambda session: cross_border.settle(session, payment["id"], later)))

        threads = [threading.Thread(target=runner) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == [0, 1]
        assert balance(client, ALICE) == "2637.81" and invariants_ok(client)


def test_a_crash_while_settling_leaves_it_pending_and_the_next_round_settles_it(
        make_app: MakeApp, database_url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(make_app(database_url=database_url, due_work_interval_seconds=0),
                    raise_server_exceptions=False) as client:
        payment = pay(client, "ripple")
        recorded = events.cross_border_event

        def crash_after_writing(session, what, *args, **kwargs):  # type: ignore[no-untyped-def]
            recorded(session, what, *args, **kwargs)
            raise RuntimeError("the process dies before the settlement commits")

        monkeypatch.setattr(events, "cross_border_event", crash_after_writing)
        assert client.post("/_sandbox/clock/advance", json={"seconds": 5}).status_code == 500
        monkeypatch.undo()
        assert status(client, payment) == "pending" and balance(client, ALICE) == "2500.00"
        assert event_types(client, payment["id"]) == ["payments.cross_border.pending"]
        assert invariants_ok(client)
        assert advance(client, 0) == {"cross-border-settlement": 1}
        assert status(client, payment) == "settled" and invariants_ok(client)
