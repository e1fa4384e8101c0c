"""The hot path runs prebuilt statements on the driver's cursor, batched on PostgreSQL (psycopg's
pipeline mode); a driver error still surfaces as SQLAlchemy's own exception type, as for any
statement run through SQLAlchemy, and leaves nothing written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.payments.fastpath import _KNOWN, AccountRef, NewJournal
from services.payments.ledger import Leg
from services.payments.models import Journal
from services.payments.repository import JournalsRepository
from tests.payments.factories import MakeApp


def test_a_constraint_violation_on_the_fast_path_is_an_integrity_error(database_url, make_app: MakeApp) -> None:
    app = make_app(database_url=database_url, seed_demo_data=False)
    journal = NewJournal(id="tr_no_such_accounts", kind="transfer", currency="CNY", amount_minor=1,
                         created_at=datetime(2026, 1, 1, tzinfo=UTC))
    legs = [Leg("acc_nobody_pays", -1), Leg("acc_nobody_gets", 1)]
    with app.state.db.session() as session:
        with pytest.raises(IntegrityError):  # the postings' foreign keys refuse the accounts
            JournalsRepository(session).post(journal, legs, {})
        session.rollback()
        assert session.execute(select(func.count()).select_from(Journal)).scalar_one() == 0
    app.state.db.dispose()


def test_a_wrongly_remembered_account_fails_once_then_is_read_again(database_url, make_app: MakeApp) -> None:
    """Movements skip the accounts look-up for accounts the process has read before (their kind,
    currency and owner never change). Were an entry ever wrong, the postings' foreign key refuses
    the movement, nothing is written, and the entry is forgotten: the retry reads the database."""
    app = make_app(database_url=database_url)
    li_wei, ghost = "acc_00000000000000000000000001", "acc_0000000000000000000000ghst"
    body = {"from_account_id": li_wei, "to_account_id": ghost, "amount": {"amount": "1.00", "currency": "CNY"}}
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/transfers", json=body).status_code == 404  # read from the database
        with app.state.db.session() as session:
            _KNOWN.of(session)[ghost] = AccountRef(ghost, "personal", "CNY", None)  # a wrong entry
        journals = client.get("/invariants").json()["journals"]

        failed = client.post("/transfers", json=body)
        assert failed.status_code == 500 and failed.json()["type"].endswith("internal-error")
        assert client.get("/invariants").json()["journals"] == journals  # nothing written
        assert client.get(f"/accounts/{li_wei}").json()["balance"]["amount"] == "5000.00"

        retry = client.post("/transfers", json=body)
        assert retry.status_code == 404, retry.text  # forgotten, read again: not found
