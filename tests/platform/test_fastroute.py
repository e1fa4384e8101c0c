"""DirectJSONRoute (services/common/fastroute.py) answers exactly as FastAPI's own handler does.

The same endpoint is served twice, once by a router with the direct handler and once by a plain
APIRouter, through the service kit's error handling; every request below, valid or not, must
get the same status, media type and body from both, and the same OpenAPI document.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from services.common.fastroute import DirectJSONRoute, _plan
from services.common.idempotency import IdempotencyKeyHeader
from services.common.problems import install_problem_handlers
from services.common.requestctx import RequestContextMiddleware
from services.payments.schemas import TransferCreate

PAYER, PAYEE = "acc_00000000000000000000000001", "acc_00000000000000000000000002"
VALID = {"from_account_id": PAYER, "to_account_id": PAYEE, "amount": {"amount": "1.00", "currency": "CNY"}}


def _router(route_class: type[APIRoute]) -> APIRouter:
    router = APIRouter(route_class=route_class)

    @router.post("/transfers", status_code=201)
    async def create_transfer(body: TransferCreate, request: Request, key: IdempotencyKeyHeader = None):
        # What the endpoint was given, as the response: any difference in the values shows.
        return JSONResponse({"body": body.model_dump(mode="json"), "key": key, "path": request.url.path},
                            status_code=201)

    @router.post("/other/{thing}")
    async def other(thing: str, body: TransferCreate) -> dict[str, Any]:
        return {"thing": thing}

    return router


def _app(route_class: type[APIRoute]) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(_router(route_class))
    return app


def _body(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


JSON = {"content-type": "application/json"}
CASES: list[tuple[str, Any, dict[str, str]]] = [
    ("valid", VALID, JSON),
    ("valid with a key", VALID, {**JSON, "idempotency-key": "k-1"}),
    ("key with a space", VALID, {**JSON, "idempotency-key": "k 1"}),
    ("key too long", VALID, {**JSON, "idempotency-key": "k" * 256}),
    ("empty key", VALID, {**JSON, "idempotency-key": ""}),
    ("charset parameter", VALID, {"content-type": "application/json; charset=utf-8"}),
    ("upper-case media type", VALID, {"content-type": "Application/JSON"}),
    ("vendor +json", VALID, {"content-type": "application/merge-patch+json"}),
    ("text/plain", VALID, {"content-type": "text/plain"}),
    ("no content type", VALID, {}),
    ("empty body", b"", JSON),
    ("not JSON", b"{not json", JSON),
    ("JSON null", b"null", JSON),
    ("a list", b"[]", JSON),
    ("NaN", b'{"from_account_id": NaN}', JSON),
    ("latin-1 bytes", b'{"from_account_id": "\xe9"}', JSON),
    ("BOM", b"\xef\xbb\xbf" + json.dumps(VALID).encode(), JSON),
    ("duplicate keys", b'{"from_account_id": "x", "from_account_id": "' + PAYER.encode() + b'", "to_account_id": "'
     + PAYEE.encode() + b'", "amount": {"amount": "1.00", "currency": "CNY"}}', JSON),
    ("extra field", {**VALID, "extra": 1}, JSON),
    ("missing field", {"from_account_id": PAYER, "amount": VALID["amount"]}, JSON),
    ("amount as a number", {**VALID, "amount": {"amount": 1.0, "currency": "CNY"}}, JSON),
    ("over-precise amount", {**VALID, "amount": {"amount": "1.001", "currency": "CNY"}}, JSON),
    ("unknown currency", {**VALID, "amount": {"amount": "1.00", "currency": "XXQ"}}, JSON),
    ("id of another kind", {**VALID, "to_account_id": "tr_00000000000000000000000002"}, JSON),
    ("with a mandate", {**VALID, "mandate_id": "mdt_00000000000000000000000001"}, JSON),
    ("mandate null", {**VALID, "mandate_id": None}, JSON),
    ("mandate of another kind", {**VALID, "mandate_id": "acc_00000000000000000000000001"}, JSON),
    ("description as a number", {**VALID, "description": 5}, JSON),
    ("long description", {**VALID, "description": "y" * 1000}, JSON),
    ("unicode description", {**VALID, "description": "红包 🧧"}, JSON),
    ("escaped unicode", b'{"from_account_id": "' + PAYER.encode() + b'", "to_account_id": "' + PAYEE.encode()
     + b'", "amount": {"amount": "1.00", "currency": "CNY"}, "description": "\\u7ea2\\u5305"}', JSON),
]


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    with TestClient(_app(DirectJSONRoute)) as direct, TestClient(_app(APIRoute)) as standard:
        yield direct, standard


@pytest.mark.parametrize(("name", "body", "headers"), CASES, ids=[c[0] for c in CASES])
def test_the_direct_handler_answers_as_fastapi_does(clients, name: str, body: Any, headers: dict[str, str]) -> None:
    direct, standard = clients
    expected = standard.post("/transfers", content=_body(body), headers=headers)
    got = direct.post("/transfers", content=_body(body), headers=headers)
    assert got.status_code == expected.status_code, (got.text, expected.text)
    assert got.headers.get("content-type") == expected.headers.get("content-type")
    strip = (lambda r: {k: v for k, v in r.json().items() if k != "request_id"}) if got.content else (lambda r: b"")
    assert strip(got) == strip(expected)


def test_the_valid_cases_really_take_the_direct_path(clients, monkeypatch) -> None:
    direct, _ = clients
    calls = []
    original = TransferCreate.model_validate_json.__func__  # type: ignore[attr-defined]

    def counted(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(TransferCreate, "model_validate_json", classmethod(counted))
    assert direct.post("/transfers", json=VALID, headers={"Idempotency-Key": "k-2"}).status_code == 201
    assert calls == [1]


def test_routes_of_another_shape_keep_fastapis_handler_and_the_openapi_is_the_same() -> None:
    routes = {r.path: r for r in _router(DirectJSONRoute).routes}
    assert _plan(routes["/transfers"]) is not None
    assert _plan(routes["/other/{thing}"]) is None  # a path parameter: FastAPI's handler
    direct_app = _app(DirectJSONRoute)
    assert direct_app.openapi() == _app(APIRoute).openapi()
    with TestClient(direct_app) as client:
        assert client.post("/other/x", json=VALID).json() == {"thing": "x"}
