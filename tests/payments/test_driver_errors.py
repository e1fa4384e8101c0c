"""The hot path runs prebuilt statements on the driver's cursor; a driver error still surfaces
as SQLAlchemy's own exception type, as for any statement run through SQLAlchemy."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from services.payments.main import PaymentsSettings, create_app
from services.payments.repository import _INSERT_POSTINGS


def test_a_constraint_violation_on_the_fast_path_is_an_integrity_error(database_url, tmp_path) -> None:
    app = create_app(PaymentsSettings(data_dir=tmp_path, database_url=database_url, seed_demo_data=False))
    with app.state.db.session() as session:
        row = {"journal_id": "no_such_journal", "account_id": "no_such_account", "amount_minor": 1,
               "balance_after_minor": 1, "currency": "CNY", "created_at": None}
        with pytest.raises(IntegrityError):  # foreign keys (and NOT NULL) refuse the row
            _INSERT_POSTINGS.executemany(session, [row])
        session.rollback()
