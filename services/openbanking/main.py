"""Composition root of Sandbox Bank, the open-banking service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.common.app import build_service_app, configure_logging
from services.common.clock import Clock
from services.common.db import Database, database_url
from services.common.duework import DueWork
from services.common.payments_client import PaymentsClient
from services.common.reset import ResetHooks
from services.common.settings import ServiceSettings
from services.openbanking import service
from services.openbanking.errors import (
    InteractionIdMiddleware,
    install_obie_error_handlers,
    install_obie_openapi,
)
from services.openbanking.models import BankModel, IdempotencyKeys
from services.openbanking.routers import ROUTERS


class OpenBankingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OPENBANKING_", extra="ignore")

    # The URL TPPs reach the bank at, for `Links`; by default the request's own (or the
    # gateway's, from X-Forwarded-Host / X-Forwarded-Prefix).
    public_url: str | None = None


DESCRIPTION = """Sandbox Bank: a UK Open Banking (OBIE Read/Write v3.1.11) style API over the payments ledger.

Account information (AISP), domestic payment initiation (PISP) and confirmation of funds (CBPII),
with OBIE's consents, permission rules, `Data`/`Links`/`Meta` envelope, status enums, headers
(`x-fapi-interaction-id`, `x-idempotency-key`) and `OBErrorResponse1` errors.

The journey: `POST /oauth2/token` (client_credentials) → create a consent → the PSU authorises at
`POST /authorize` (headless; one-time code `123456`) → swap the code at `/oauth2/token`
(authorization_code) → read accounts / make the payment with that token.

Demo TPP: `tpp_demo` / `sbx_demo_tpp_secret`. PSUs: `wangfang` (two accounts and history),
`zhaolei` (little money). Magic PSUs: `psu-reject` rejects every consent; `psu-expire` authorises
and the consent expires 60 seconds later (advance the clock at `/_sandbox/clock/advance`).
Accounts are identified with `SchemeName` `UK.OBIE.BBAN` and the ledger id (`acc_…`).
"""

SECURITY_SCHEMES: dict[str, Any] = {
    "TPPOAuth2Security": {
        "type": "oauth2",
        "description": "TPP client-credentials token: creates and reads consents.",
        "flows": {"clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": {
            "accounts": "Account information", "payments": "Payment initiation",
            "fundsconfirmations": "Confirmation of funds"}}},
    },
    "PSUOAuth2Security": {
        "type": "oauth2",
        "description": "Token from the authorization-code grant after the PSU authorised one consent.",
        "flows": {"authorizationCode": {"authorizationUrl": "/authorize", "tokenUrl": "/oauth2/token", "scopes": {
            "accounts": "Account information", "payments": "Payment initiation",
            "fundsconfirmations": "Confirmation of funds"}}},
    },
}


def create_app(settings: OpenBankingSettings | None = None, clock: Clock | None = None,
               payments_client: PaymentsClient | None = None) -> FastAPI:
    settings = settings or OpenBankingSettings()
    configure_logging(settings.log_level)
    clock = clock or Clock()
    db = Database(database_url(settings.database_url, settings.data_dir, "openbanking"), BankModel.metadata)
    db.create_tables()

    def seed() -> None:
        db.unit_of_work(lambda session: service.seed_bank(session, clock.now()))  # outside any request

    seed()

    def expire_consents(now: datetime) -> int:
        return db.unit_of_work(lambda session: service.expire_consents(session, now))

    payments = payments_client or PaymentsClient(settings.gateway_url, settings.participant_key)
    app = build_service_app(
        name="openbanking",
        title="Sandbox Bank (Open Banking)",
        description=DESCRIPTION,
        settings=settings,
        database=db,
        clock=clock,
        routers=ROUTERS,
        on_shutdown=payments.close,
        reset=ResetHooks(reseed=seed),
        # Consents end at their ExpirationDateTime by the bank's clock: marked, and the event.
        due_work=[DueWork("consent-expiry", expire_consents)],
        openapi_tags=[
            {"name": "authorisation", "description": "OAuth2 tokens, client registration, the PSU's decision"},
            {"name": "account access", "description": "AISP account-access consents"},
            {"name": "accounts", "description": "AISP accounts"},
            {"name": "balances", "description": "AISP balances"},
            {"name": "transactions", "description": "AISP transactions"},
            {"name": "domestic payments", "description": "PISP consents and payments"},
            {"name": "funds confirmation", "description": "CBPII consents and funds confirmations"},
        ],
    )
    app.state.idempotency_table = IdempotencyKeys
    app.state.payments = payments
    install_obie_error_handlers(app)
    app.add_middleware(InteractionIdMiddleware)
    install_obie_openapi(app)
    _install_security_schemes(app)
    return app


def _install_security_schemes(app: FastAPI) -> None:
    inner = app.openapi

    def openapi() -> dict[str, Any]:
        schema = inner()
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
