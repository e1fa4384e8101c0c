"""Setup the payments tests share: calling as a participant, amounts, funded accounts, mandates.

The app itself comes from conftest.py's `make_app` fixture (`MakeApp` is its type)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

CARD = "4242424242424242"
MakeApp = Callable[..., FastAPI]  # conftest.py's `make_app(**settings)`


def as_(participant: str, on_behalf_of: str | None = None) -> dict[str, str]:
    """The headers the gateway sets for a participant's key (and a service's hop for one)."""
    headers = {"X-Sandbox-Participant": participant}
    if on_behalf_of is not None:
        headers["X-Sandbox-On-Behalf-Of"] = on_behalf_of
    return headers


def cny(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "CNY"}


def open_funded(client: TestClient | httpx.Client, participant: str, name: str, kind: str = "personal",
                top_up: str = "100.00") -> str:
    """An account `participant` opened, topped up by card with `top_up` CNY; its id."""
    account = client.post("/accounts", headers=as_(participant),
                          json={"kind": kind, "owner_name": name, "currency": "CNY"}).json()
    assert account["participant_id"] == participant
    deposit = client.post("/deposits", headers=as_(participant),
                          json={"account_id": account["id"], "amount": cny(top_up), "card_number": CARD})
    assert deposit.status_code == 201, deposit.text
    return account["id"]


def grant_mandate(client: TestClient | httpx.Client, grantor: str, account_id: str, grantee: str,
                  per_debit: str = "50.00", per_period: str = "80.00", period: str = "month",
                  expires_at: str = "2026-06-30T00:00:00Z") -> dict[str, Any]:
    """A mandate `grantor` grants `grantee` on its account; the created mandate."""
    r = client.post("/mandates", headers=as_(grantor), json={
        "debtor_account_id": account_id, "grantee_participant_id": grantee,
        "max_per_debit": cny(per_debit), "max_per_period": cny(per_period), "period": period,
        "expires_at": expires_at, "purpose": "test debits"})
    assert r.status_code == 201, r.text
    return r.json()
