"""Factories for the advisor tests: the real payments app behind a gateway-shaped router, or
behind the real gateway (`gateway_stack`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.advisor.main import AdvisorSettings, create_app
from services.common.clock import frozen_clock
from services.common.demo import DEMO_REGULATOR_KEY
from services.common.payments_client import PaymentsClient
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.servers import payments_behind_gateway, serve

LI_WEI = "acc_00000000000000000000000001"  # a Demo Wallet Co wallet holding CNY 5,000
ZHANG_MIN = "acc_00000000000000000000000002"  # a Demo Wallet Co wallet holding CNY 1,200
CUSTODY = "acc_00000000000000000000000006"
LI_WEI_TO_DEMO_ROBO = "mdt_00000000000000000000000001"  # 5,000.00 a debit, 20,000.00 a month
ADVISOR_KEY = "sbx_svc_advisor_key"
ROBO = {"X-API-Key": "sbx_demo_robo_key"}
WALLET = {"X-API-Key": "sbx_demo_wallet_key"}
REGULATOR = {"X-API-Key": DEMO_REGULATOR_KEY}

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


def open_account(client: httpx.Client, wallet: str = LI_WEI, mandate: str | None = None, prefix: str = "",
                 headers: dict[str, str] | None = None, **overrides: Any) -> str:
    """A risk profile and an account on it, funded from `wallet` (under `mandate`, if named)."""
    profile = client.post(f"{prefix}/risk-profiles", json=answers(**overrides), headers=headers)
    assert profile.status_code == 201, profile.text
    body = {"owner_name": "Li Wei", "wallet_account_id": wallet, "risk_profile_id": profile.json()["id"]}
    if mandate:
        body["funding_mandate_id"] = mandate
    account = client.post(f"{prefix}/accounts", json=body, headers=headers)
    assert account.status_code == 201, account.text
    return account.json()["id"]


def deposit(client: httpx.Client, account_id: str, amount: str, prefix: str = "", **headers: str) -> httpx.Response:
    return client.post(f"{prefix}/accounts/{account_id}/deposits",
                       json={"amount": {"amount": amount, "currency": "CNY"}}, headers=headers)


def funded_account(client: TestClient, amount: str = "3000.00", **overrides: Any) -> str:
    account_id = open_account(client, **overrides)
    response = deposit(client, account_id, amount)
    assert response.status_code == 201 and response.json()["status"] == "completed", response.text
    return account_id


def advance(client: TestClient, days: int, **shocks: float) -> dict[str, Any]:
    body = {"days": days, "shocks": [{"asset_class": c, "pct": p} for c, p in shocks.items()]}
    response = client.post("/_sandbox/market/advance", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def holdings(client: TestClient, account_id: str) -> dict[str, dict[str, Any]]:
    return {h["fund"]: h for h in client.get(f"/accounts/{account_id}").json()["holdings"]}


@dataclass
class GatewayStack:
    """Payments and the advisor behind the real gateway, which listens on `http.base_url`; the
    advisor's payments client calls back through it with the advisor service's key."""

    http: httpx.Client
    payments: TestClient  # payments' own port: no gateway, no participant
    advisors_payments: PaymentsClient  # the advisor's client, pointed at the gateway

    def balance(self, account_id: str) -> str:
        return self.payments.get(f"/accounts/{account_id}/balance").json()["available"]["amount"]

    def admit(self, name: str, services: list[str], limits: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
        """Admit a participant with the regulator's key: its id and its key header."""
        limits = {"max_single_transaction": "50000.00", "daily_volume": "500000.00", "max_customers": 100,
                  "rate_limit_per_minute": 600, **(limits or {})}
        response = self.http.post("/sandbox/participants", headers=REGULATOR,
                                  json={"name": name, "services": services, "limits": limits})
        assert response.status_code == 201, response.text
        return response.json()["id"], {"X-API-Key": response.json()["api_key"]}

    def grant_mandate(self, wallet: str, grantee: str, max_per_debit: str = "100000.00",
                      max_per_period: str = "1000000.00") -> str:
        """Demo Wallet Co lets `grantee` debit its customer's `wallet` (monthly caps): the mandate id."""
        mandate = self.http.post("/payments/mandates", headers=WALLET, json={
            "debtor_account_id": wallet, "grantee_participant_id": grantee,
            "max_per_debit": {"amount": max_per_debit, "currency": "CNY"},
            "max_per_period": {"amount": max_per_period, "currency": "CNY"},
            "period": "month", "expires_at": "2030-01-01T00:00:00Z", "purpose": "Robo-advice top-ups"})
        assert mandate.status_code == 201, mandate.text
        return mandate.json()["id"]

    def wallet_with_mandate(self, amount: str, grantee: str) -> tuple[str, str]:
        """A new Demo Wallet Co customer wallet holding `amount`, and its owner's mandate to `grantee`."""
        opened = self.http.post("/payments/accounts", headers=WALLET,
                                json={"kind": "personal", "owner_name": "Big Saver", "currency": "CNY"})
        assert opened.status_code == 201, opened.text
        wallet = opened.json()["id"]
        topped_up = self.payments.post("/deposits", json={"account_id": wallet, "card_number": "4242424242424242",
                                                          "amount": {"amount": amount, "currency": "CNY"}})
        assert topped_up.status_code == 201, topped_up.text
        return wallet, self.grant_mandate(wallet, grantee)

    def audit(self, request_id: str) -> list[dict[str, Any]]:
        """The regulator's log of one request: each hop's outcome (write-ahead intents left out)."""
        entries = self.http.get("/sandbox/audit/entries", params={"limit": 100}, headers=REGULATOR).json()["data"]
        return [e for e in entries if e["request_id"] == request_id and e.get("phase") != "intent"]


@contextmanager
def gateway_stack(tmp_path: Path) -> Iterator[GatewayStack]:
    from sandbox.gateway.main import GatewaySettings
    from sandbox.gateway.main import create_app as create_gateway_app

    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    client = PaymentsClient("http://127.0.0.1:9", ADVISOR_KEY)  # pointed at the gateway once it listens
    advisor = create_app(AdvisorSettings(data_dir=tmp_path / "advisor"), clock=frozen_clock(), payments_client=client)
    gateway = create_gateway_app(
        GatewaySettings(data_dir=tmp_path / "gateway"),
        transports={"payments": httpx.ASGITransport(app=payments), "advisor": httpx.ASGITransport(app=advisor)},
    )
    with serve(gateway) as base, TestClient(payments) as direct, httpx.Client(base_url=base, timeout=30) as http:
        client.http.base_url = base
        yield GatewayStack(http, direct, client)
    client.close()
