"""The advisor's domain events (GET /_sandbox/events): a completed deposit, a rebalance and a
harvest, each with its change; a refusal, a dry run or a replay records none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.advisor.conftest import (
    advance,
    advisor_app,
    deposit,
    funded_account,
    open_account,
)
from tests.support.servers import payments_behind_gateway


def events(client: TestClient, type_: str | None = None) -> list[dict[str, Any]]:
    recorded = client.get("/_sandbox/events").json()["data"]
    return [e for e in recorded if type_ is None or e["type"] == type_]


def test_a_completed_deposit_is_an_event_with_the_deposit_as_the_api_shows_it(advisor: TestClient) -> None:
    account_id = open_account(advisor)
    made = deposit(advisor, account_id, "500.00", **{"Idempotency-Key": "once"}).json()
    deposit(advisor, account_id, "500.00", **{"Idempotency-Key": "once"})  # the replay records nothing
    recorded = events(advisor)
    assert [(e["type"], e["subject_id"]) for e in recorded] == [("advisor.deposit.completed", made["id"])]
    assert recorded[0]["data"] == advisor.get(f"/deposits/{made['id']}").json()
    assert recorded[0]["data"]["status"] == "completed" and recorded[0]["data"]["trades"]


def test_a_refused_deposit_records_no_event(advisor: TestClient) -> None:
    account_id = open_account(advisor)
    assert deposit(advisor, account_id, "50.00").status_code == 409  # below the first deposit's minimum
    assert deposit(advisor, account_id, "9000.00").status_code >= 400  # more than the wallet holds
    assert events(advisor) == []


def test_a_deposit_left_pending_by_an_outage_is_an_event_once_it_completes(tmp_path: Path) -> None:
    with payments_behind_gateway(tmp_path) as payments:
        app = advisor_app(tmp_path)  # its payments client points at a closed port
        with TestClient(app) as advisor:
            pending = deposit(advisor, open_account(advisor), "500.00").json()
            assert pending["status"] == "pending" and events(advisor) == []
            app.state.advisor.payments.http.base_url = payments  # payments is back
            advisor.post(f"/deposits/{pending['id']}/retry").raise_for_status()
            advisor.post(f"/deposits/{pending['id']}/retry").raise_for_status()  # already completed
            assert [e["subject_id"] for e in events(advisor, "advisor.deposit.completed")] == [pending["id"]]


def test_a_rebalance_is_an_event_and_a_dry_run_is_not(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 20, cn_equity=-30, dev_equity=-20)
    advisor.post(f"/accounts/{account_id}/rebalance", json={"dry_run": True}).raise_for_status()
    assert events(advisor, "advisor.account.rebalanced") == []
    done = advisor.post(f"/accounts/{account_id}/rebalance", json={}).json()
    rebalanced = events(advisor, "advisor.account.rebalanced")
    assert [(e["subject_id"], e["data"]) for e in rebalanced] == [(account_id, done)]


def test_a_harvest_is_an_event_with_the_losses_harvested(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 20, cn_equity=-30)
    advisor.post(f"/accounts/{account_id}/harvest", json={"dry_run": True}).raise_for_status()
    done = advisor.post(f"/accounts/{account_id}/harvest", json={}).json()
    harvested = events(advisor, "advisor.account.harvested")
    assert [(e["subject_id"], e["data"]) for e in harvested] == [(account_id, done)]
    assert done["lots"]
