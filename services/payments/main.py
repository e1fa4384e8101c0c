"""Composition root of the payments service."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import FastAPI
from pydantic_settings import SettingsConfigDict
from sqlalchemy import func, select
from sqlmodel import Session

from services.common.app import build_service_app, configure_logging
from services.common.clock import Clock
from services.common.db import Database, database_url
from services.common.demo import DEMO_ACCOUNTS, DEMO_MANDATES
from services.common.fastroute import served_directly
from services.common.money import to_minor
from services.common.reset import ResetHooks
from services.common.settings import ServiceSettings
from services.payments import cross_border, events, service
from services.payments.endpoints import router
from services.payments.fastpath import forget_known_accounts
from services.payments.models import Account, IdempotencyKeys, Mandate, PaymentsModel


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    # Serve the JSON POSTs through the direct handler (services/common/fastroute.py): same
    # answers and OpenAPI, less CPU per movement. Off: every route is FastAPI's stock APIRoute.
    fast_routes: bool = True
    # Write a domain event to the outbox with every change (services/payments/events.py). Off
    # only to measure what the outbox costs (`fintech-sandbox bench payments` runs both).
    record_events: bool = True


DESCRIPTION = """Wallets, merchant accounts and a real double-entry ledger, after Alipay and WeChat Pay.

Every movement is a journal whose postings sum to zero; a refund is a new journal. Amounts are
decimal strings in the currency's ISO 4217 exponent. POSTs take an `Idempotency-Key`.
`GET /invariants` checks the whole ledger after any step. Merchants show EMVCo QR codes that
wallets pay (`/accounts/{id}/qr`, `/qr-payments`); cross-border payments convert at a quoted
rate on a `ripple` or `correspondent` rail (`/fx/quotes`, `/cross-border-payments`).
Through the gateway, a participant sees and debits only the accounts it opened; it may pay any.
To debit another participant's customer it names a live mandate from that owner (`mandate_id`):
the owner grants it (`POST /mandates`) with a cap per debit and per calendar period, and an expiry.

Test cards for top-ups: `4242424242424242` pays; `4000000000000002` declines, `4000000000009995`
insufficient funds, `4000000000009987` lost card, `4000000000009979` stolen card,
`4000000000000069` expired card, `4000000000000119` processing error; a number failing the Luhn
check is an incorrect number.

A cross-border payment is `pending` (the payer debited, the money in transit) until its rail's
settlement time by the service clock (ripple 5 seconds, correspondent 3 business days), then
`settled`; one to a payee account named `Test Return` is `returned` to the payer in full instead.
"""


def seed_demo_accounts(session: Session, now: datetime) -> None:
    """Open the demo world's accounts with their opening balances, once."""
    if session.execute(select(func.count()).select_from(Account)).scalar_one():
        return
    for demo in DEMO_ACCOUNTS:
        account = Account(id=demo.id, kind=demo.kind, owner_name=demo.owner_name,
                          currency=demo.currency, participant_id=demo.held_by, created_at=now)
        service.open_with_balance(session, account, to_minor(demo.opening_balance, demo.currency), now)


def seed_demo_mandates(session: Session) -> None:
    """Grant the demo world's mandates once each, from the day its accounts were opened (the
    sandbox's first start): a restart, or an older database that lacks them, adds what is missing."""
    session.flush()  # the accounts just opened, if any, are read back below
    for demo in DEMO_MANDATES:
        account = session.get(Account, demo.debtor_account_id)
        if account is None or session.get(Mandate, demo.id) is not None:
            continue
        service.add_mandate(session, Mandate(
            id=demo.id,
            debtor_account_id=account.id,
            grantor_participant_id=account.participant_id,
            grantee_participant_id=demo.grantee_participant_id,
            currency=account.currency,
            max_per_debit_minor=to_minor(demo.max_per_debit, account.currency),
            max_per_period_minor=to_minor(demo.max_per_period, account.currency),
            period=demo.period,
            purpose=demo.purpose,
            expires_at=account.created_at + timedelta(days=demo.valid_days),
            created_at=account.created_at,
        ))


def seed_demo_world(session: Session, now: datetime) -> None:
    """The demo world's accounts, then the mandates over them: start-up's one unit of work."""
    seed_demo_accounts(session, now)
    seed_demo_mandates(session)


def create_app(settings: PaymentsSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or PaymentsSettings()
    configure_logging(settings.log_level)
    clock = clock or Clock()
    db = Database(database_url(settings.database_url, settings.data_dir, "payments"), PaymentsModel.metadata)
    db.create_tables()
    if not settings.record_events:
        events.stop_recording(db.engine)

    def seed() -> None:
        if settings.seed_demo_data:
            db.unit_of_work(lambda session: seed_demo_world(session, clock.now()))

    seed()
    app = build_service_app(
        name="payments",
        title="Payments",
        description=DESCRIPTION,
        settings=settings,
        database=db,
        clock=clock,
        routers=[served_directly(router) if settings.fast_routes else router],
        reset=ResetHooks(reseed=seed, forget=[lambda: forget_known_accounts(db.engine)]),
        # Cross-border payments settle (or come back) when their rail's time has passed.
        due_work=cross_border.settlement_due_work(db),
        openapi_tags=[
            {"name": "accounts", "description": "Wallets and merchant accounts"},
            {"name": "movements", "description": "Top-ups, withdrawals, transfers, payments, refunds"},
            {"name": "qr", "description": "Merchant QR codes (EMVCo), generated and paid"},
            {"name": "cross-border", "description": "FX quotes on ripple vs correspondent rails, cross-border payments"},
            {"name": "mandates", "description": "Debit mandates: an owner lets another participant debit an account"},
            {"name": "ledger", "description": "The ledger's invariants"},
        ],
    )
    app.state.idempotency_table = IdempotencyKeys
    return app
