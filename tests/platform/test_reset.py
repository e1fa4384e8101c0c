"""The reset: a learner gets the seeded demo state back without deleting `.sandbox-data`.

Through the gateway (`POST /sandbox/reset`, regulator key) every service and the gateway go back
to the seeded state while the audit log keeps every entry and starts a new epoch; from the
command line (`fintech-sandbox reset`) with the sandbox running or stopped; and `run --fresh`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sandbox.gateway.main import GatewaySettings
from sandbox.gateway.main import create_app as create_gateway
from sandbox.topology import GATEWAY
from services.advisor.main import AdvisorSettings
from services.advisor.main import create_app as create_advisor
from services.common.demo import DEMO_PARTICIPANTS, DEMO_REGULATOR_KEY, WALLET_CO
from services.credit.main import CreditSettings
from services.credit.main import create_app as create_credit
from services.openbanking.main import OpenBankingSettings
from services.openbanking.main import create_app as create_openbanking
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments
from tests.support.ports import free_port_offset, port_in_use
from tests.support.stack import sandbox_for

ROOT = Path(__file__).resolve().parents[2]
REGULATOR = {"X-API-Key": DEMO_REGULATOR_KEY}
WALLET = {"X-API-Key": "sbx_demo_wallet_key"}
ROBO = {"X-API-Key": "sbx_demo_robo_key"}
LI_WEI = "acc_00000000000000000000000001"
ZHANG_MIN = "acc_00000000000000000000000002"
SEEDED_IDS = sorted(p.id for p in DEMO_PARTICIPANTS)
LIMITS = {"max_single_transaction": "1000.00", "daily_volume": "10000.00", "max_customers": 10,
          "rate_limit_per_minute": 600}
STEP_TIMEOUT_S = 120


@dataclass
class Stack:
    """The gateway in front of the four real services, in process, on one data folder."""

    client: TestClient
    data_dir: Path
    payments: TestClient  # payments on its own port: no participant, nothing screened

    def public_account(self, amount: str) -> str:
        """An account opened and topped up on payments' own port: every participant may debit it."""
        opened = self.payments.post("/accounts", json={"kind": "personal", "owner_name": "Shared Float",
                                                       "currency": "CNY"})
        assert opened.status_code == 201, opened.text
        topped = self.payments.post("/deposits", json={"account_id": opened.json()["id"],
                                                       "card_number": "4242424242424242",
                                                       "amount": {"amount": amount, "currency": "CNY"}})
        assert topped.status_code == 201, topped.text
        return opened.json()["id"]

    def transfer(self, headers: dict[str, str], amount: str, source: str = LI_WEI,
                 target: str = ZHANG_MIN) -> httpx.Response:
        return self.client.post("/payments/transfers", headers=headers, json={
            "from_account_id": source, "to_account_id": target, "amount": {"amount": amount, "currency": "CNY"}})

    def balance(self, account_id: str) -> str:
        response = self.client.get(f"/payments/accounts/{account_id}", headers=WALLET)
        assert response.status_code == 200, response.text
        return response.json()["balance"]["amount"]

    def admit(self) -> dict[str, Any]:
        response = self.client.post("/sandbox/participants", headers=REGULATOR, json={
            "name": "Learner's Firm", "services": ["payments"], "limits": LIMITS})
        assert response.status_code == 201, response.text
        return response.json()

    def reset(self, headers: dict[str, str] = REGULATOR) -> httpx.Response:
        return self.client.post("/sandbox/reset", headers=headers)

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, headers=REGULATOR, params=params)
        assert response.status_code == 200, response.text
        return response.json()


def _apps(data_dir: Path, database_urls: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    urls = database_urls or {}
    return {
        "payments": create_payments(PaymentsSettings(data_dir=data_dir, database_url=urls.get("payments"))),
        "credit": create_credit(CreditSettings(data_dir=data_dir, database_url=urls.get("credit"),
                                               **overrides.get("credit", {}))),
        "advisor": create_advisor(AdvisorSettings(data_dir=data_dir, database_url=urls.get("advisor"))),
        "openbanking": create_openbanking(OpenBankingSettings(data_dir=data_dir, database_url=urls.get("openbanking"))),
    }


def _stack(data_dir: Path, apps: dict[str, Any], gateway_url: str | None = None) -> Any:
    return create_gateway(GatewaySettings(data_dir=data_dir, database_url=gateway_url),
                          transports={name: httpx.ASGITransport(app=app) for name, app in apps.items()})


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    apps = _apps(tmp_path)
    with TestClient(_stack(tmp_path, apps)) as client:
        yield Stack(client, tmp_path, TestClient(apps["payments"]))


def _near_now(iso: str) -> bool:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return abs(moment - datetime.now(UTC)) < timedelta(minutes=5)


def _play(stack: Stack) -> dict[str, Any]:
    """A learner's session: money moved, an account opened, time and the market moved, a firm admitted."""
    assert stack.transfer(WALLET, "100.00").status_code == 201
    opened = stack.client.post("/payments/accounts", headers=WALLET,
                               json={"kind": "personal", "owner_name": "Learner Customer", "currency": "CNY"})
    assert opened.status_code == 201, opened.text
    assert stack.client.post("/_sandbox/clock/advance", headers=REGULATOR, json={"seconds": 3 * 86400}).status_code == 200
    assert stack.client.post("/payments/_sandbox/clock/advance", headers=REGULATOR,
                             json={"seconds": 3 * 86400}).status_code == 200
    market = stack.client.post("/advisor/_sandbox/market/advance", headers=REGULATOR,
                               json={"days": 30, "shocks": [{"asset_class": "us_equity", "pct": -20}]})
    assert market.status_code == 200 and market.json()["day"] == 30, market.text
    firm = stack.admit()
    own = stack.client.post("/payments/accounts", headers={"X-API-Key": firm["api_key"]},
                            json={"kind": "personal", "owner_name": "Firm Customer", "currency": "CNY"})
    assert own.status_code == 201, own.text
    assert stack.balance(LI_WEI) == "4900.00"
    return {"firm": firm, "account": opened.json()["id"]}


def test_a_reset_brings_back_the_seeded_demo_state(stack: Stack) -> None:
    played = _play(stack)
    entries_before = stack.get("/sandbox/audit/head")["size"]

    response = stack.reset()
    assert response.status_code == 200, response.text
    result = response.json()
    # Counts start again: the exit report sees the current epoch only (before Wallet Co calls again).
    report = stack.get(f"/sandbox/participants/{WALLET_CO}/exit-report")
    assert (report["requests"], report["screened"], report["volume"]["amount"]) == (0, 0, "0.00")

    # Money: the seeded balances, the learner's account gone, the ledger's invariants hold.
    assert (stack.balance(LI_WEI), stack.balance(ZHANG_MIN)) == ("5000.00", "1200.00")
    assert stack.client.get(f"/payments/accounts/{played['account']}", headers=WALLET).status_code == 404
    invariants = stack.client.get("/payments/invariants", headers=WALLET)
    assert invariants.status_code == 200 and invariants.json()["ok"], invariants.text
    # Time: every clock back; the advisor's market on its first day, the shock gone.
    assert _near_now(stack.get("/_sandbox/clock")["now"])
    market = stack.client.get("/advisor/market", headers=ROBO).json()
    assert (market["day"], market["shocks"]) == (0, [])
    by_service = {s["service"]: s for s in result["services"]}
    assert set(by_service) == {"payments", "credit", "advisor", "openbanking"}
    assert _near_now(by_service["payments"]["clock"])
    assert by_service["advisor"]["clock"].startswith("2026-01-05T09:00:00")  # its market epoch
    assert by_service["advisor"]["deleted"] == {"market_shocks": 1}
    assert by_service["payments"]["seeded"]["accounts"] > 0
    # Participants: the seeded set; the admitted firm's key no longer opens the door.
    listed = stack.get("/sandbox/participants", limit=100)["data"]
    assert sorted(p["id"] for p in listed) == SEEDED_IDS
    assert (result["participants"], result["participants_removed"]) == (len(SEEDED_IDS), 1)
    assert stack.transfer({"X-API-Key": played["firm"]["api_key"]}, "1.00").status_code == 401

    # The log: nothing erased, a `reset` entry opens epoch 1, and the whole chain verifies.
    verification = stack.get("/sandbox/audit/verify")
    assert verification["ok"] and verification["size"] > entries_before
    entry = stack.get(f"/sandbox/audit/entries/{result['audit_index']}")
    assert (entry["phase"], entry["epoch"], entry["participant_id"], entry["path"]) == (
        "reset", 1, "regulator", "/sandbox/reset")
    assert result["epoch"] == 1
    earlier = stack.get("/sandbox/audit/entries", participant_id=WALLET_CO, limit=100)["data"]
    assert any(e["path"] == "/payments/transfers" for e in earlier)  # the old epoch is still there
    # Today's activity counts from the reset on: one movement since, not the 100.00 before.
    assert stack.transfer(WALLET, "25.00").status_code == 201
    activity = stack.get(f"/sandbox/participants/{WALLET_CO}/activity")
    assert (activity["screened"], activity["volume"]["amount"]) == (1, "25.00")


def test_alerts_and_the_daily_volume_start_again_with_the_epoch(stack: Stack) -> None:
    """Wallet Co (daily volume 200,000.00) is flagged for structuring and spends its day; after
    the reset the alert is no longer counted or listed (it stays on record) and the day is fresh."""
    source = stack.public_account("250000.00")
    for amount in ("9500.00", "9400.00", "9600.00"):  # just under 10,000 three times: structuring
        assert stack.transfer(WALLET, amount, source=source).status_code == 201
    [alert] = stack.get("/sandbox/alerts", limit=100)["data"]  # large transfers may open more below
    spent = 28_500
    while spent + 19_000 <= 200_000:
        assert stack.transfer(WALLET, "19000.00", source=source).status_code == 201
        spent += 19_000
    over = stack.transfer(WALLET, "19000.00", source=source)
    assert over.status_code == 403 and over.json()["limit"] == "daily_volume", over.text
    assert stack.get(f"/sandbox/participants/{WALLET_CO}/exit-report")["alerts"]["opened"] >= 1

    assert stack.reset().status_code == 200
    assert stack.get("/sandbox/alerts", limit=100)["data"] == []
    assert stack.get(f"/sandbox/alerts/{alert['id']}")["id"] == alert["id"]  # on record, by id
    report = stack.get(f"/sandbox/participants/{WALLET_CO}/exit-report")
    assert (report["alerts"]["opened"], report["decisions"]["review"], report["volume"]["amount"]) == (0, 0, "0.00")
    fresh = stack.public_account("20000.00")
    assert stack.transfer(WALLET, "19000.00", source=fresh).status_code == 201  # a new day's volume


def test_a_participant_key_cannot_reset(stack: Stack) -> None:
    assert stack.transfer(WALLET, "100.00").status_code == 201
    refused = stack.reset(WALLET)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith(":regulator-only")
    assert stack.reset({}).status_code == 401
    # A service's own reset is a sandbox control: through the gateway, the regulator's only.
    direct = stack.client.post("/payments/_sandbox/reset", headers=WALLET)
    assert direct.status_code == 403 and direct.json()["type"].endswith(":sandbox-controls-regulator-only")
    assert stack.balance(LI_WEI) == "4900.00"


def test_the_epoch_survives_a_gateway_restart(tmp_path: Path) -> None:
    apps = _apps(tmp_path)
    with TestClient(_stack(tmp_path, apps)) as client:
        stack = Stack(client, tmp_path, TestClient(apps["payments"]))
        assert stack.transfer(WALLET, "300.00").status_code == 201
        assert stack.reset().status_code == 200
        assert stack.reset().json()["epoch"] == 2  # a second reset: the next epoch
    with TestClient(_stack(tmp_path, apps)) as client:
        stack = Stack(client, tmp_path, TestClient(apps["payments"]))
        assert stack.get(f"/sandbox/participants/{WALLET_CO}/exit-report")["requests"] == 0
        assert stack.reset().json()["epoch"] == 3
        assert stack.get("/sandbox/audit/verify")["ok"]


def test_a_service_that_cannot_reset_is_named_and_the_gateway_keeps_its_state(tmp_path: Path) -> None:
    apps = _apps(tmp_path, credit={"allow_reset": False})
    with TestClient(_stack(tmp_path, apps)) as client:
        stack = Stack(client, tmp_path, TestClient(apps["payments"]))
        firm = stack.admit()
        response = stack.reset()
        assert response.status_code == 502, response.text
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (problem["type"].split(":")[-1], problem["service"], problem["reset"]) == (
            "service-reset-failed", "credit", ["payments"])
        assert "credit" in problem["detail"]
        # The gateway's own state was not touched: the admitted firm is still there, no new epoch.
        assert stack.get(f"/sandbox/participants/{firm['id']}")["id"] == firm["id"]
        assert [e for e in stack.get("/sandbox/audit/entries", limit=100)["data"] if e["phase"] == "reset"] == []
        refused = [e for e in stack.get("/sandbox/audit/entries", limit=100)["data"] if e["path"] == "/sandbox/reset"]
        assert [e["status"] for e in refused] == [502]  # the attempt is on the record


def test_movements_under_way_are_waited_for_and_new_ones_refused(stack: Stack) -> None:
    """While a reset runs nothing is forwarded: a participant gets 503 `sandbox-resetting`."""
    gateway = stack.client.app.state.gateway  # type: ignore[attr-defined]
    gateway.resetting = True
    try:
        refused = stack.transfer(WALLET, "10.00")
    finally:
        gateway.resetting = False
    assert refused.status_code == 503 and refused.json()["type"].endswith(":sandbox-resetting")
    assert refused.headers["retry-after"] == "2"
    assert stack.balance(LI_WEI) == "5000.00"
    assert stack.transfer(WALLET, "10.00").status_code == 201


# -- the command line --------------------------------------------------------------------------

def _cli(*args: str, timeout: float = STEP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_offline_reset_deletes_the_services_databases_and_keeps_the_log(tmp_path: Path) -> None:
    apps = _apps(tmp_path)
    with TestClient(_stack(tmp_path, apps)) as client:
        stack = Stack(client, tmp_path, TestClient(apps["payments"]))
        assert stack.transfer(WALLET, "100.00").status_code == 201
        stack.admit()
        size = stack.get("/sandbox/audit/head")["size"]
    offset = free_port_offset()  # ports where nothing answers: the sandbox is "not running"
    result = _cli("reset", "--data-dir", str(tmp_path), "--port-offset", str(offset))
    assert result.returncode == 0, result.stderr
    assert "not running" in result.stdout
    assert "advisor, credit, openbanking, payments" in result.stdout
    assert "epoch 1" in result.stdout
    for name in ("payments", "credit", "advisor", "openbanking"):
        assert not (tmp_path / f"{name}.sqlite3").exists()
    assert (tmp_path / "gateway.sqlite3").exists()
    verified = _cli("verify-log", "--data-dir", str(tmp_path))
    assert verified.returncode == 0 and f"{size + 1} entries" in verified.stdout, verified.stdout

    # The next start seeds afresh; only the seeded participants are admitted.
    apps = _apps(tmp_path)
    with TestClient(_stack(tmp_path, apps)) as client:
        stack = Stack(client, tmp_path, TestClient(apps["payments"]))
        assert stack.get(f"/sandbox/participants/{WALLET_CO}/exit-report")["requests"] == 0
        assert stack.balance(LI_WEI) == "5000.00"
        assert sorted(p["id"] for p in stack.get("/sandbox/participants", limit=100)["data"]) == SEEDED_IDS


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The whole sandbox as `make run` starts it, on free ports: (port offset, data folder)."""
    for sandbox in sandbox_for(tmp_path, free_port_offset()):
        yield sandbox.offset, sandbox.workdir / ".sandbox-data"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher's clean-up relies on Linux")
def test_the_cli_resets_a_running_sandbox_and_a_second_one_is_told_to_move(running: tuple[int, Path]) -> None:
    offset, data_dir = running
    gateway = f"http://127.0.0.1:{GATEWAY.port + offset}"
    moved = httpx.post(f"{gateway}/payments/transfers", headers=WALLET, timeout=30, json={
        "from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": {"amount": "250.00", "currency": "CNY"}})
    assert moved.status_code == 201, moved.text

    result = _cli("reset", "--port-offset", str(offset), "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert f"Sandbox reset through {gateway}" in result.stdout and "epoch 1" in result.stdout
    for name in ("payments", "credit", "advisor", "openbanking", "gateway"):
        assert name in result.stdout
    balance = httpx.get(f"{gateway}/payments/accounts/{LI_WEI}", headers=WALLET, timeout=30).json()["balance"]
    assert balance == {"amount": "5000.00", "currency": "CNY"}
    assert (data_dir / "payments.sqlite3").exists()  # reset in place: nothing deleted
    assert _cli("verify-log", "--data-dir", str(data_dir)).returncode == 0

    # The same ports again: the launcher names the clash and the way out.
    clash = _cli("run", "--port-offset", str(offset), "--data-dir", str(data_dir / "second"), timeout=60)
    assert clash.returncode == 1
    assert f'make run ARGS="--port-offset {offset + 100}"' in clash.stderr
    assert str(GATEWAY.port + offset) in clash.stderr
    assert port_in_use(GATEWAY.port + offset)  # the first sandbox is untouched


def test_run_fresh_wipes_the_databases_before_starting(tmp_path: Path) -> None:
    apps = _apps(tmp_path)
    with TestClient(_stack(tmp_path, apps)) as client:
        Stack(client, tmp_path, TestClient(apps["payments"])).admit()
    offset = free_port_offset()
    result = _cli("run", "--fresh", "--exit-when-ready", "--port-offset", str(offset), "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "--fresh: deleted" in result.stdout
    apps = _apps(tmp_path)
    with TestClient(_stack(tmp_path, apps)) as client:
        stack = Stack(client, tmp_path, TestClient(apps["payments"]))
        assert sorted(p["id"] for p in stack.get("/sandbox/participants", limit=100)["data"]) == SEEDED_IDS
        assert stack.get("/sandbox/audit/head")["size"] == 0  # a new log


@pytest.mark.postgres
def test_a_reset_on_postgresql(tmp_path: Path) -> None:
    from tests.support.postgres import fresh_database

    with fresh_database() as payments_url, fresh_database() as gateway_url:
        apps = _apps(tmp_path, {"payments": payments_url})
        with TestClient(_stack(tmp_path, apps, gateway_url)) as client:
            stack = Stack(client, tmp_path, TestClient(apps["payments"]))
            assert stack.transfer(WALLET, "100.00").status_code == 201
            stack.admit()
            response = stack.reset()
            assert response.status_code == 200, response.text
            assert stack.balance(LI_WEI) == "5000.00"
            assert stack.client.get("/payments/invariants", headers=WALLET).json()["ok"]
            assert stack.get("/sandbox/audit/verify")["ok"]
            assert sorted(p["id"] for p in stack.get("/sandbox/participants", limit=100)["data"]) == SEEDED_IDS
        for app in apps.values():
            app.state.db.dispose()
