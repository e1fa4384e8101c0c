"""Assertions the payments tests share: what a refusal looks like, and a ledger snapshot to show
that a refusal wrote nothing."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient

from services.common.problems import PROBLEM_TYPE_BASE


def snapshot(client: TestClient) -> tuple[list[str], dict[str, str]]:
    """Every journal id and every account's balance (up to 100 of each)."""
    journals = [j["id"] for j in client.get("/journals", params={"limit": 100}).json()["data"]]
    accounts = client.get("/accounts", params={"limit": 100}).json()["data"]
    return journals, {a["id"]: a["balance"]["amount"] for a in accounts}


def assert_problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """An RFC 9457 problem of this status and type; returns its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == PROBLEM_TYPE_BASE + slug
    return r.json()
