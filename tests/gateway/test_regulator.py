"""The regulator's API: participants, alerts and cases, the live log, exit reports."""

from __future__ import annotations

import csv
import io

from services.common.demo import CREDIT_SERVICE
from tests.gateway.conftest import REGULATOR, WALLET_KEY, ZHANG_MIN, Sandbox


def _flag_structuring(sandbox: Sandbox) -> str:
    source = sandbox.public_account("30000.00", "Structuring Customer")
    for amount in ("9500.00", "9400.00", "9600.00"):
        assert sandbox.transfer(WALLET_KEY, amount, source=source, target=ZHANG_MIN).status_code == 201
    return sandbox.client.get("/sandbox/alerts", headers=REGULATOR).json()["data"][0]["id"]


def test_demo_participants_are_seeded_with_hashed_keys(sandbox: Sandbox) -> None:
    page = sandbox.client.get("/sandbox/participants", params={"limit": 100}, headers=REGULATOR).json()
    wallet = next(p for p in page["data"] if p["name"] == "Demo Wallet Co")
    assert wallet["limits"]["max_single_transaction"] == {"amount": "20000.00", "currency": "CNY"}
    assert "api_key" not in wallet and wallet["key_hint"].startswith("sbx_demo")


def test_admission_shows_the_key_once(sandbox: Sandbox) -> None:
    pid, key = sandbox.admit(name="Acme Pay")
    shown = sandbox.client.get(f"/sandbox/participants/{pid}", headers=REGULATOR).json()
    assert key.startswith("sbx_") and "api_key" not in shown
    shared = sandbox.float_account
    assert sandbox.client.get(f"/payments/accounts/{shared}", headers={"X-API-Key": key}).status_code == 200


def test_alert_is_assigned_and_closed(sandbox: Sandbox) -> None:
    alert_id = _flag_structuring(sandbox)
    assigned = sandbox.client.post(f"/sandbox/alerts/{alert_id}/assign", json={"assignee": "officer 7"},
                                   headers=REGULATOR).json()
    assert (assigned["status"], assigned["assignee"]) == ("assigned", "officer 7")
    closed = sandbox.client.post(f"/sandbox/alerts/{alert_id}/close", headers=REGULATOR,
                                 json={"resolution": "reported", "note": "SAR filed"}).json()
    assert (closed["status"], closed["resolution"]) == ("closed", "reported")


def test_a_closed_alert_cannot_be_closed_again(sandbox: Sandbox) -> None:
    alert_id = _flag_structuring(sandbox)
    sandbox.client.post(f"/sandbox/alerts/{alert_id}/close", json={"resolution": "false_positive"}, headers=REGULATOR)
    again = sandbox.client.post(f"/sandbox/alerts/{alert_id}/close", json={"resolution": "suspicious"}, headers=REGULATOR)
    assert again.status_code == 409


def test_live_log_filters_by_decision_and_follows_with_after(sandbox: Sandbox) -> None:
    _flag_structuring(sandbox)
    reviewed = sandbox.entries(decision="review")
    assert [e["rules"] for e in reviewed] == [["structuring"]]
    page = sandbox.client.get("/sandbox/audit/entries", params={"limit": 1}, headers=REGULATOR).json()
    nxt = sandbox.client.get("/sandbox/audit/entries", params={"limit": 1, "after": page["next_after"]},
                             headers=REGULATOR).json()
    assert nxt["data"][0]["index"] == page["data"][0]["index"] + 1


def test_regulator_actions_are_in_the_log(sandbox: Sandbox) -> None:
    pid, _ = sandbox.admit()
    [entry] = sandbox.entries(participant_id="regulator")
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/sandbox/participants", 201)
    assert pid


def test_activity_counts_todays_traffic(sandbox: Sandbox) -> None:
    pid, key = sandbox.admit(limits={"max_single_transaction": "50.00"})
    sandbox.transfer(key, "10.00")
    sandbox.transfer(key, "60.00")
    activity = sandbox.client.get(f"/sandbox/participants/{pid}/activity", headers=REGULATOR).json()
    assert (activity["requests"], activity["succeeded"], activity["limit_breaches"]) == (2, 1, 1)
    assert activity["volume"] == {"amount": "10.00", "currency": "CNY"}
    assert activity["breaches_by_limit"] == {"max_single_transaction": 1}


def test_exit_report_as_json_and_csv(sandbox: Sandbox) -> None:
    _flag_structuring(sandbox)
    pid = "ptp_00000000000000000000000001"
    report = sandbox.client.get(f"/sandbox/participants/{pid}/exit-report", headers=REGULATOR).json()
    assert report["decisions"] == {"approve": 2, "review": 1, "block": 0}
    assert report["volume"] == {"amount": "28500.00", "currency": "CNY"}
    assert report["alerts"]["opened"] == 1 and report["customers"] == 1
    response = sandbox.client.get(f"/sandbox/participants/{pid}/exit-report.csv", headers=REGULATOR)
    assert response.headers["content-type"].startswith("text/csv")
    rows = dict(csv.reader(io.StringIO(response.text)))
    assert rows["decisions.review"] == "1" and rows["volume.amount"] == "28500.00"


def test_rule_set_in_force_is_published(sandbox: Sandbox) -> None:
    rules = sandbox.client.get("/sandbox/rules", headers=REGULATOR).json()
    assert "payments POST /transfers" in rules["screened_operations"]
    assert rules["version"].startswith("aml-")


def test_the_sandbox_s_own_services_cannot_be_suspended(sandbox: Sandbox) -> None:
    """Suspending the credit service would stop every lender's disbursals, not the one at fault."""
    refused = sandbox.client.post(f"/sandbox/participants/{CREDIT_SERVICE}/suspend", headers=REGULATOR,
                                  json={"reason": "a mistake"})
    assert refused.status_code == 409 and refused.json()["type"].endswith(":sandbox-service")
    participant = sandbox.client.get(f"/sandbox/participants/{CREDIT_SERVICE}", headers=REGULATOR).json()
    assert participant["status"] == "active"
