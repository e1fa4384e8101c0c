"""Payments' domain events, as the gateway's relay reads them (GET /_sandbox/events): one for each
movement, in the movement's own unit of work, for the participant whose money moved (and one
for another participant's payee); none after a refusal or a crash, one only after a replay."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.payments import fastpath
from tests.payments.factories import CARD, MakeApp, as_, cny, open_funded

ALICE_WALLETS, BOB_WALLETS = "ptp_alicewallets", "ptp_bobwallets"


@pytest.fixture
def client(make_app: MakeApp, database_url: str | None) -> Iterator[TestClient]:
    with TestClient(make_app(database_url=database_url)) as c:
        yield c


def events(client: TestClient) -> list[dict[str, Any]]:
    return client.get("/_sandbox/events", params={"limit": 500}).json()["data"]


def events_after(client: TestClient, seen: int) -> list[tuple[str, str | None, str]]:
    return [(e["type"], e["participant_id"], e["subject_id"]) for e in events(client)[seen:]]


def test_each_movement_records_one_event_for_its_owner_with_the_journal_as_answered(client: TestClient) -> None:
    wallet = open_funded(client, ALICE_WALLETS, "Ann")  # a deposit
    shop = open_funded(client, ALICE_WALLETS, "Ann's noodles", kind="merchant", top_up="1.00")
    seen = len(events(client))
    assert seen == 2  # the two top-ups
    answers = {
        "transfer": client.post("/transfers", headers=as_(ALICE_WALLETS),
                                json={"from_account_id": wallet, "to_account_id": shop, "amount": cny("10.00")}),
        "withdrawal": client.post("/withdrawals", headers=as_(ALICE_WALLETS),
                                  json={"account_id": wallet, "amount": cny("5.00")}),
        "deposit": client.post("/deposits", headers=as_(ALICE_WALLETS),
                               json={"account_id": wallet, "amount": cny("3.00"), "card_number": CARD}),
    }
    payload = client.get(f"/accounts/{shop}/qr", headers=as_(ALICE_WALLETS)).json()["payload"]
    answers["qr_payment"] = client.post("/qr-payments", headers=as_(ALICE_WALLETS),
                                        json={"payload": payload, "from_account_id": wallet, "amount": cny("2.00")})
    answers["refund"] = client.post("/refunds", headers=as_(ALICE_WALLETS),
                                    json={"journal_id": answers["transfer"].json()["id"], "amount": cny("1.00")})
    assert all(r.status_code == 201 for r in answers.values()), [r.text for r in answers.values()]

    recorded = events(client)[seen:]
    assert [(e["type"], e["participant_id"], e["subject_id"]) for e in recorded] == [
        (f"payments.{what}.completed", ALICE_WALLETS, answer.json()["id"]) for what, answer in answers.items()]
    for event, answer in zip(recorded, answers.values()):
        assert event["data"] == answer.json()  # the resource as answered: no second call needed
        assert event["id"].startswith("evt_")


def test_a_payee_of_another_participant_is_told_of_the_money_it_received(client: TestClient) -> None:
    ann = open_funded(client, ALICE_WALLETS, "Ann")
    bob = open_funded(client, BOB_WALLETS, "Bob", top_up="1.00")
    seen = len(events(client))
    paid = client.post("/transfers", headers=as_(ALICE_WALLETS),
                       json={"from_account_id": ann, "to_account_id": bob, "amount": cny("7.00")}).json()
    refunded = client.post("/refunds", headers=as_(BOB_WALLETS),
                           json={"journal_id": paid["id"], "amount": cny("2.00")}).json()
    assert events_after(client, seen) == [
        ("payments.transfer.completed", ALICE_WALLETS, paid["id"]),
        ("payments.transfer.received", BOB_WALLETS, paid["id"]),
        ("payments.refund.completed", BOB_WALLETS, refunded["id"]),
        ("payments.refund.received", ALICE_WALLETS, refunded["id"]),
    ]


def test_a_refused_movement_records_no_event(client: TestClient) -> None:
    ann = open_funded(client, ALICE_WALLETS, "Ann", top_up="10.00")
    bob = open_funded(client, BOB_WALLETS, "Bob", top_up="1.00")
    seen = len(events(client))
    # Refused after its journal and balance updates were written: the unit rolls it all back.
    short = client.post("/transfers", headers=as_(ALICE_WALLETS),
                        json={"from_account_id": ann, "to_account_id": bob, "amount": cny("11.00")})
    declined = client.post("/deposits", headers=as_(ALICE_WALLETS),
                           json={"account_id": ann, "amount": cny("5.00"), "card_number": "4000000000000002"})
    assert (short.status_code, declined.status_code) == (409, 402)
    assert events_after(client, seen) == []


def test_a_crash_after_the_event_was_written_leaves_neither_money_moved_nor_event(
        make_app: MakeApp, database_url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(make_app(database_url=database_url), raise_server_exceptions=False) as client:
        ann = open_funded(client, ALICE_WALLETS, "Ann", top_up="10.00")
        bob = open_funded(client, BOB_WALLETS, "Bob", top_up="1.00")
        seen = len(events(client))
        written = fastpath.insert_events

        def write_then_crash(session, rows):  # type: ignore[no-untyped-def]
            written(session, rows)
            raise RuntimeError("the process dies after writing the event, before the commit")

        monkeypatch.setattr(fastpath, "insert_events", write_then_crash)
        crashed = client.post("/transfers", headers=as_(ALICE_WALLETS),
                              json={"from_account_id": ann, "to_account_id": bob, "amount": cny("4.00")})
        monkeypatch.undo()
        assert crashed.status_code == 500
        assert events_after(client, seen) == []
        assert client.get(f"/accounts/{ann}", headers=as_(ALICE_WALLETS)).json()["balance"]["amount"] == "10.00"
        assert client.get("/invariants").json()["ok"] is True


def test_an_idempotent_replay_records_no_second_event(client: TestClient) -> None:
    ann = open_funded(client, ALICE_WALLETS, "Ann")
    bob = open_funded(client, BOB_WALLETS, "Bob", top_up="1.00")
    seen = len(events(client))
    body = {"from_account_id": ann, "to_account_id": bob, "amount": cny("3.00")}
    headers = {**as_(ALICE_WALLETS), "Idempotency-Key": "pay-bob-once"}
    first = client.post("/transfers", headers=headers, json=body)
    replay = client.post("/transfers", headers=headers, json=body)
    assert (first.status_code, replay.status_code) == (201, 201) and replay.json() == first.json()
    assert events_after(client, seen) == [
        ("payments.transfer.completed", ALICE_WALLETS, first.json()["id"]),
        ("payments.transfer.received", BOB_WALLETS, first.json()["id"]),
    ]


def test_with_event_recording_off_movements_record_none(make_app: MakeApp) -> None:
    with TestClient(make_app(record_events=False)) as client:
        open_funded(client, ALICE_WALLETS, "Ann")
        assert events(client) == []
