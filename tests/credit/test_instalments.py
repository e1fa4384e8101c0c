"""Instalments fall due by credit's clock and are collected from the borrower's wallet: paid
when it can pay, overdue (and tried again the next day) when it cannot, never collected twice."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.duework import run_due_work
from services.credit.instalments import claim_collection
from services.credit.models import Instalment
from tests.credit.conftest import (
    CHEN_WALLET,
    LENDER_FLOAT,
    ZHANG_MIN,
    application,
    credit_app,
)
from tests.support.servers import balance, payments_behind_gateway

DAY = 86_400
MONTH = 31 * DAY  # from 2026-01-05 past the first due date, 2026-02-05


@dataclass
class Lending:
    base: str  # payments, as the gateway routes it
    app: FastAPI
    credit: TestClient
    loan_id: str

    def advance(self, seconds: int) -> dict[str, int]:
        moved = self.credit.post("/_sandbox/clock/advance", json={"seconds": seconds})
        assert moved.status_code == 200, moved.text
        return moved.json()["fired"]

    def schedule(self) -> list[dict[str, Any]]:
        return self.credit.get(f"/loans/{self.loan_id}").json()["schedule"]

    def event_types(self) -> list[str]:
        return [e["type"] for e in self.credit.get("/_sandbox/events").json()["data"]
                if e["type"].startswith("credit.instalment.")]

    def move_out_of_chen(self, amount: str, to: str = ZHANG_MIN) -> None:
        httpx.post(f"{self.base}/payments/transfers", headers={"Idempotency-Key": f"drain-{to}-{amount}"}, json={
            "from_account_id": CHEN_WALLET, "to_account_id": to,
            "amount": {"amount": amount, "currency": "CNY"}}).raise_for_status()


@contextmanager
def disbursed_loan(tmp_path: Path, database_url: str | None = None) -> Iterator[Lending]:
    """Chen's 20,000.00 over 12 months, paid out on 2026-01-05 by credit's (frozen) clock. No
    background runner: each clock move's answer says everything that fired."""
    with payments_behind_gateway(tmp_path) as base:
        app = credit_app(tmp_path, httpx.Client(base_url=base), database_url, due_work_interval_seconds=0)
        with TestClient(app) as credit:
            loan_id = credit.post("/applications", json=application()).json()["loan_id"]
            credit.post(f"/loans/{loan_id}/disbursement").raise_for_status()
            yield Lending(base, app, credit, loan_id)


def test_an_instalment_is_scheduled_until_its_due_date(tmp_path: Path) -> None:
    with disbursed_loan(tmp_path) as lending:
        assert {i["status"] for i in lending.schedule()} == {"scheduled"}
        assert lending.advance(MONTH - DAY) == {}
        assert lending.schedule()[0]["status"] == "scheduled"
        assert balance(lending.base, CHEN_WALLET) == "20800.00"


def test_an_instalment_is_collected_from_the_wallet_once_its_date_passes(tmp_path: Path,
                                                                        database_url: str | None) -> None:
    with disbursed_loan(tmp_path, database_url) as lending:
        assert lending.advance(MONTH) == {"instalments-due": 1, "instalments-collected": 1}
        first, second = lending.schedule()[:2]
        assert (first["status"], first["paid"]["amount"], second["status"]) == ("paid", "1732.38", "scheduled")
        assert balance(lending.base, CHEN_WALLET) == "19067.62"  # 20,800.00 less 1,732.38
        loan = lending.credit.get(f"/loans/{lending.loan_id}").json()
        assert (loan["repaid"]["amount"], loan["outstanding"]["amount"]) == ("1732.38", "19056.16")
        journal = httpx.get(f"{lending.base}/payments/journals/{loan['repayments'][0]['journal_id']}").json()
        assert (journal["from_account_id"], journal["to_account_id"]) == (CHEN_WALLET, LENDER_FLOAT)
        assert lending.event_types() == ["credit.instalment.due", "credit.instalment.paid"]


def test_nothing_fires_twice_when_the_clock_moves_again(tmp_path: Path) -> None:
    with disbursed_loan(tmp_path) as lending:
        lending.advance(MONTH)
        assert lending.advance(DAY) == {}
        assert balance(lending.base, CHEN_WALLET) == "19067.62"
        assert lending.event_types() == ["credit.instalment.due", "credit.instalment.paid"]


def test_an_instalment_the_wallet_cannot_pay_goes_overdue_and_says_why(tmp_path: Path) -> None:
    with disbursed_loan(tmp_path) as lending:
        lending.move_out_of_chen("20000.00")  # 800.00 left, less than the 1,732.38 due
        assert lending.advance(MONTH) == {"instalments-due": 1, "instalments-overdue": 1}
        first = lending.schedule()[0]
        assert (first["status"], first["paid"]["amount"]) == ("overdue", "0.00")
        assert first["last_collection_error"]["type"].endswith("insufficient-funds")
        assert balance(lending.base, CHEN_WALLET) == "800.00"  # not debited in part
        assert lending.advance(3600) == {}  # the same day: not tried again
        assert lending.event_types() == ["credit.instalment.due", "credit.instalment.overdue"]


def test_an_overdue_instalment_is_collected_on_a_later_day_once_the_wallet_can_pay(tmp_path: Path) -> None:
    with disbursed_loan(tmp_path) as lending:
        lending.move_out_of_chen("20000.00")
        lending.advance(MONTH)
        assert lending.advance(DAY) == {}  # tried again the next day: still short
        httpx.post(f"{lending.base}/payments/transfers", headers={"Idempotency-Key": "top-up"}, json={
            "from_account_id": ZHANG_MIN, "to_account_id": CHEN_WALLET,
            "amount": {"amount": "1000.00", "currency": "CNY"}}).raise_for_status()
        assert lending.advance(DAY) == {"instalments-collected": 1}
        first = lending.schedule()[0]
        assert (first["status"], first["last_collection_error"]) == ("paid", None)
        # 800.00 + 994.00 (the top-up less payments' 0.6% merchant fee) - 1,732.38
        assert balance(lending.base, CHEN_WALLET) == "61.62"
        assert lending.event_types() == ["credit.instalment.due", "credit.instalment.overdue",
                                         "credit.instalment.paid"]


def test_two_runners_at_once_collect_an_instalment_once(tmp_path: Path) -> None:
    with disbursed_loan(tmp_path) as lending:
        clock = lending.app.state.clock
        now = clock.advance(timedelta(seconds=MONTH))
        works = lending.app.state.due_work
        fired: list[dict[str, int]] = []
        runners = [threading.Thread(target=lambda: fired.append(asyncio.run(run_due_work(works, now))))
                   for _ in range(2)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
        assert sum(f.get("instalments-collected", 0) for f in fired) == 1
        assert sum(f.get("instalments-due", 0) for f in fired) == 1
        assert balance(lending.base, CHEN_WALLET) == "19067.62"
        assert lending.event_types() == ["credit.instalment.due", "credit.instalment.paid"]


def test_a_collection_whose_runner_crashed_after_the_debit_is_not_debited_twice(tmp_path: Path) -> None:
    with disbursed_loan(tmp_path) as lending:
        db, clock = lending.app.state.db, lending.app.state.clock
        lending.advance(MONTH - DAY)
        now = clock.advance(timedelta(days=1))
        # A runner marked it due, wrote its intent and sent the debit, then died before the answer.
        due_work = lending.app.state.due_work
        asyncio.run(run_due_work(due_work[:1], now))
        instalment_id = db.unit_of_work(lambda s: s.query(Instalment).filter_by(number=1).one().id)
        collection = db.unit_of_work(lambda s: claim_collection(s, instalment_id, now))
        assert collection.key == f"{lending.loan_id}-instalment-1-attempt-0"
        httpx.post(f"{lending.base}/payments/transfers", headers={"Idempotency-Key": collection.key}, json={
            "from_account_id": CHEN_WALLET, "to_account_id": LENDER_FLOAT, "amount": collection.amount.model_dump(),
            "description": f"Loan {lending.loan_id} instalment 1"}).raise_for_status()
        assert lending.advance(30) == {}  # its claim still stands
        assert lending.advance(60) == {"instalments-collected": 1}  # taken over, with the same key
        assert balance(lending.base, CHEN_WALLET) == "19067.62"
        assert lending.schedule()[0]["status"] == "paid"
