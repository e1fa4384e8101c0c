"""The participant's contract (openapi/sandbox.json) fuzzed through the real gateway: the whole
sandbox in-process, a fuzz participant admitted for the run, the headers it sends. Shared by
tests/platform/test_gateway_fuzz.py and `fintech-sandbox fuzz --via-gateway`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from services.common.demo import DEMO_REGULATOR_KEY, SERVICE_PARTICIPANT_KEYS

FUZZ_SERVICES = ["payments", "credit", "advisor", "open-banking"]
# Generous: the fuzzer moves money from whatever account it finds, many times a second.
FUZZ_LIMITS = {"max_single_transaction": "1000000000.00", "daily_volume": "1000000000000.00",
               "max_customers": 1_000_000, "rate_limit_per_minute": 100_000}
# Never fuzzed: the clock would end every participant's testing window (tests/gateway/test_clock.py
# tests it), and the gateway forwards /_sandbox/... to services only with the regulator's key.
EXCLUDED_PATH_REGEX = r"/_sandbox/"


def admit_fuzz_participant(base_url: str, name: str = "Contract Fuzzer") -> tuple[str, str]:
    """A participant admitted by the regulator for this run, every service, generous limits: (id, key)."""
    response = httpx.post(f"{base_url.rstrip('/')}/sandbox/participants",
                          headers={"X-API-Key": DEMO_REGULATOR_KEY}, timeout=30,
                          json={"name": name, "role": "schemathesis against openapi/sandbox.json",
                                "services": FUZZ_SERVICES, "limits": FUZZ_LIMITS})
    if response.status_code != 201:
        raise RuntimeError(f"admitting the fuzz participant: {response.status_code} {response.text}")
    return response.json()["id"], response.json()["api_key"]


def tpp_token(base_url: str, api_key: str) -> str:
    """A Sandbox Bank client-credentials token (every scope) for a TPP client the participant
    registers through the gateway with its key: what the consent operations need (operations
    that need a PSU's token answer 401/403, as documented)."""
    base = base_url.rstrip("/") + "/open-banking"
    with httpx.Client(base_url=base, headers={"X-API-Key": api_key}, timeout=30) as bank:
        registered = bank.post("/register", json={"client_name": "Contract Fuzzer",
                                                  "redirect_uri": "https://fuzzer.example/callback"})
        if registered.status_code != 201:
            raise RuntimeError(f"registering a TPP client: {registered.status_code} {registered.text}")
        client = registered.json()
        response = bank.post("/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": client["client_id"],
            "client_secret": client["client_secret"], "scope": "accounts payments fundsconfirmations"})
        if response.status_code != 200:
            raise RuntimeError(f"a TPP token through the gateway: {response.status_code} {response.text}")
        return response.json()["access_token"]


def participant_headers(base_url: str) -> dict[str, str]:
    """Admit a fuzz participant and return what it sends on every case: its key and a TPP token."""
    _, key = admit_fuzz_participant(base_url)
    return {"X-API-Key": key, "Authorization": f"Bearer {tpp_token(base_url, key)}"}


@contextmanager
def sandbox_in_process(data_dir: Path, **gateway_settings: Any) -> Iterator[str]:
    """The real gateway on a loopback port (its URL), every service in-process behind it through
    httpx.ASGITransport; the services call each other back through it with their own keys, as
    `make run` wires them. `gateway_settings`: GatewaySettings fields to override."""
    from sandbox.gateway.main import GatewaySettings
    from sandbox.gateway.main import create_app as create_gateway_app
    from services.advisor.main import AdvisorSettings
    from services.advisor.main import create_app as create_advisor_app
    from services.common.payments_client import PaymentsClient
    from services.credit.main import CreditSettings
    from services.credit.main import create_app as create_credit_app
    from services.openbanking.main import OpenBankingSettings
    from services.openbanking.main import create_app as create_bank_app
    from services.payments.main import PaymentsSettings
    from services.payments.main import create_app as create_payments_app
    from tests.support.servers import serve

    to_gateway = httpx.Client(timeout=30)  # credit's client; its base URL is the gateway, known below
    advisor_payments = PaymentsClient("http://127.0.0.1:9", SERVICE_PARTICIPANT_KEYS["advisor"], timeout=30)
    payments = create_payments_app(PaymentsSettings(data_dir=data_dir / "payments"))
    bank = create_bank_app(OpenBankingSettings(data_dir=data_dir / "bank"),
                           payments_client=PaymentsClient("http://127.0.0.1:9", None))
    credit = create_credit_app(CreditSettings(data_dir=data_dir / "credit"), payments_client=to_gateway)
    advisor = create_advisor_app(AdvisorSettings(data_dir=data_dir / "advisor"), payments_client=advisor_payments)
    gateway = create_gateway_app(GatewaySettings(data_dir=data_dir / "gateway", **gateway_settings), transports={
        "payments": httpx.ASGITransport(app=payments), "openbanking": httpx.ASGITransport(app=bank),
        "credit": httpx.ASGITransport(app=credit), "advisor": httpx.ASGITransport(app=advisor)})
    with serve(gateway) as base:
        to_gateway.base_url = httpx.URL(base)
        advisor_payments.http.base_url = httpx.URL(base)
        bank.state.payments = PaymentsClient(base, SERVICE_PARTICIPANT_KEYS["openbanking"])
        try:
            yield base
        finally:
            to_gateway.close()
            advisor_payments.close()
