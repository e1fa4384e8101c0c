"""The gateway's own store works the same on SQLite and PostgreSQL: the chain verifies, the
state is rebuilt after a restart, and tampering is named."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from services.common.clock import frozen_clock
from services.common.db import database_url as resolve_url
from tests.gateway.conftest import LI_WEI, REGULATOR, WALLET_KEY, ZHANG_MIN, build_gateway


def _transfer(client: TestClient, amount: str) -> httpx.Response:
    return client.post("/payments/transfers", headers={"X-API-Key": WALLET_KEY}, json={
        "from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": {"amount": amount, "currency": "CNY"}})


def test_chain_restart_and_tamper_on_each_database(tmp_path: Path, payments_app, database_url: str | None) -> None:  # type: ignore[no-untyped-def]
    transports = {"payments": httpx.ASGITransport(app=payments_app)}
    settings = {"database_url": database_url} if database_url else {}
    with TestClient(build_gateway(tmp_path, frozen_clock(), transports, **settings)) as client:
        assert _transfer(client, "10.00").status_code == 201
        assert _transfer(client, "10.00").status_code == 201
    # A restart rebuilds today's volume from the log: the limit still counts the first 20.00.
    with TestClient(build_gateway(tmp_path, frozen_clock(), transports, **settings)) as client:
        assert client.post("/sandbox/participants/ptp_00000000000000000000000001/suspend",
                           json={"reason": "x"}, headers=REGULATOR).status_code == 200
        activity = client.get("/sandbox/participants/ptp_00000000000000000000000001/activity",
                              headers=REGULATOR).json()
        assert activity["volume"]["amount"] == "20.00"
        assert client.app.state.gateway.usage["ptp_00000000000000000000000001"].day_volume == 2000
        assert client.get("/sandbox/audit/verify", headers=REGULATOR).json()["ok"] is True
        engine = create_engine(resolve_url(database_url, tmp_path, "gateway"))
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET status = 500 WHERE idx = 1"))
        engine.dispose()
        result = client.get("/sandbox/audit/verify", headers=REGULATOR).json()
        assert result["first_broken"]["index"] == 1


def test_a_log_from_before_the_counts_column_is_upgraded_and_still_verifies(  # type: ignore[no-untyped-def]
        tmp_path: Path, payments_app, database_url: str | None) -> None:
    transports = {"payments": httpx.ASGITransport(app=payments_app)}
    settings = {"database_url": database_url} if database_url else {}
    with TestClient(build_gateway(tmp_path, frozen_clock(), transports, **settings)) as client:
        # An entry of the first log format: a request that sets none of the later fields.
        assert client.get(f"/payments/accounts/{LI_WEI}", headers={"X-API-Key": WALLET_KEY}).status_code == 200
    engine = create_engine(resolve_url(database_url, tmp_path, "gateway"))
    with engine.begin() as conn:  # the tables as the first log format made them
        conn.execute(text("DROP INDEX ix_audit_log_intent_idx"))
        for column in ("counts", "phase", "intent_idx", "idempotency_key", "fingerprint", "deadline_ms", "via"):
            conn.execute(text(f"ALTER TABLE audit_log DROP COLUMN {column}"))
        conn.execute(text("ALTER TABLE participants DROP COLUMN kind"))
    engine.dispose()
    with TestClient(build_gateway(tmp_path, frozen_clock(), transports, **settings)) as client:
        retry = client.post("/payments/transfers", headers={"X-API-Key": WALLET_KEY, "Idempotency-Key": "u"},
                            json={"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN,
                                  "amount": {"amount": "5.00", "currency": "CNY"}})
        assert retry.status_code == 201
        assert client.app.state.gateway.usage["ptp_00000000000000000000000001"].day_volume == 500
        participants = client.get("/sandbox/participants", params={"limit": 100}, headers=REGULATOR).json()["data"]
        assert {p["id"]: p["kind"] for p in participants}["ptp_00000000000000000000000011"] == "service"
        assert client.get("/sandbox/audit/verify", headers=REGULATOR).json() | {"head_hash": None} == {
            "ok": True, "size": 3, "head_hash": None, "first_broken": None}
