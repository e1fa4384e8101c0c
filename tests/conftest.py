"""Fixtures every test folder shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.support.postgres import fresh_database


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    logging.getLogger("sandbox").setLevel(logging.WARNING)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str | None]:
    """Run the test once on a SQLite file and once on a fresh PostgreSQL database.

    Yields None for SQLite (the service's default file under its data_dir)."""
    if request.param == "sqlite":
        yield None
    else:
        with fresh_database() as url:
            yield url
