"""Each service's own `POST /_sandbox/reset` (services/common/reset.py): rows gone, caches
forgotten, clock back, the demo data seeded again; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from services.advisor.main import AdvisorSettings
from services.advisor.main import create_app as create_advisor
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments

LI_WEI = "acc_00000000000000000000000001"
ZHANG_MIN = "acc_00000000000000000000000002"


def _transfer(client: TestClient, amount: str, key: str, source: str = LI_WEI) -> dict:
    response = client.post("/transfers", headers={"Idempotency-Key": key}, json={
        "from_account_id": source, "to_account_id": ZHANG_MIN, "amount": {"amount": amount, "currency": "CNY"}})
    assert response.status_code == 201, response.text
    return response.json()


def test_payments_reset_restores_the_seeded_ledger(tmp_path: Path, database_url: str | None) -> None:
    app = create_payments(PaymentsSettings(data_dir=tmp_path, database_url=database_url))
    with TestClient(app) as client:
        seeded = client.get("/invariants").json()
        first = _transfer(client, "700.00", "lesson-1")
        opened = client.post("/accounts", json={"kind": "personal", "owner_name": "Learner", "currency": "CNY"})
        _transfer(client, "50.00", "lesson-2")
        client.post("/_sandbox/clock/advance", json={"seconds": 7 * 86400})

        response = client.post("/_sandbox/reset")
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["service"] == "payments"
        assert report["deleted"]["idempotency_keys"] == 2 and report["seeded"]["mandates"] == 2
        clock = datetime.fromisoformat(report["clock"].replace("Z", "+00:00"))
        assert abs(clock - datetime.now(UTC)) < timedelta(minutes=5)  # real time again

        invariants = client.get("/invariants").json()
        assert invariants["ok"] and invariants["journals"] == seeded["journals"]
        assert client.get(f"/accounts/{LI_WEI}").json()["balance"]["amount"] == "5000.00"
        assert client.get(f"/accounts/{opened.json()['id']}").status_code == 404
        # The key is forgotten with its journal: the same key now moves money afresh, once.
        again = _transfer(client, "700.00", "lesson-1")
        assert again["id"] != first["id"]
        assert client.get(f"/accounts/{LI_WEI}").json()["balance"]["amount"] == "4300.00"
        # A movement naming an account that went with the reset is refused, not a 500.
        gone = client.post("/transfers", json={"from_account_id": opened.json()["id"], "to_account_id": ZHANG_MIN,
                                               "amount": {"amount": "1.00", "currency": "CNY"}})
        assert gone.status_code == 404, gone.text


def test_advisor_reset_puts_the_market_back_on_day_zero(tmp_path: Path) -> None:
    app = create_advisor(AdvisorSettings(data_dir=tmp_path))
    with TestClient(app) as client:
        day0 = client.get("/market").json()
        moved = client.post("/_sandbox/market/advance", json={"days": 45, "shocks": [
            {"asset_class": "us_equity", "pct": -30}]})
        assert moved.json()["day"] == 45

        report = client.post("/_sandbox/reset").json()
        assert report["deleted"] == {"market_shocks": 1} and report["clock"].startswith("2026-01-05T09:00:00")
        market = client.get("/market").json()
        assert (market["day"], market["shocks"], market["funds"]) == (0, [], day0["funds"])


def test_a_service_can_refuse_resets(tmp_path: Path) -> None:
    app = create_payments(PaymentsSettings(data_dir=tmp_path, allow_reset=False))
    with TestClient(app) as client:
        refused = client.post("/_sandbox/reset")
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith(":reset-disabled")
