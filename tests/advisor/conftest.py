"""Factories for the advisor tests: the real payments app behind a gateway-shaped router."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.advisor.main import AdvisorSettings, create_app
from services.advisor.payments_client import PaymentsClient
from services.common.clock import frozen_clock
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.servers import prefix_router, serve

LI_WEI = "acc_00000000000000000000000001"  # a wallet holding CNY 5,000
CUSTODY = "acc_00000000000000000000000006"
ADVISOR_KEY = "sbx_svc_advisor_key"

MEDIUM_30 = {
    "age": 30,
    "horizon_years": 30,
    "annual_income": {"amount": "150000.00", "currency": "CNY"},
    "liquid_net_worth": {"amount": "100000.00", "currency": "CNY"},
    "goal": "retirement",
    "loss_reaction": "hold",
    "priority": "balanced",
    "experience": "some",
}


def answers(**overrides: Any) -> dict[str, Any]:
    return {**MEDIUM_30, **overrides}


@contextmanager
def payments_behind_gateway(tmp_path: Path) -> Iterator[str]:
    """The real payments app over real HTTP, under /payments as the gateway routes it."""
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    with serve(prefix_router({"/payments": payments})) as base:
        yield base


def balance(base: str, account_id: str) -> str:
    return httpx.get(f"{base}/payments/accounts/{account_id}/balance").json()["available"]["amount"]


def advisor_app(tmp_path: Path, payments_url: str = "http://127.0.0.1:9", database_url: str | None = None,
                **settings: Any):
    return create_app(
        AdvisorSettings(data_dir=tmp_path / "advisor", database_url=database_url, **settings),
        clock=frozen_clock(),
        payments_client=PaymentsClient(payments_url, ADVISOR_KEY, timeout=5),
    )


@pytest.fixture
def payments(tmp_path: Path) -> Iterator[str]:
    with payments_behind_gateway(tmp_path) as base:
        yield base


@pytest.fixture
def advisor(tmp_path: Path, payments: str) -> Iterator[TestClient]:
    """The advisor, funding through the real payments service."""
    with TestClient(advisor_app(tmp_path, payments)) as client:
        yield client


def open_account(client: TestClient, wallet: str = LI_WEI, **overrides: Any) -> str:
    profile = client.post("/risk-profiles", json=answers(**overrides))
    assert profile.status_code == 201, profile.text
    account = client.post("/accounts", json={"owner_name": "Li Wei", "wallet_account_id": wallet,
                                             "risk_profile_id": profile.json()["id"]})
    assert account.status_code == 201, account.text
    return account.json()["id"]


def deposit(client: TestClient, account_id: str, amount: str, **headers: str) -> httpx.Response:
    return client.post(f"/accounts/{account_id}/deposits",
                       json={"amount": {"amount": amount, "currency": "CNY"}}, headers=headers)


def funded_account(client: TestClient, amount: str = "3000.00", **overrides: Any) -> str:
    account_id = open_account(client, **overrides)
    response = deposit(client, account_id, amount)
    assert response.status_code == 201 and response.json()["status"] == "completed", response.text
    return account_id


def advance(client: TestClient, days: int, **shocks: float) -> dict[str, Any]:
    body = {"days": days, "shocks": [{"asset_class": c, "pct": p} for c, p in shocks.items()]}
    response = client.post("/market/advance", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def holdings(client: TestClient, account_id: str) -> dict[str, dict[str, Any]]:
    return {h["fund"]: h for h in client.get(f"/accounts/{account_id}").json()["holdings"]}
