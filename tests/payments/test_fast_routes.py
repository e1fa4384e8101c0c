"""`PAYMENTS_FAST_ROUTES` only changes how the POSTs are served: with it off (every route FastAPI's
stock APIRoute) payments answers the same requests with the same statuses and bodies, and
publishes the same OpenAPI document. tests/platform/test_fastroute.py holds the direct handler
itself to FastAPI's answers, request by request, on one endpoint."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from services.common.fastroute import _plan, served_directly
from services.common.ids import ID_BODY_PATTERN
from services.payments.endpoints import router
from tests.payments.factories import CARD, MakeApp, cny

LI_WEI, ZHANG_MIN, NOODLES = (f"acc_{'0' * 25}{n}" for n in (1, 2, 3))
ID = re.compile(rf"\b[a-z]+_{ID_BODY_PATTERN}\b")
MOVEMENTS = ["/deposits", "/withdrawals", "/transfers", "/refunds", "/qr-payments", "/cross-border-payments"]


def test_each_movement_post_keeps_the_shape_the_direct_handler_serves() -> None:
    """The rule written above the handlers in endpoints.py: no Depends, no path or query
    parameter. A POST that breaks it would quietly lose the direct handler."""
    direct = {route.path: route for route in served_directly(router).routes
              if isinstance(route, APIRoute) and "POST" in route.methods}
    for path in [*MOVEMENTS, "/accounts", "/mandates"]:  # (an FX quote body is a union: stock)
        assert _plan(direct[path]) is not None, f"POST {path} no longer has the fast route's shape"


def test_the_openapi_document_is_the_same_with_fast_routes_on_or_off(make_app: MakeApp, tmp_path) -> None:
    fast = make_app(data_dir=tmp_path / "fast")
    stock = make_app(data_dir=tmp_path / "stock", fast_routes=False)
    assert fast.openapi() == stock.openapi()


def _scenario(client: TestClient) -> Iterator[Any]:
    """Movements that succeed and that are refused, in order; each yields its response."""
    key = {"Idempotency-Key": "same-key"}
    transfer = {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": cny("12.34")}
    yield client.post("/transfers", json=transfer)
    yield (paid := client.post("/transfers", json={**transfer, "to_account_id": NOODLES}))
    yield client.post("/refunds", json={"journal_id": paid.json()["id"], "amount": cny("1.00")})
    yield client.post("/transfers", json=transfer, headers=key)
    yield client.post("/transfers", json=transfer, headers=key)  # the replay
    yield client.post("/transfers", json={**transfer, "amount": cny("99.00")}, headers=key)  # key reused
    yield client.post("/transfers", json={**transfer, "amount": cny("999999.00")})  # insufficient funds
    yield client.post("/transfers", json={**transfer, "amount": cny("1.001")})  # 422
    yield client.post("/transfers", content=b"{not json", headers={"content-type": "application/json"})
    yield client.post("/deposits", json={"account_id": LI_WEI, "amount": cny("5.00"), "card_number": CARD})
    yield client.post("/deposits", json={"account_id": LI_WEI, "amount": cny("5.00"),
                                         "card_number": "4000000000000002"})  # declined
    yield client.post("/withdrawals", json={"account_id": ZHANG_MIN, "amount": cny("3.00")})
    yield client.post("/accounts", json={"kind": "personal", "owner_name": "New", "currency": "CNY"})
    yield client.get("/invariants")


def _normalised(responses: list[Any]) -> list[tuple[int, str | None, str]]:
    """Status, media type and body; ids numbered by first appearance (new ones are random);
    a problem's request and trace ids left out (each request has its own)."""
    numbers: dict[str, str] = {}
    number: Callable[[re.Match[str]], str] = lambda m: numbers.setdefault(m.group(0), f"id#{len(numbers)}")
    return [(r.status_code, r.headers.get("content-type"),
             ID.sub(number, re.sub(r'"(request|trace)_id":"[^"]*"', "", r.text))) for r in responses]


@pytest.mark.parametrize("fast_routes", [True, False], ids=["fast routes", "stock routes"])
def test_payments_answers_the_same_with_fast_routes_on_or_off(make_app: MakeApp, tmp_path,
                                                              fast_routes: bool) -> None:
    with TestClient(make_app(data_dir=tmp_path / "reference")) as reference, \
            TestClient(make_app(data_dir=tmp_path / "other", fast_routes=fast_routes)) as other:
        expected = _normalised(list(_scenario(reference)))
        got = _normalised(list(_scenario(other)))
    assert [status for status, _, _ in expected] == [201, 201, 201, 201, 201, 409, 409, 422, 400,
                                                     201, 402, 201, 201, 200]
    assert got == expected
