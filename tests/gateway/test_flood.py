"""The door stays open for everyone: requests without a valid key are rate-limited per client
address and a flood leaves a bounded number of entries in the hash chain; a body nested too
deep is refused before screening, and logged."""

from __future__ import annotations

import time

from tests.gateway.conftest import LI_WEI, REGULATOR, WALLET_KEY, ZHANG_MIN, Sandbox


def test_a_flood_without_keys_is_limited_and_summarised_not_logged_per_request(sandbox: Sandbox, monkeypatch) -> None:
    # The flood arrives in one instant on the door's clock: on a loaded machine 400 requests take
    # seconds, and the budget's refill (one every 2 s) would let a 401 through among the 429s.
    door = sandbox.client.app.state.gateway.door
    take, instant = door.take, time.time()
    monkeypatch.setattr(door, "take", lambda address, _now: take(address, instant))
    statuses = [sandbox.client.get("/payments/accounts", headers={"X-API-Key": f"sbx_guess_{i}"}).status_code
                for i in range(400)]
    assert statuses[:30] == [401] * 30  # the burst
    assert set(statuses[30:]) == {429}
    limited = sandbox.client.get("/payments/accounts")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    logged = sandbox.entries(with_intents=True)
    assert len(logged) == 5  # the first few refusals of the window, one by one
    # The window's summary is written when it closes (the reconciler's timer flushes it).
    gateway = sandbox.client.app.state.gateway
    [summary] = gateway.door.due_summaries(10**10)
    assert (summary.refused, summary.unlogged) == (401, 396)
    # A participant with a key is not affected by the flood from the same address.
    assert sandbox.transfer(WALLET_KEY, "1.00", source=LI_WEI, target=ZHANG_MIN).status_code == 201
    assert sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()["ok"] is True


def test_the_flood_summary_is_one_chained_entry(sandbox: Sandbox) -> None:
    for _ in range(50):
        sandbox.client.get("/payments/accounts")
    gateway = sandbox.client.app.state.gateway
    for summary in gateway.door.due_summaries(10**10):
        gateway._log_flood(summary, "2026-12-06T00:00:00.000000Z", "req_flood")
    entries = sandbox.entries()
    assert len(entries) == 6
    assert entries[-1]["error"] == "flood-summary" and "45 not logged one by one" in entries[-1]["path"]
    assert sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()["ok"] is True


def test_json_nested_too_deep_is_refused_before_screening_and_logged(sandbox: Sandbox) -> None:
    deep = "[" * 1000 + "]" * 1000
    body = ('{"from_account_id":"' + LI_WEI + '","to_account_id":"' + ZHANG_MIN
            + '","amount":{"amount":"1.00","currency":"CNY"},"description":' + deep + "}")
    response = sandbox.client.post("/payments/transfers", content=body,
                                   headers={"X-API-Key": WALLET_KEY, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["type"].endswith(":json-too-deep")
    [entry] = sandbox.entries()
    assert (entry["status"], entry["error"]) == (422, "json-too-deep")
    assert sandbox.balance(LI_WEI) == "5000.00"


def test_the_regulator_raises_the_keyless_budget_for_a_while_and_it_lapses(sandbox: Sandbox) -> None:
    """A contract-testing run sends thousands of keyless cases on purpose: the regulator raises
    the door's budget for it (logged), each then meets its 401, and the configured budget is back
    on restore or when the override lapses."""
    budget = sandbox.client.get("/sandbox/door/unauthenticated", headers=REGULATOR).json()
    assert budget == {"per_minute": 30.0, "burst": 30, "until": None,
                      "configured_per_minute": 30.0, "configured_burst": 30}
    raised = sandbox.client.put("/sandbox/door/unauthenticated", headers=REGULATOR,
                                json={"per_minute": 100_000, "burst": 1_000, "for_seconds": 60})
    assert raised.status_code == 200 and raised.json()["burst"] == 1_000 and raised.json()["until"]
    assert {sandbox.client.get("/payments/accounts").status_code for _ in range(300)} == {401}
    [override] = [e for e in sandbox.entries() if (e.get("operation") or "").startswith("keyless budget")]
    assert override["participant_id"] == "regulator"
    assert override["operation"] == "keyless budget 100000/min, burst 1000, for 60 s"

    restored = sandbox.client.delete("/sandbox/door/unauthenticated", headers=REGULATOR).json()
    assert (restored["burst"], restored["until"]) == (30, None)
    statuses = [sandbox.client.get("/payments/accounts").status_code for _ in range(40)]
    assert statuses[:30] == [401] * 30 and set(statuses[30:]) == {429}  # a full configured bucket, no more

    door = sandbox.client.app.state.gateway.door
    door.override(1_000, 1_000, until=0.0)  # an override whose end has passed is not in force
    assert door.budget(1.0) == (30.0, 30, None)


def test_only_the_regulator_moves_the_door(sandbox: Sandbox) -> None:
    for headers in ({"X-API-Key": WALLET_KEY}, {}):
        answer = sandbox.client.put("/sandbox/door/unauthenticated", headers=headers,
                                    json={"per_minute": 100_000, "burst": 1_000, "for_seconds": 60})
        assert answer.status_code in (401, 403)
    assert sandbox.client.get("/sandbox/door/unauthenticated", headers=REGULATOR).json()["until"] is None
    invalid = sandbox.client.put("/sandbox/door/unauthenticated", headers=REGULATOR,
                                 json={"per_minute": 0, "burst": 1, "for_seconds": 90_000})
    assert invalid.status_code == 422
    assert {e["field"] for e in invalid.json()["errors"]} == {"body.per_minute", "body.for_seconds"}
