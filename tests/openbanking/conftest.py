"""Sandbox Bank under test: the real bank app, talking HTTP to a real payments app served on a
loopback port behind a routing-only stand-in for the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.common.clock import Clock, frozen_clock
from services.common.payments_client import PaymentsClient
from services.openbanking.main import OpenBankingSettings, create_app
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.openbanking.factories import Bank
from tests.support.servers import prefix_router, serve


@pytest.fixture
def clock() -> Clock:
    return frozen_clock()


@pytest.fixture
def ledger_url(tmp_path: Path) -> Iterator[str]:
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    with serve(prefix_router({"/payments": payments})) as base:
        yield base


@pytest.fixture
def bank(tmp_path: Path, clock: Clock, ledger_url: str) -> Iterator[Bank]:
    app = create_app(OpenBankingSettings(data_dir=tmp_path / "bank"), clock=clock,
                     payments_client=PaymentsClient(ledger_url, None))
    with TestClient(app) as client:
        yield Bank(client, clock, ledger_url)
