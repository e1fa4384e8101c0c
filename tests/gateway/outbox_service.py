"""A small service built with the kit, with an outbox, behind the gateway: what the relay reads,
without depending on a real service's events. `POST /parcels` records `lesson.parcel.sent` for
the participant the gateway names; moving its clock two days delivers each parcel
(`lesson.parcel.delivered`, due work `parcel-delivery`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from fastapi import APIRouter, FastAPI, Header
from sqlmodel import Field, Session, select

from services.common.app import ClockDep, build_service_app
from services.common.clock import Clock
from services.common.db import Database, SessionDep, database_url, model_base
from services.common.duework import DueWork
from services.common.ids import new_id
from services.common.outbox import outbox_table, record_event
from services.common.settings import ServiceSettings

LessonModel = model_base("GatewayLessonModel")
Events = outbox_table(LessonModel.metadata)


class Parcel(LessonModel, table=True):  # type: ignore[call-arg]
    id: str = Field(primary_key=True)
    owner: str
    due_at: datetime
    delivered: bool = False


router = APIRouter()


@router.post("/parcels", status_code=201)
def send_parcel(session: SessionDep, clock: ClockDep,
                participant: str = Header(alias="X-Sandbox-Participant")) -> dict[str, str]:
    now = clock.now()
    parcel = Parcel(id=new_id("pcl"), owner=participant, due_at=now + timedelta(days=2))
    session.add(parcel)
    record_event(session, Events, "lesson.parcel.sent", subject_id=parcel.id, participant_id=participant,
                 occurred_at=now, data={"id": parcel.id, "owner": participant})
    return {"id": parcel.id}


def outbox_service(data_dir: Path, clock: Clock) -> FastAPI:
    db = Database(database_url(None, data_dir, "lesson"), LessonModel.metadata)
    db.create_tables()

    def deliver(now: datetime) -> int:
        def work(session: Session) -> int:
            due = session.exec(select(Parcel).where(Parcel.delivered.is_(False), Parcel.due_at <= now)).all()
            for parcel in due:
                parcel.delivered = True
                record_event(session, Events, "lesson.parcel.delivered", subject_id=parcel.id,
                             participant_id=parcel.owner, occurred_at=now, data={"id": parcel.id})
            return len(due)
        return db.unit_of_work(work)

    # The kit serves GET /_sandbox/events and POST /_sandbox/events/published for the outbox table.
    return build_service_app(name="lesson", title="Lesson", description="", clock=clock, database=db,
                             settings=ServiceSettings(data_dir=data_dir, due_work_interval_seconds=0),
                             routers=[router], due_work=[DueWork("parcel-delivery", deliver)])
