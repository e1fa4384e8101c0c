"""The kit's one transaction shape (services/common/db.py): a request's unit of work commits once,
when its endpoint returns, before the response is sent; `record_first` is the named early commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Field, Session, select

from services.common.app import build_service_app
from services.common.clock import Clock
from services.common.db import Database, SessionDep, database_url, model_base, record_first
from services.common.problems import PROBLEM_MEDIA_TYPE, Problem
from services.common.settings import ServiceSettings

LessonModel = model_base("LessonModel")


class Note(LessonModel, table=True):  # type: ignore[call-arg]
    id: str = Field(primary_key=True)
    text: str = Field(unique=True)


router = APIRouter()


@router.post("/notes/{note_id}")
def write_note(note_id: str, session: SessionDep) -> dict[str, str]:
    session.add(Note(id=note_id, text=note_id))
    return {"id": note_id}


@router.post("/refused/{note_id}")
def write_then_refuse(note_id: str, session: SessionDep) -> dict[str, str]:
    session.add(Note(id=note_id, text=note_id))
    raise Problem(409, "refused", "Refused after writing")


@router.post("/refusal-kept/{note_id}")
def keep_refusal(note_id: str, session: SessionDep) -> dict[str, str]:
    session.add(Note(id=note_id, text=note_id))
    record_first(session, "the refusal's record outlives the 409 below")
    session.add(Note(id=f"{note_id}-after", text=f"{note_id}-after"))
    raise Problem(409, "refused", "Refused after recording")


@router.post("/clash/{note_id}")
def write_clashing_notes(note_id: str, session: SessionDep) -> dict[str, str]:
    # Two rows with one unique text: the INSERTs go out (and fail) only at the commit.
    session.add(Note(id=f"{note_id}-a", text=note_id))
    session.add(Note(id=f"{note_id}-b", text=note_id))
    return {"id": note_id}


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    settings = ServiceSettings(data_dir=tmp_path)
    db = Database(database_url(None, tmp_path, "lesson"), LessonModel.metadata)
    db.create_tables()
    return build_service_app(name="lesson", title="Lesson", description="", settings=settings, database=db,
                             clock=Clock(), routers=[router])


def notes(app: FastAPI) -> list[str]:
    with app.state.db.session() as session:
        return sorted(n.id for n in session.exec(select(Note)))


def test_an_endpoint_that_returns_commits_its_work(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.post("/notes/n1").status_code == 200
    assert notes(app) == ["n1"]


def test_an_endpoint_that_raises_commits_nothing(app: FastAPI) -> None:
    with TestClient(app) as client:
        response = client.post("/refused/n1")
    assert response.status_code == 409
    assert notes(app) == []


def test_record_first_keeps_what_was_recorded_before_the_error(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.post("/refusal-kept/n1").status_code == 409
    assert notes(app) == ["n1"]  # written after record_first: rolled back with the request


def test_a_failed_commit_is_the_clients_500_problem_never_a_success(app: FastAPI) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/clash/n1")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json()["type"].endswith("internal-error")
    assert notes(app) == []


def test_database_run_commits_once_work_returns_and_not_when_it_raises(tmp_path: Path) -> None:
    db = Database(database_url(None, tmp_path, "lesson"), LessonModel.metadata)
    db.create_tables()

    def write(session: Session) -> None:
        session.add(Note(id="kept", text="kept"))

    def write_and_fail(session: Session) -> None:
        session.add(Note(id="lost", text="lost"))
        session.flush()
        raise RuntimeError("the work failed")

    async def units() -> None:
        await db.run(write)
        with pytest.raises(RuntimeError):
            await db.run(write_and_fail)

    asyncio.run(units())
    with db.session() as session:
        assert [n.id for n in session.exec(select(Note))] == ["kept"]
    db.dispose()
