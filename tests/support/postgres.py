"""Throwaway PostgreSQL databases for tests, made and dropped by each test run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ENV = "SANDBOX_TEST_POSTGRES_URL"
SKIP_MESSAGE = (
    f"PostgreSQL tests need {ENV}, e.g. {ENV}=postgresql://postgres@127.0.0.1:5432/test "
    "make test (any server where that user may CREATE DATABASE); .ci/run sets it."
)


def admin_url() -> str | None:
    return os.environ.get(ENV) or None


@contextmanager
def fresh_database(prefix: str = "sbx") -> Iterator[str]:
    """CREATE a uniquely named database, yield its URL, DROP it afterwards."""
    import psycopg

    url = admin_url()
    if url is None:
        pytest.skip(SKIP_MESSAGE)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
