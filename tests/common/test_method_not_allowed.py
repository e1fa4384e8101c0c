"""The kit's 405: an `Allow` header naming every method served at the path, whichever routers
(included, nested, fast-path) hold the routes, and a problem+json detail naming the same."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel

from services.common.fastroute import DirectJSONRoute
from services.common.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers


class Note(BaseModel):
    text: str


def make_app() -> FastAPI:
    """GET and POST /notes from two routers (the POST on the fast path), PATCH /notes/{id}
    from a router nested in another, and a route on the app itself."""
    app = FastAPI()
    install_problem_handlers(app)
    readers = APIRouter(prefix="/notes")
    writers = APIRouter(prefix="/notes", route_class=DirectJSONRoute)
    outer, inner = APIRouter(), APIRouter(prefix="/notes")

    @readers.get("")
    async def list_notes() -> list[str]:
        return []

    @writers.post("")
    async def post_note(note: Note, request: Request) -> Response:
        return Response(status_code=201)

    @inner.patch("/{note_id}")
    async def patch_note(note_id: str) -> dict[str, str]:
        return {"id": note_id}

    @app.delete("/notes/{note_id}")
    async def delete_note(note_id: str) -> Response:
        return Response(status_code=204)

    outer.include_router(inner)
    for router in (readers, writers, outer):
        app.include_router(router)
    return app


def allow_of(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.strip() for m in response.headers["allow"].split(",")]


def test_allow_names_the_methods_of_every_router_serving_the_path() -> None:
    response = TestClient(make_app()).put("/notes")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert allow_of(response) == ["GET", "POST"]
    assert response.json()["type"].endswith(":method-not-allowed")
    assert response.json()["detail"] == "PUT is not allowed here; this path allows GET, POST: use one of them."


def test_allow_collects_a_nested_router_and_the_app_at_a_path_with_a_parameter() -> None:
    response = TestClient(make_app()).get("/notes/n1")
    assert response.status_code == 405
    assert allow_of(response) == ["DELETE", "PATCH"]
    assert "DELETE, PATCH" in response.json()["detail"]


def test_head_and_options_are_refused_like_any_method_not_in_allow() -> None:
    client = TestClient(make_app())
    for method in ("HEAD", "OPTIONS"):
        response = client.request(method, "/notes")
        assert response.status_code == 405, method
        assert allow_of(response) == ["GET", "POST"]
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE


def test_every_method_in_allow_is_served_and_every_other_is_405() -> None:
    client = TestClient(make_app())
    allowed = set(allow_of(client.put("/notes")))
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = client.request(method, "/notes", json={"text": "hi"})
        assert (response.status_code != 405) == (method in allowed), (method, response.status_code)
