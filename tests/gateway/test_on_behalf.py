"""A sandbox service acting for a participant: the gateway counts, limits and screens the hop as
the participant's, names both in the log, and trusts the header from service keys only."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.demo import ADVISOR_SERVICE, DEMO_ROBO, WALLET_CO
from tests.gateway.conftest import LI_WEI, REGULATOR, WALLET_KEY, ZHANG_MIN, Sandbox

ADVISOR_KEY = "sbx_svc_advisor_key"
FOR_ROBO = {"X-Sandbox-On-Behalf-Of": DEMO_ROBO}


def _activity(sandbox: Sandbox, pid: str) -> dict[str, Any]:
    return sandbox.client.get(f"/sandbox/participants/{pid}/activity", headers=REGULATOR).json()


def test_a_service_hop_counts_against_the_participant_it_acts_for(sandbox: Sandbox) -> None:
    response = sandbox.transfer(ADVISOR_KEY, "1200.00", **FOR_ROBO)
    assert response.status_code == 201, response.text
    [entry] = sandbox.entries(via=ADVISOR_SERVICE)
    assert (entry["participant_id"], entry["via"], entry["counts_toward"]) == (DEMO_ROBO, ADVISOR_SERVICE,
                                                                              ["limits", "history"])
    assert _activity(sandbox, DEMO_ROBO)["volume"]["amount"] == "1200.00"
    assert _activity(sandbox, ADVISOR_SERVICE)["volume"]["amount"] == "0.00"


def test_the_participant_s_single_transaction_limit_applies_through_a_service(sandbox: Sandbox) -> None:
    """Demo Robo may move 50,000.00 at once; the advisor's own key may move far more."""
    refused = sandbox.transfer(ADVISOR_KEY, "60000.00", **FOR_ROBO)
    assert refused.status_code == 403
    assert (refused.json()["limit"], refused.json()["participant_id"]) == ("max_single_transaction", DEMO_ROBO)
    assert sandbox.transfer(ADVISOR_KEY, "60000.00").status_code == 201  # for itself: its own limits


def test_the_participant_s_daily_volume_applies_across_hops(sandbox: Sandbox) -> None:
    for _ in range(10):
        assert sandbox.transfer(ADVISOR_KEY, "49000.00", **FOR_ROBO).status_code == 201
    over = sandbox.transfer(ADVISOR_KEY, "20000.00", **FOR_ROBO)
    assert over.status_code == 403 and over.json()["limit"] == "daily_volume"


def test_a_participant_cannot_claim_to_act_for_another(sandbox: Sandbox) -> None:
    response = sandbox.transfer(WALLET_KEY, "10.00", source=LI_WEI, target=ZHANG_MIN,
                                **{"X-Sandbox-On-Behalf-Of": DEMO_ROBO})
    assert response.status_code == 403
    assert response.json()["type"].endswith(":on-behalf-not-allowed")
    assert sandbox.balance(LI_WEI) == "5000.00"
    [entry] = sandbox.entries(participant_id=WALLET_CO)
    assert (entry["status"], entry["limit"]) == (403, "on_behalf")


def test_an_unknown_or_suspended_originator_is_refused(sandbox: Sandbox) -> None:
    unknown = sandbox.transfer(ADVISOR_KEY, "10.00", **{"X-Sandbox-On-Behalf-Of": "ptp_nobody"})
    assert unknown.status_code == 403 and unknown.json()["type"].endswith(":unknown-originator")
    suspended = sandbox.client.post(f"/sandbox/participants/{DEMO_ROBO}/suspend", headers=REGULATOR,
                                    json={"reason": "exit review"})
    assert suspended.status_code == 200, suspended.text
    refused = sandbox.transfer(ADVISOR_KEY, "10.00", **FOR_ROBO)
    assert refused.status_code == 403 and refused.json()["type"].endswith(":participant-suspended")


def test_the_service_is_told_whom_it_acts_for(sandbox: Sandbox) -> None:
    """Payments sees the service's key and the originator: a debit then needs the originator's
    mandate from the account's owner (Demo Wallet Co's customer Li Wei, mandate 1 to Demo Robo)."""
    without = sandbox.transfer(ADVISOR_KEY, "100.00", source=LI_WEI, **FOR_ROBO)
    assert without.status_code == 404  # not the service's account, and no mandate named
    body = {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "mandate_id": "mdt_00000000000000000000000001",
            "amount": {"amount": "100.00", "currency": "CNY"}}
    mandated = sandbox.client.post("/payments/transfers", json=body, headers={"X-API-Key": ADVISOR_KEY, **FOR_ROBO})
    assert mandated.status_code == 201, mandated.text
    assert mandated.json()["mandate_id"] == "mdt_00000000000000000000000001"
    assert sandbox.balance(LI_WEI) == "4900.00"


@pytest.mark.parametrize("service_key", ["sbx_svc_advisor_key", "sbx_svc_openbanking_key", "sbx_svc_credit_key"])
def test_no_service_key_debits_a_wallet_it_does_not_hold(sandbox: Sandbox, service_key: str) -> None:
    """The audit's case: the keys `make run` used to print debited any wallet directly."""
    for on_behalf in ({}, FOR_ROBO):
        response = sandbox.transfer(service_key, "1195.00", source=ZHANG_MIN, target=LI_WEI, **on_behalf)
        assert response.status_code == 404, response.text
    assert sandbox.balance(ZHANG_MIN) == "1200.00"
