"""The payments app the tests build: one factory, building it as main.py's `create_app` does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.clock import Clock, frozen_clock
from services.payments.main import PaymentsSettings, create_app
from tests.payments.factories import MakeApp


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    """`make_app(**settings)`: the payments service on a SQLite file under the test's tmp_path (or
    on `database_url`), the demo world seeded, its clock frozen at Monday 2026-01-05 09:00 UTC
    unless `clock` is given; any other `PaymentsSettings` field as a keyword
    (`seed_demo_data=False`, `max_body_bytes=300`, `fast_routes=False`, ...)."""

    def make(*, clock: Clock | None = None, **settings: Any) -> FastAPI:
        return create_app(PaymentsSettings(**{"data_dir": tmp_path, **settings}), clock=clock or frozen_clock())

    return make


@pytest.fixture
def client(make_app: MakeApp) -> Iterator[TestClient]:
    """A client of the seeded demo world, its clock frozen."""
    with TestClient(make_app()) as c:
        yield c
