"""Run real ASGI apps on real loopback ports inside the test process (uvicorn in a thread:
`serve`, shared with the benchmarks).

Services that call each other through the gateway are tested over real HTTP, as they run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from sandbox.bench.load import serve

__all__ = ["balance", "payments_behind_gateway", "prefix_router", "serve", "wait_ready"]


def prefix_router(apps: Mapping[str, Any]) -> Starlette:
    """A stand-in for the gateway's routing alone: `/payments/...` → the payments app with the
    prefix stripped. No keys, limits or screening; tests of those use the real gateway."""
    return Starlette(routes=[Mount(prefix, app=app) for prefix, app in apps.items()])


def wait_ready(base_url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base_url} not ready")
        time.sleep(0.05)


@contextmanager
def payments_behind_gateway(tmp_path: Path) -> Iterator[str]:
    """The real payments app over real HTTP, under /payments as the gateway routes it."""
    from services.payments.main import PaymentsSettings
    from services.payments.main import create_app as create_payments_app

    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    with serve(prefix_router({"/payments": payments})) as base:
        yield base


def balance(base: str, account_id: str) -> str:
    """The available balance exactly as payments states it (a decimal string, never a float)."""
    return httpx.get(f"{base}/payments/accounts/{account_id}/balance").json()["available"]["amount"]
