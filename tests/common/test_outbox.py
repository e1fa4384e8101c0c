"""The kit's outbox (services/common/outbox.py) and due work (services/common/duework.py): an
event commits with its change or not at all, the relay reads what is unpublished and marks it;
a move of the clock does what fell due and says so."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Field, Session, select

from services.common.app import ClockDep, build_service_app
from services.common.clock import frozen_clock
from services.common.db import Database, SessionDep, database_url, model_base
from services.common.duework import DueWork
from services.common.outbox import outbox_table, record_event
from services.common.problems import Problem
from services.common.settings import ServiceSettings

LessonModel = model_base("OutboxLessonModel")
Events = outbox_table(LessonModel.metadata)


class Parcel(LessonModel, table=True):  # type: ignore[call-arg]
    id: str = Field(primary_key=True)
    due_at: datetime
    delivered: bool = False


router = APIRouter()


@router.post("/parcels/{parcel_id}")
def send_parcel(parcel_id: str, session: SessionDep, clock: ClockDep) -> dict[str, str]:
    now = clock.now()
    session.add(Parcel(id=parcel_id, due_at=now + timedelta(days=2)))
    record_event(session, Events, "lesson.parcel.sent", subject_id=parcel_id, participant_id="ptp_1",
                 occurred_at=now, data={"id": parcel_id})
    return {"id": parcel_id}


@router.post("/refused/{parcel_id}")
def send_then_refuse(parcel_id: str, session: SessionDep, clock: ClockDep) -> dict[str, str]:
    now = clock.now()
    session.add(Parcel(id=parcel_id, due_at=now))
    record_event(session, Events, "lesson.parcel.sent", subject_id=parcel_id, participant_id="ptp_1",
                 occurred_at=now, data={"id": parcel_id})
    raise Problem(409, "refused", "Refused after writing")


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    clock = frozen_clock()
    db = Database(database_url(None, tmp_path, "lesson"), LessonModel.metadata)
    db.create_tables()

    def deliver(now: datetime) -> int:
        def work(session: Session) -> int:
            due = session.exec(select(Parcel).where(Parcel.delivered.is_(False), Parcel.due_at <= now)).all()
            for parcel in due:
                parcel.delivered = True
                record_event(session, Events, "lesson.parcel.delivered", subject_id=parcel.id,
                             participant_id="ptp_1", occurred_at=now, data={"id": parcel.id})
            return len(due)
        return db.unit_of_work(work)

    app = build_service_app(name="lesson", title="Lesson", description="", settings=ServiceSettings(
        due_work_interval_seconds=0), database=db, clock=clock, routers=[router],
        due_work=[DueWork("parcel-delivery", deliver)])
    return app


def test_an_event_commits_with_its_change_and_a_refusal_leaves_none(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.post("/parcels/p1").status_code == 200
        assert client.post("/refused/p2").status_code == 409
        events = client.get("/_sandbox/events").json()["data"]
    assert [(e["type"], e["subject_id"], e["participant_id"]) for e in events] == [
        ("lesson.parcel.sent", "p1", "ptp_1")]
    assert events[0]["id"].startswith("evt_") and events[0]["data"] == {"id": "p1"}


def test_published_events_are_not_read_again(app: FastAPI) -> None:
    with TestClient(app) as client:
        for n in range(3):
            client.post(f"/parcels/p{n}")
        first = client.get("/_sandbox/events", params={"limit": 2}).json()["data"]
        assert [e["subject_id"] for e in first] == ["p0", "p1"]
        marked = client.post("/_sandbox/events/published", json={"ids": [e["id"] for e in first]}).json()
        assert marked == {"published": 2}
        assert client.post("/_sandbox/events/published", json={"ids": [first[0]["id"]]}).json() == {"published": 0}
        assert [e["subject_id"] for e in client.get("/_sandbox/events").json()["data"]] == ["p2"]


def test_moving_the_clock_does_what_fell_due_and_says_so(app: FastAPI) -> None:
    with TestClient(app) as client:
        client.post("/parcels/p1")
        assert client.post("/_sandbox/clock/advance", json={"seconds": 3600}).json()["fired"] == {}
        moved = client.post("/_sandbox/clock/advance", json={"seconds": 2 * 86400}).json()
        assert moved["fired"] == {"parcel-delivery": 1}
        assert client.post("/_sandbox/clock/advance", json={"seconds": 60}).json()["fired"] == {}  # done once
        types = [e["type"] for e in client.get("/_sandbox/events").json()["data"]]
    assert types == ["lesson.parcel.sent", "lesson.parcel.delivered"]
