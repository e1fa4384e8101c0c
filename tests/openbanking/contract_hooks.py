"""What the suite-wide contract test needs to reach Sandbox Bank at all: a ledger to read from
and a bearer token (client credentials, every scope) obtained through the bank's own API."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.demo import DEMO_TPP_CLIENTS
from services.common.payments_client import PaymentsClient
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.servers import prefix_router, serve

_running = ExitStack()
atexit.register(_running.close)


def prepare(app: FastAPI) -> dict[str, str]:
    """Point the bank at a served payments app, and return a TPP's client-credentials token."""
    scratch = Path(tempfile.mkdtemp(prefix="openbanking-ledger-"))
    _running.callback(shutil.rmtree, scratch, True)
    payments = create_payments_app(PaymentsSettings(data_dir=scratch))
    base = _running.enter_context(serve(prefix_router({"/payments": payments})))
    app.state.payments = PaymentsClient(base, None)
    tpp = DEMO_TPP_CLIENTS[0]
    response = TestClient(app).post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": tpp.client_id, "client_secret": tpp.client_secret,
        "scope": "accounts payments fundsconfirmations"})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
