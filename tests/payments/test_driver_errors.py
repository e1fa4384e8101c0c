"""The hot path runs prebuilt statements on the driver's cursor, batched on PostgreSQL (psycopg's
pipeline mode); a driver error still surfaces as SQLAlchemy's own exception type, as for any
statement run through SQLAlchemy, and leaves nothing written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.payments.ledger import Leg
from services.payments.main import PaymentsSettings, create_app
from services.payments.models import Journal
from services.payments.repository import JournalsRepository, NewJournal


def test_a_constraint_violation_on_the_fast_path_is_an_integrity_error(database_url, tmp_path) -> None:
    app = create_app(PaymentsSettings(data_dir=tmp_path, database_url=database_url, seed_demo_data=False))
    journal = NewJournal(id="tr_no_such_accounts", kind="transfer", currency="CNY", amount_minor=1,
                         created_at=datetime(2026, 1, 1, tzinfo=UTC))
    legs = [Leg("acc_nobody_pays", -1), Leg("acc_nobody_gets", 1)]
    with app.state.db.session() as session:
        with pytest.raises(IntegrityError):  # the postings' foreign keys refuse the accounts
            JournalsRepository(session).post(journal, legs, {})
        session.rollback()
        assert session.execute(select(func.count()).select_from(Journal)).scalar_one() == 0
    app.state.db.dispose()
