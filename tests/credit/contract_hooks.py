"""Schemathesis setup for credit: disbursals and repayments reach a real, in-process payments
ledger, and consents and open-banking applications a real Sandbox Bank, behind a gateway-shaped
router, so the fuzzer exercises them instead of a dead address."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from services.common.payments_client import PaymentsClient
from services.common.payments_client import PaymentsClient as CreditPayments
from services.credit.bank import SandboxBank
from services.credit.gateway import Gateway
from services.openbanking.main import OpenBankingSettings
from services.openbanking.main import create_app as create_bank_app
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.servers import prefix_router, serve

_running = ExitStack()
atexit.register(_running.close)


def prepare(app: Any) -> dict[str, str]:
    scratch = Path(tempfile.mkdtemp(prefix="credit-contract-"))
    _running.callback(shutil.rmtree, scratch, True)
    payments = create_payments_app(PaymentsSettings(data_dir=scratch / "payments"))
    ledger = _running.enter_context(serve(prefix_router({"/payments": payments})))
    bank = create_bank_app(OpenBankingSettings(data_dir=scratch / "bank"), payments_client=PaymentsClient(ledger, None))
    client = TestClient(prefix_router({"/payments": payments, "/open-banking": bank}), base_url="http://gateway")
    settings = app.state.settings
    app.state.gateway = Gateway(client, settings.participant_key)
    app.state.payments = CreditPayments.over(client, settings.participant_key)
    app.state.bank = SandboxBank(app.state.gateway, settings.ob_client_id, settings.ob_client_secret,
                                 app.state.clock)
    return {}
