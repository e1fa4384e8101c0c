"""Factories for the credit tests: the real payments app behind a gateway-shaped router."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.clock import Clock, frozen_clock
from services.credit.main import CreditSettings, create_app
from services.credit.schemas import CHEN_EXAMPLE
from services.credit.scorecard import Scorecard, load_scorecard
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.servers import prefix_router, serve

CHEN_WALLET = "acc_00000000000000000000000004"
LENDER_FLOAT = "acc_00000000000000000000000005"
ZHANG_MIN = "acc_00000000000000000000000002"  # a personal wallet holding CNY 1,200


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


@contextmanager
def payments_behind_gateway(tmp_path: Path) -> Iterator[str]:
    """The real payments app over real HTTP, under /payments as the gateway routes it."""
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    with serve(prefix_router({"/payments": payments})) as base:
        yield base


def balance(base: str, account_id: str) -> str:
    return httpx.get(f"{base}/payments/accounts/{account_id}/balance").json()["available"]["amount"]
