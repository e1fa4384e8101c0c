"""A retry with an Idempotency-Key moves no money, so it counts once: not against the daily
volume again, not in the screening history again (no structuring with itself), no new alert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from services.common.clock import frozen_clock
from tests.gateway.conftest import LENDER, LI_WEI, REGULATOR, WALLET_KEY, ZHANG_MIN, Sandbox, build_gateway

WALLET = "ptp_00000000000000000000000001"
# The credit service holds the lender's float, enough for just-below-threshold amounts.
CREDIT_KEY = "sbx_svc_credit_key"
CREDIT = "ptp_00000000000000000000000011"


def _activity(client: TestClient, pid: str = CREDIT) -> dict[str, Any]:
    return client.get(f"/sandbox/participants/{pid}/activity", headers=REGULATOR).json()


def test_retrying_one_transfer_three_times_counts_it_once(sandbox: Sandbox) -> None:
    """The audit's case: one 9,500 transfer retried with the same key gave `review` and 28,500."""
    responses = [sandbox.transfer(CREDIT_KEY, "9500.00", source=LENDER, target=ZHANG_MIN,
                                  **{"Idempotency-Key": "retry-me"}) for _ in range(3)]
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert [r.headers.get("idempotent-replayed") for r in responses] == [None, "true", "true"]
    assert all(r.headers["x-sandbox-decision"].startswith("approve; score=0") for r in responses)
    assert sandbox.client.get("/sandbox/alerts", headers=REGULATOR).json()["data"] == []
    activity = _activity(sandbox.client)
    assert activity["volume"] == {"amount": "9500.00", "currency": "CNY"}
    assert activity["decisions"] == {"approve": 3, "review": 0, "block": 0}
    entries = sandbox.entries(participant_id=CREDIT)
    assert [e["counts_toward"] for e in entries] == [["limits", "history"], [], []]


def test_a_retry_is_answered_even_at_the_daily_limit(sandbox: Sandbox) -> None:
    pid, key = sandbox.admit(limits={"daily_volume": "100.00"})
    source = sandbox.funded_account(key, "500.00")
    first = sandbox.transfer(key, "80.00", source=source, **{"Idempotency-Key": "k"})
    retry = sandbox.transfer(key, "80.00", source=source, **{"Idempotency-Key": "k"})
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json()["id"] == first.json()["id"]
    # A new transfer is still limited by the one that moved.
    over = sandbox.transfer(key, "80.00", source=source, **{"Idempotency-Key": "other"})
    assert over.status_code == 403 and over.json()["limit"] == "daily_volume"
    assert _activity(sandbox.client, pid)["volume"]["amount"] == "80.00"


def test_three_different_transfers_still_make_a_structuring_pattern(sandbox: Sandbox) -> None:
    outcomes = [sandbox.transfer(CREDIT_KEY, amount, source=LENDER, **{"Idempotency-Key": f"k-{amount}"})
                for amount in ("9500.00", "9400.00", "9600.00")]
    assert outcomes[2].headers["x-sandbox-decision"].startswith("review; score=12; rules=structuring")


def test_a_retry_of_a_reviewed_transfer_opens_no_second_alert(sandbox: Sandbox) -> None:
    for amount in ("9500.00", "9400.00"):
        sandbox.transfer(CREDIT_KEY, amount, source=LENDER)
    flagged = [sandbox.transfer(CREDIT_KEY, "9600.00", source=LENDER, **{"Idempotency-Key": "third"})
               for _ in range(2)]
    assert [r.headers["x-sandbox-decision"].split(";")[0] for r in flagged] == ["review", "review"]
    alerts = sandbox.client.get("/sandbox/alerts", headers=REGULATOR).json()["data"]
    assert len(alerts) == 1
    assert [e["alert_id"] for e in sandbox.entries(decision="review")] == [alerts[0]["id"]] * 2


def test_the_same_key_with_another_body_is_not_a_retry(sandbox: Sandbox) -> None:
    sandbox.transfer(WALLET_KEY, "10.00", source=LI_WEI, **{"Idempotency-Key": "reused"})
    conflict = sandbox.transfer(WALLET_KEY, "20.00", source=LI_WEI, **{"Idempotency-Key": "reused"})
    assert conflict.status_code == 409
    assert _activity(sandbox.client, WALLET)["volume"]["amount"] == "10.00"


def test_a_retry_after_a_gateway_restart_counts_once(tmp_path: Path, payments_app) -> None:  # type: ignore[no-untyped-def]
    transports = {"payments": httpx.ASGITransport(app=payments_app)}
    body = {"from_account_id": LENDER, "to_account_id": ZHANG_MIN, "amount": {"amount": "9500.00", "currency": "CNY"}}
    headers = {"X-API-Key": CREDIT_KEY, "Idempotency-Key": "across-restart"}
    with TestClient(build_gateway(tmp_path, frozen_clock(), transports)) as client:
        assert client.post("/payments/transfers", json=body, headers=headers).status_code == 201
    # The new gateway has forgotten the key; payments has not, and says so.
    with TestClient(build_gateway(tmp_path, frozen_clock(), transports)) as client:
        for _ in range(2):
            retry = client.post("/payments/transfers", json=body, headers=headers)
            assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
        assert _activity(client)["volume"]["amount"] == "9500.00"
        assert client.app.state.gateway.usage[CREDIT].day_volume == 950000
    with TestClient(build_gateway(tmp_path, frozen_clock(), transports)) as client:  # and once more
        assert client.app.state.gateway.usage[CREDIT].day_volume == 950000


class TimesOutAfterFirstTransfer(httpx.AsyncBaseTransport):
    """Payments applies the first transfer, but its answer never arrives (a read timeout)."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.timed_out = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/transfers" and not self.timed_out:
            self.timed_out = True
            raise httpx.ReadTimeout("injected", request=request)
        return response


def test_a_retry_after_a_timeout_counts_the_transfer_that_did_move(tmp_path: Path, payments_app) -> None:  # type: ignore[no-untyped-def]
    transports = {"payments": TimesOutAfterFirstTransfer(payments_app)}
    body = {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": {"amount": "50.00", "currency": "CNY"}}
    headers = {"X-API-Key": WALLET_KEY, "Idempotency-Key": "slow"}
    with TestClient(build_gateway(tmp_path, frozen_clock(), transports)) as client:
        timed_out = client.post("/payments/transfers", json=body, headers=headers)
        assert timed_out.status_code == 504
        assert _activity(client, WALLET)["volume"]["amount"] == "0.00"  # unknown outcome: nothing held
        retry = client.post("/payments/transfers", json=body, headers=headers)
        assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
        assert _activity(client, WALLET)["volume"]["amount"] == "50.00"  # it did move: counted once
        again = client.post("/payments/transfers", json=body, headers=headers)
        assert again.headers["idempotent-replayed"] == "true"
        assert _activity(client, WALLET)["volume"]["amount"] == "50.00"
