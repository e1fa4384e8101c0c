"""The fault suite's stack: a real gateway and payments, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.faults.stack import SERVICES, Stack
from tests.faults.traffic import Wallet
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request: pytest.FixtureRequest, tmp_path) -> Iterator[Stack]:
    """Both processes up on fresh databases; everything stopped, and the PostgreSQL databases
    dropped, afterwards whatever happened."""
    with ExitStack() as resources:
        urls = {}
        if request.param == "postgres":
            urls = {name: resources.enter_context(fresh_database(f"sbx_fault_{name}")) for name in SERVICES}
        running = resources.enter_context(Stack(tmp_path / "sandbox-data", urls))
        running.start(*SERVICES)
        yield running


@pytest.fixture
def wallet(stack: Stack) -> Iterator[Wallet]:
    with Wallet(stack.gateway_url) as client:
        yield client
