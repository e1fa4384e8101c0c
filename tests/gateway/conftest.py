"""The gateway in front of the real payments app; factories for participants and transfers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sandbox.gateway.main import GatewaySettings, create_app
from services.common.clock import Clock, frozen_clock
from services.common.demo import DEMO_REGULATOR_KEY
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app

REGULATOR = {"X-API-Key": DEMO_REGULATOR_KEY}
WALLET_KEY = "sbx_demo_wallet_key"
LI_WEI = "acc_00000000000000000000000001"
ZHANG_MIN = "acc_00000000000000000000000002"
WANG_FANG = "acc_00000000000000000000000008"
LENDER = "acc_00000000000000000000000005"


@dataclass
class Sandbox:
    client: TestClient
    payments: TestClient
    clock: Clock
    data_dir: Path

    def admit(self, **overrides: Any) -> tuple[str, str]:
        """Admit a participant (payments only, generous limits unless overridden): (id, key)."""
        limits = {"max_single_transaction": "100000.00", "daily_volume": "1000000.00",
                  "max_customers": 100, "rate_limit_per_minute": 1000}
        limits.update(overrides.pop("limits", {}))
        body = {"name": "Test Firm", "services": ["payments"], "limits": limits, **overrides}
        response = self.client.post("/sandbox/participants", json=body, headers=REGULATOR)
        assert response.status_code == 201, response.text
        return response.json()["id"], response.json()["api_key"]

    def transfer(self, key: str, amount: str, source: str | None = None, target: str = ZHANG_MIN,
                 **headers: str) -> httpx.Response:
        """A transfer through the gateway; by default from the shared, well-funded float."""
        source = source or self.float_account
        body = {"from_account_id": source, "to_account_id": target,
                "amount": {"amount": amount, "currency": "CNY"}}
        return self.client.post("/payments/transfers", json=body, headers={"X-API-Key": key, **headers})

    def open_account(self, key: str, owner: str, currency: str = "CNY") -> str:
        response = self.client.post("/payments/accounts", headers={"X-API-Key": key},
                                    json={"kind": "personal", "owner_name": owner, "currency": currency})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def funded_account(self, key: str, amount: str, owner: str = "Funded Customer") -> str:
        """An account the participant opened (so payments lets it debit the account), funded on
        payments' own port: nothing screened or counted at the gateway."""
        account = self.open_account(key, owner)
        fund(self.payments, account, amount)
        return account

    def public_account(self, amount: str, owner: str = "Shared Float") -> str:
        """An account opened and funded on payments' own port: it has no participant, so every
        participant may use it (payments keeps a participant to the accounts it opened, and
        to these)."""
        response = self.payments.post("/accounts", json={"kind": "personal", "owner_name": owner, "currency": "CNY"})
        assert response.status_code == 201, response.text
        fund(self.payments, response.json()["id"], amount)
        return response.json()["id"]

    @cached_property
    def float_account(self) -> str:
        """A shared, well-funded account every participant may debit, opened on first use."""
        return self.public_account("1000000.00")

    def balance(self, account_id: str) -> str:
        return self.payments.get(f"/accounts/{account_id}").json()["balance"]["amount"]

    def entries(self, with_intents: bool = False, **params: Any) -> list[dict[str, Any]]:
        """The log's entries; without the intents money movements write ahead unless asked."""
        response = self.client.get("/sandbox/audit/entries", params={"limit": 100, **params}, headers=REGULATOR)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        return data if with_intents else [e for e in data if e["phase"] != "intent"]


def fund(payments: Any, account_id: str, amount: str) -> None:
    """Top up an account directly on payments (a TestClient or httpx.Client on its own port)."""
    response = payments.post("/deposits", json={"account_id": account_id, "card_number": "4242424242424242",
                                                "amount": {"amount": amount, "currency": "CNY"}})
    assert response.status_code == 201, response.text


# Where a test's gateway finds a service it was given no transport for: a closed port on
# loopback, so its events relay never reads (and marks published) the outbox of a sandbox that
# happens to run on this machine's default ports.
NOWHERE = "http://127.0.0.1:9"


def build_gateway(data_dir: Path, clock: Clock, transports: dict[str, Any] | None = None, **settings: Any):
    for name in ("payments", "credit", "advisor", "openbanking"):
        settings.setdefault(f"upstream_{name}", NOWHERE)
    return create_app(GatewaySettings(data_dir=data_dir, **settings), clock=clock, transports=transports)


@pytest.fixture
def payments_app(tmp_path: Path):
    return create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))


@pytest.fixture
def sandbox(tmp_path: Path, payments_app) -> Iterator[Sandbox]:
    clock = frozen_clock()
    app = build_gateway(tmp_path / "gateway", clock, {"payments": httpx.ASGITransport(app=payments_app)})
    with TestClient(app) as client, TestClient(payments_app) as payments:
        yield Sandbox(client, payments, clock, tmp_path / "gateway")
