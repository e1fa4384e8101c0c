"""Composition root of the credit service."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict

from services.common.app import build_service_app, configure_logging
from services.common.clock import Clock
from services.common.db import Database, database_url
from services.common.demo import (
    DEMO_TPP_CLIENTS,
    SERVICE_PARTICIPANT_KEYS,
    demo_account,
)
from services.common.payments_client import PaymentsClient
from services.common.reset import ResetHooks
from services.common.settings import ServiceSettings
from services.credit.bank import SandboxBank
from services.credit.endpoints import router
from services.credit.gateway import Gateway
from services.credit.instalments import InstalmentCollector
from services.credit.models import CreditModel
from services.credit.scorecard import DEFAULT_ARTIFACT, load_scorecard

_CREDIT_TPP = next(c for c in DEMO_TPP_CLIENTS if c.client_id == "tpp_credit")


class CreditSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CREDIT_", extra="ignore")

    participant_key: str | None = SERVICE_PARTICIPANT_KEYS["credit"]
    # Loans are paid from, and repaid to, this payments account.
    lender_account_id: str = demo_account("Sandbox Microloans (lender float)").id
    scorecard_path: Path = DEFAULT_ARTIFACT
    # Calls through the gateway give up after this long (the payout is then retried safely).
    gateway_timeout_seconds: float = 5.0
    # Credit's own registration at Sandbox Bank: it reads applicants' transactions as a TPP.
    ob_client_id: str = _CREDIT_TPP.client_id
    ob_client_secret: str = _CREDIT_TPP.client_secret


DESCRIPTION = """Small loans decided in about a millisecond from alternative data, after MYbank's "310"
(3 minutes to apply, 1 second to disburse, 0 humans) and Zhima Credit's 350-950 range.

A points scorecard (WoE bins, logistic regression, PDO scaling) trained offline on a seeded
synthetic population scores monthly transaction flow, its volatility, time in business, tax and
utility payment records, customer ratings and existing debt. Sex and age are never inputs.
Every decision returns the score, band, probability of default, the terms by risk tier, the top
four reasons (points lost against each characteristic's maximum) and its timings. An approved
loan is paid out by a real transfer in the payments ledger, through the gateway.

Open banking: instead of inline figures, the flow can be read from Sandbox Bank. Credit is a TPP
with its own registration (`tpp_credit`): `POST /open-banking/consents` creates the consent, the
applicant authorises it at the bank, and the application carries the consent id and the bank's
authorisation code, which credit swaps for the applicant's token itself.

Magic applicants: `applicant_name` "Test Decline" is always declined, "Test Refer" always referred.
"""


def create_app(
    settings: CreditSettings | None = None,
    clock: Clock | None = None,
    payments_client: httpx.Client | None = None,
) -> FastAPI:
    """`payments_client`: an httpx client whose base URL is the gateway (tests inject their own)."""
    settings = settings or CreditSettings()
    configure_logging(settings.log_level)
    clock = clock or Clock()
    db = Database(database_url(settings.database_url, settings.data_dir, "credit"), CreditModel.metadata)
    db.create_tables()
    client = payments_client or httpx.Client(
        base_url=settings.gateway_url, timeout=settings.gateway_timeout_seconds
    )
    gateway = Gateway(client, settings.participant_key)
    bank = SandboxBank(gateway, settings.ob_client_id, settings.ob_client_secret, clock)
    payments = PaymentsClient.over(client, settings.participant_key)
    collector = InstalmentCollector(db, payments)
    app = build_service_app(
        name="credit",
        title="Credit",
        description=DESCRIPTION,
        settings=settings,
        database=db,
        clock=clock,
        routers=[router],
        openapi_tags=[
            {"name": "model", "description": "The scorecard, its version, what-if scoring"},
            {"name": "applications", "description": "Applications and automated decisions"},
            {"name": "open banking", "description": "Credit as a TPP: consents to read an applicant's transactions"},
            {"name": "loans", "description": "Disbursal through payments, schedule, repayments"},
            {"name": "monitoring", "description": "Fairness and population stability"},
        ],
        on_shutdown=gateway.close if payments_client is None else None,
        reset=ResetHooks(forget=[bank.forget_token]),  # credit seeds nothing of its own
        # Instalments fall due by credit's clock and are collected (services/credit/instalments.py).
        due_work=collector.due_work(),
    )
    app.state.scorecard = load_scorecard(settings.scorecard_path)
    app.state.gateway = gateway
    app.state.payments = payments
    app.state.bank = bank
    return app
