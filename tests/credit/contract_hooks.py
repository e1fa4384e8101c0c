"""Schemathesis setup for credit: disbursals and repayments reach a real, in-process payments
ledger behind a gateway-shaped router, so the fuzzer exercises them instead of a dead address."""

from __future__ import annotations

import tempfile
from typing import Any

from fastapi.testclient import TestClient

from services.credit.gateway import Gateway
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.servers import prefix_router


def prepare(app: Any) -> dict[str, str]:
    payments = create_payments_app(PaymentsSettings(data_dir=tempfile.mkdtemp(prefix="credit-contract-payments-")))
    client = TestClient(prefix_router({"/payments": payments}), base_url="http://gateway")
    app.state.gateway = Gateway(client, app.state.gateway.participant_key)
    return {}
