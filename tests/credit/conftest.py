"""Factories for the credit tests: the real payments app behind a gateway-shaped router, or the
whole sandbox (payments, Sandbox Bank, credit) behind the real gateway."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sandbox.gateway.main import GatewaySettings
from sandbox.gateway.main import create_app as create_gateway_app
from services.common.clock import Clock, frozen_clock
from services.common.demo import (
    DEMO_PARTICIPANTS,
    DEMO_REGULATOR_KEY,
    SERVICE_PARTICIPANT_KEYS,
)
from services.common.payments_client import PaymentsClient
from services.credit.main import CreditSettings, create_app
from services.credit.schemas import CHEN_EXAMPLE
from services.credit.scorecard import Scorecard, load_scorecard
from services.openbanking.main import OpenBankingSettings
from services.openbanking.main import create_app as create_bank_app
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.servers import serve

CHEN_WALLET = "acc_00000000000000000000000004"
LENDER_FLOAT = "acc_00000000000000000000000005"
ZHANG_MIN = "acc_00000000000000000000000002"  # a personal wallet holding CNY 1,200
CREDIT_PARTICIPANT = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == SERVICE_PARTICIPANT_KEYS["credit"])
LENDER_KEY = "sbx_demo_lender_key"  # the lender's front end: may call /credit only
TPP_KEY = "sbx_demo_tpp_key"  # reaches the bank's authorise step, standing in for the PSU's browser


@pytest.fixture
def card() -> Scorecard:
    return load_scorecard()


def application(**overrides: Any) -> dict[str, Any]:
    """Chen's Tea Stall's application, with any top-level or nested field replaced."""
    body = copy.deepcopy(CHEN_EXAMPLE)
    for key, value in overrides.items():
        if key in body["records"]:
            body["records"][key] = value
        elif key in body["cash_flow"]:
            body["cash_flow"][key] = value
        else:
            body[key] = value
    return body


def credit_app(tmp_path: Path, client: httpx.Client | None = None, database_url: str | None = None,
               clock: Clock | None = None, **settings: Any):
    return create_app(
        CreditSettings(data_dir=tmp_path / "credit", database_url=database_url, **settings),
        clock=clock or frozen_clock(),
        payments_client=client or httpx.Client(base_url="http://127.0.0.1:9", timeout=1),
    )


@pytest.fixture
def credit(tmp_path: Path) -> Iterator[TestClient]:
    """The credit service alone (nothing listens where its gateway would be)."""
    with TestClient(credit_app(tmp_path)) as client:
        yield client


def amount(money: dict[str, str]) -> Decimal:
    return Decimal(money["amount"])


@dataclass
class Sandbox:
    """The real gateway on a real port, routing to in-process payments, bank and credit apps."""

    base: str
    clock: Clock

    def client(self, key: str, prefix: str = "") -> httpx.Client:
        return httpx.Client(base_url=self.base + prefix, headers={"X-API-Key": key}, timeout=30)

    def audit(self, **params: str) -> list[dict[str, Any]]:
        with self.client(DEMO_REGULATOR_KEY) as regulator:
            response = regulator.get("/sandbox/audit/entries", params={"limit": 100, **params})
            response.raise_for_status()
            return response.json()["data"]

    def admit(self, name: str, services: list[str]) -> tuple[str, str]:
        """A new participant, admitted by the regulator with generous limits: (id, key)."""
        with self.client(DEMO_REGULATOR_KEY) as regulator:
            response = regulator.post("/sandbox/participants", json={
                "name": name, "services": services,
                "limits": {"max_single_transaction": "100000.00", "daily_volume": "1000000.00",
                           "max_customers": 100, "rate_limit_per_minute": 1000}})
            assert response.status_code == 201, response.text
            return response.json()["id"], response.json()["api_key"]


@contextmanager
def sandbox_through_gateway(tmp_path: Path, clock: Clock | None = None) -> Iterator[Sandbox]:
    """Every service calls the others through the gateway with its own key, as `sandbox run` wires
    them: the gateway names the caller's participant to each service (X-Sandbox-Participant)."""
    clock = clock or frozen_clock()
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"), clock=clock)
    bank = create_bank_app(OpenBankingSettings(data_dir=tmp_path / "bank"), clock=clock,
                           payments_client=PaymentsClient("http://127.0.0.1:9", None))
    to_gateway = httpx.Client(timeout=30)  # credit's client; its base URL is the gateway, known below
    credit = credit_app(tmp_path, to_gateway, clock=clock)
    gateway = create_gateway_app(GatewaySettings(data_dir=tmp_path / "gateway"), clock=clock, transports={
        "payments": httpx.ASGITransport(app=payments), "openbanking": httpx.ASGITransport(app=bank),
        "credit": httpx.ASGITransport(app=credit)})
    with serve(gateway) as base:
        to_gateway.base_url = httpx.URL(base)
        bank.state.payments = PaymentsClient(base, SERVICE_PARTICIPANT_KEYS["openbanking"])
        try:
            yield Sandbox(base, clock)
        finally:
            to_gateway.close()
