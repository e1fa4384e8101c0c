"""Helpers the payments tests share: every item of a paged list, a ledger snapshot to show that
a refusal wrote nothing, and what a refusal looks like."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient

from services.common.problems import PROBLEM_TYPE_BASE


def walk(client: TestClient, path: str, limit: int = 100, **params: Any) -> list[dict[str, Any]]:
    """Every item of a cursor-paginated list, checking the page shape on the way."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get(path, params={"limit": limit, **params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["data"]) <= limit
        assert body["has_more"] == (body["next_cursor"] is not None)
        items += body["data"]
        cursor = body["next_cursor"]
        if not cursor:
            return items
        assert body["data"] and cursor == body["data"][-1]["id"]


def snapshot(client: TestClient) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every journal as the API shows it, and every account's balance: equal before and after
    a refusal when it wrote nothing."""
    journals = walk(client, "/journals")
    return journals, {a["id"]: a["balance"]["amount"] for a in walk(client, "/accounts")}


def assert_problem(r: httpx.Response, status: int, slug: str, title: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem of this status and type (and title), carrying the request's id;
    returns its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == PROBLEM_TYPE_BASE + slug
    assert problem["status"] == status
    if title is not None:
        assert problem["title"] == title
    assert problem["request_id"] == r.headers["x-request-id"]
    return problem
