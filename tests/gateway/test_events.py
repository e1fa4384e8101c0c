"""The events API: the relay brings each service's events into the gateway's store, each
participant reads its own from a cursor, the regulator reads every one, and the gateway's own
changes (alerts, suspensions) are events too."""

from __future__ import annotations

from sandbox.gateway.events import EventStore
from tests.gateway.conftest import REGULATOR, Sandbox
from tests.gateway.events_world import EventsWorld, wait_for, world  # noqa: F401 - fixture



def test_a_participant_sees_its_own_events_and_not_another_s(world: EventsWorld) -> None:
    mine_id, mine = world.admit("Mine Ltd")
    _, theirs = world.admit("Theirs Ltd")
    parcel = world.send_parcel(mine)
    world.send_parcel(theirs)
    [event] = world.wait_for_events(mine, 1)
    assert (event["type"], event["subject_id"], event["participant_id"], event["source"]) == (
        "lesson.parcel.sent", parcel, mine_id, "payments")
    assert event["id"].startswith("evt_") and event["data"]["id"] == parcel
    world.wait_for_events(theirs, 1)
    assert [e["subject_id"] for e in world.events(mine)["data"]] == [parcel]


def test_the_regulator_sees_every_participants_events(world: EventsWorld) -> None:
    first_id, first = world.admit("First")
    second_id, second = world.admit("Second")
    world.send_parcel(first)
    world.send_parcel(second)
    every = wait_for(lambda: len(data := world.client.get("/sandbox/events", headers=REGULATOR).json()["data"]) >= 2
                     and data, "both events")
    assert {e["participant_id"] for e in every} == {first_id, second_id}
    only = world.client.get("/sandbox/events", headers=REGULATOR, params={"participant_id": second_id}).json()
    assert [e["participant_id"] for e in only["data"]] == [second_id]


def test_events_replay_from_a_cursor(world: EventsWorld) -> None:
    _, key = world.admit()
    parcels = [world.send_parcel(key) for _ in range(3)]
    world.wait_for_events(key, 3)
    first_page = world.events(key, limit=2)
    assert [e["subject_id"] for e in first_page["data"]] == parcels[:2] and first_page["has_more"] is True
    rest = world.events(key, after=first_page["next_after"])
    assert [e["subject_id"] for e in rest["data"]] == parcels[2:] and rest["has_more"] is False
    # Nothing new: the cursor stays where it was, and reading from 0 again replays all of them.
    assert world.events(key, after=rest["next_after"]) == {"data": [], "next_after": rest["next_after"],
                                                           "has_more": False}
    assert [e["subject_id"] for e in world.events(key, after=0)["data"]] == parcels


def test_events_filter_by_type_or_prefix(world: EventsWorld) -> None:
    _, key = world.admit()
    world.send_parcel(key)
    world.wait_for_events(key, 1)
    world.client.post("/sandbox/clock/advance", headers=REGULATOR, json={"seconds": 3 * 86400})
    assert [e["type"] for e in world.events(key, type="lesson.parcel.delivered")["data"]] == ["lesson.parcel.delivered"]
    assert len(world.events(key, type="lesson")["data"]) == 2
    assert len(world.events(key, type="lesson.*")["data"]) == 2
    assert world.events(key, type="less")["data"] == []  # a prefix is whole names, not letters


def test_an_event_is_stored_once_however_often_it_is_relayed(world: EventsWorld) -> None:
    _, key = world.admit()
    world.send_parcel(key)
    [event] = world.wait_for_events(key, 1)
    # As if the relay had crashed after storing and before marking: the same event read again.
    store: EventStore = world.client.app.state.gateway.events  # type: ignore[attr-defined]
    again = {**event, "data": "{}", "seq": None}
    with store.writing(), world.client.app.state.gateway.db.engine.begin() as conn:  # type: ignore[attr-defined]
        assert store.insert(conn, [{k: again[k] for k in ("id", "type", "source", "participant_id", "subject_id",
                                                          "occurred_at", "data")}]) == 0
    assert [e["id"] for e in world.events(key)["data"]] == [event["id"]]


def test_relayed_events_are_marked_published_at_the_service(world: EventsWorld) -> None:
    _, key = world.admit()
    world.send_parcel(key)
    world.wait_for_events(key, 1)
    wait_for(lambda: world.service.get("/_sandbox/events").json()["data"] == [], "the outbox emptied")


def test_the_gateways_own_changes_are_events(world: EventsWorld) -> None:
    firm_id, key = world.admit()
    suspended = world.client.post(f"/sandbox/participants/{firm_id}/suspend", headers=REGULATOR,
                                  json={"reason": "testing events"})
    assert suspended.status_code == 200
    [event] = world.client.get("/sandbox/events", headers=REGULATOR, params={"type": "sandbox"}).json()["data"]
    assert (event["type"], event["participant_id"], event["subject_id"], event["source"]) == (
        "sandbox.participant.suspended", firm_id, firm_id, "sandbox")
    assert event["data"]["reason"] == "testing events"


def test_events_need_a_participants_key(world: EventsWorld) -> None:
    assert world.client.get("/events").status_code == 401
    refused = world.client.get("/events", headers=REGULATOR)
    assert refused.status_code == 403 and refused.json()["type"].endswith("regulator-key-not-a-participant")
    assert world.client.get("/sandbox/events", headers={"X-API-Key": world.admit()[1]}).status_code == 403


def test_an_alert_opening_and_closing_are_the_participants_events(sandbox: Sandbox) -> None:
    firm_id, key = sandbox.admit()
    reviewed = sandbox.transfer(key, "12345.00")
    assert reviewed.headers["x-sandbox-decision"].startswith("review")
    [alert] = sandbox.client.get("/sandbox/alerts", headers=REGULATOR).json()["data"]
    closed = sandbox.client.post(f"/sandbox/alerts/{alert['id']}/close", headers=REGULATOR,
                                 json={"resolution": "false_positive"})
    assert closed.status_code == 200, closed.text
    events = sandbox.client.get("/events", headers={"X-API-Key": key}, params={"type": "sandbox.alert"}).json()["data"]
    assert [(e["type"], e["subject_id"], e["participant_id"]) for e in events] == [
        ("sandbox.alert.opened", alert["id"], firm_id), ("sandbox.alert.closed", alert["id"], firm_id)]
    assert events[0]["data"]["rules"] == ["large_value"] and events[1]["data"]["resolution"] == "false_positive"
