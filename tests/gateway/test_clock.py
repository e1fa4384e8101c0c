"""Time is the regulator's: moving the gateway's clock (which decides testing windows, daily
limits and screening windows) needs the regulator's key and is logged, and participants cannot
move a service's clock through the gateway either."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.clock import frozen_clock
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.gateway.conftest import LENDER, REGULATOR, WALLET_KEY, WANG_FANG, ZHANG_MIN, Sandbox

DAY_AND_AN_HOUR = {"seconds": 25 * 3600}
WALLET = "ptp_00000000000000000000000001"
CREDIT_KEY = "sbx_svc_credit_key"  # the credit service: it holds the lender's float


@pytest.fixture
def payments_app(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Payments on a clock that stands still, so only a move can change what it reads."""
    return create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"), clock=frozen_clock())


def _gateway_time(sandbox: Sandbox) -> str:
    response = sandbox.client.get("/_sandbox/clock", headers=REGULATOR)
    assert response.status_code == 200, response.text
    return response.json()["now"]


def test_moving_the_gateways_clock_needs_the_regulators_key(sandbox: Sandbox) -> None:
    before = _gateway_time(sandbox)
    anonymous = sandbox.client.post("/_sandbox/clock/advance", json=DAY_AND_AN_HOUR)
    participant = sandbox.client.post("/_sandbox/clock/advance", json=DAY_AND_AN_HOUR,
                                      headers={"X-API-Key": WALLET_KEY})
    assert anonymous.status_code == 401
    assert anonymous.json()["type"].endswith("missing-api-key")
    assert participant.status_code == 403
    assert participant.json()["type"].endswith("regulator-only")
    assert _gateway_time(sandbox) == before
    # Each refused attempt is on the record, with who tried.
    attempts = sandbox.entries(limit=100)
    assert [(e["participant_id"], e["status"], e["limit"]) for e in attempts] == [
        (None, 401, "sandbox_controls"), (WALLET, 403, "sandbox_controls")]


def test_reading_the_gateways_clock_needs_the_regulators_key(sandbox: Sandbox) -> None:
    assert sandbox.client.get("/_sandbox/clock").status_code == 401
    assert sandbox.client.get("/_sandbox/clock", headers={"X-API-Key": WALLET_KEY}).status_code == 403


def test_the_regulator_moves_the_clock_and_the_move_is_logged(sandbox: Sandbox) -> None:
    moved = sandbox.client.post("/_sandbox/clock/advance", json=DAY_AND_AN_HOUR, headers=REGULATOR)
    assert moved.status_code == 200
    assert moved.json()["now"] == "2026-01-06T10:00:00Z"
    assert _gateway_time(sandbox) == "2026-01-06T10:00:00Z"
    [entry] = sandbox.entries(participant_id="regulator")
    assert (entry["path"], entry["status"]) == ("/_sandbox/clock/advance", 200)
    assert entry["operation"] == "advance_clock +90000 s to 2026-01-06T10:00:00.000000Z"
    assert sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()["ok"] is True


def test_a_participant_cannot_skip_a_day_between_structured_transfers(sandbox: Sandbox) -> None:
    """The audit's scenario: three ~9,500 CNY transfers with 25 hours 'passing' between them."""
    outcomes = []
    for amount in ("9500.00", "9400.00", "9600.00"):
        outcomes.append(sandbox.transfer(CREDIT_KEY, amount, source=LENDER, target=ZHANG_MIN))
        tried = sandbox.client.post("/_sandbox/clock/advance", json=DAY_AND_AN_HOUR,
                                    headers={"X-API-Key": CREDIT_KEY})
        assert tried.status_code == 403
    assert [r.status_code for r in outcomes] == [201, 201, 201]
    assert outcomes[2].headers["x-sandbox-decision"].startswith("review; score=12; rules=structuring")


def test_participants_cannot_reach_a_services_clock_through_the_gateway(sandbox: Sandbox) -> None:
    service_time = sandbox.payments.get("/_sandbox/clock").json()["now"]
    assert service_time == "2026-01-05T09:00:00Z"
    for method, path in (("POST", "/payments/_sandbox/clock/advance"), ("GET", "/payments/_sandbox/clock")):
        response = sandbox.client.request(method, path, json=DAY_AND_AN_HOUR if method == "POST" else None,
                                          headers={"X-API-Key": WALLET_KEY})
        assert response.status_code == 403, path
        problem = response.json()
        assert problem["type"].endswith("sandbox-controls-regulator-only")
        assert problem["limit"] == "sandbox_controls"
        assert "clock" in problem["detail"] and "regulator" in problem["detail"]
    assert sandbox.payments.get("/_sandbox/clock").json()["now"] == service_time
    refused = sandbox.entries(participant_id=WALLET)
    assert [(e["status"], e["limit"]) for e in refused] == [(403, "sandbox_controls")] * 2


def test_the_regulator_may_move_a_services_clock_through_the_gateway(sandbox: Sandbox) -> None:
    response = sandbox.client.post("/payments/_sandbox/clock/advance", json={"seconds": 60}, headers=REGULATOR)
    assert response.status_code == 200, response.text
    assert response.json()["now"] == "2026-01-05T09:01:00Z"
    assert sandbox.payments.get("/_sandbox/clock").json()["now"] == "2026-01-05T09:01:00Z"
    [entry] = sandbox.entries(participant_id="regulator")
    assert (entry["path"], entry["status"]) == ("/payments/_sandbox/clock/advance", 200)


def test_the_regulator_key_still_cannot_call_a_services_business_routes(sandbox: Sandbox) -> None:
    response = sandbox.client.get(f"/payments/accounts/{WANG_FANG}", headers=REGULATOR)
    assert response.status_code == 403
    assert response.json()["type"].endswith("regulator-key-not-a-participant")
