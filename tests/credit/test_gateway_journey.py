"""End to end through the real gateway: the lender's key calls credit, credit's own key pays out."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import select

from sandbox.gateway.main import GatewaySettings
from sandbox.gateway.main import create_app as create_gateway_app
from services.common.demo import DEMO_PARTICIPANTS
from services.credit.models import Events
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.credit.conftest import (
    CHEN_WALLET,
    LENDER_FLOAT,
    amount,
    application,
    credit_app,
)
from tests.support.servers import balance, prefix_router, serve


def test_chen_gets_the_loan_through_the_gateway(tmp_path: Path) -> None:
    to_gateway = httpx.Client()  # credit's calls go through the gateway, whose port we learn below
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    with serve(payments) as payments_url, serve(credit_app(tmp_path, to_gateway)) as credit_url:
        gateway = create_gateway_app(GatewaySettings(
            data_dir=tmp_path / "gateway", upstream_payments=payments_url, upstream_credit=credit_url))
        with serve(gateway) as gateway_url, httpx.Client(
            base_url=f"{gateway_url}/credit", headers={"X-API-Key": "sbx_demo_lender_key"}
        ) as lender, serve(prefix_router({"/payments": payments})) as ledger:
            to_gateway.base_url = httpx.URL(gateway_url)
            decided = lender.post("/applications", json=application())
            assert decided.status_code == 201, decided.text
            loan = lender.post(f"/loans/{decided.json()['loan_id']}/disbursement")
            assert loan.status_code == 200, loan.text
            assert loan.json()["status"] == "disbursed"
            assert balance(ledger, LENDER_FLOAT) == "9980000.00"
            # The principal less whatever fee payments charged on the transfer into Chen's account.
            fee = amount(loan.json()["disbursement"]["fee_charged_by_payments"])
            assert Decimal(balance(ledger, CHEN_WALLET)) == Decimal("800.00") + Decimal("20000.00") - fee
            assert lender.get("/scorecard").status_code == 200
            assert httpx.get(f"{credit_url}/applications").json()["data"][0]["id"] == decided.json()["id"]


def test_an_instalment_is_collected_through_the_gateway_under_the_mandate_for_the_lender(tmp_path: Path) -> None:
    """Chen's wallet is Demo Wallet Co's: the collection is the lender's debit under the mandate
    Demo Wallet Co gave it, sent by credit through the gateway; the events name the lender."""
    lender_id = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == "sbx_demo_lender_key")
    to_gateway = httpx.Client()
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    credit = credit_app(tmp_path, to_gateway, due_work_interval_seconds=0)
    with serve(payments) as payments_url, serve(credit) as credit_url:
        gateway = create_gateway_app(GatewaySettings(
            data_dir=tmp_path / "gateway", upstream_payments=payments_url, upstream_credit=credit_url))
        with serve(gateway) as gateway_url, httpx.Client(
            base_url=f"{gateway_url}/credit", headers={"X-API-Key": "sbx_demo_lender_key"}
        ) as lender, serve(prefix_router({"/payments": payments})) as ledger:
            to_gateway.base_url = httpx.URL(gateway_url)
            loan_id = lender.post("/applications", json=application(
                repayment_mandate_id="mdt_00000000000000000000000002")).json()["loan_id"]
            lender.post(f"/loans/{loan_id}/disbursement").raise_for_status()
            before = Decimal(balance(ledger, CHEN_WALLET))
            moved = httpx.post(f"{credit_url}/_sandbox/clock/advance", json={"seconds": 31 * 86_400}).json()
            assert moved["fired"] == {"instalments-due": 1, "instalments-collected": 1}
            loan = lender.get(f"/loans/{loan_id}").json()
            assert loan["schedule"][0]["status"] == "paid"
            assert Decimal(balance(ledger, CHEN_WALLET)) == before - Decimal("1732.38")
            # Read from the outbox itself: the gateway's relay may have taken (published) them already.
            recorded = credit.state.db.unit_of_work(lambda session: session.execute(
                select(Events.c.type, Events.c.participant_id).order_by(Events.c.seq)).all())
            assert [tuple(row) for row in recorded] == [
                ("credit.application.decided", lender_id), ("credit.loan.disbursed", lender_id),
                ("credit.instalment.due", lender_id), ("credit.instalment.paid", lender_id)]
