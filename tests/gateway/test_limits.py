"""Keys, the testing window, the allow-list, boundary limits and the rate limit: 401/403/429."""

from __future__ import annotations

from datetime import timedelta

from tests.gateway.conftest import LI_WEI, REGULATOR, WALLET_KEY, ZHANG_MIN, Sandbox


def test_missing_key_is_401(sandbox: Sandbox) -> None:
    response = sandbox.client.get(f"/payments/accounts/{LI_WEI}")
    assert response.status_code == 401
    assert response.json()["type"].endswith("missing-api-key")
    assert response.headers["www-authenticate"].startswith("ApiKey")


def test_wrong_key_is_401(sandbox: Sandbox) -> None:
    response = sandbox.client.get(f"/payments/accounts/{LI_WEI}", headers={"X-API-Key": "sbx_guess"})
    assert response.status_code == 401
    assert response.json()["type"].endswith("invalid-api-key")


def test_regulator_key_cannot_call_services(sandbox: Sandbox) -> None:
    response = sandbox.client.get(f"/payments/accounts/{LI_WEI}", headers=REGULATOR)
    assert response.status_code == 403


def test_demo_key_reaches_payments_with_the_prefix_stripped(sandbox: Sandbox) -> None:
    response = sandbox.client.get(f"/payments/accounts/{LI_WEI}", headers={"X-API-Key": WALLET_KEY})
    assert response.status_code == 200
    assert response.json()["owner_name"] == "Li Wei"


def test_window_not_yet_open_is_refused(sandbox: Sandbox) -> None:
    _, key = sandbox.admit(starts_in_days=1)
    response = sandbox.transfer(key, "1.00")
    assert response.status_code == 403
    assert response.json()["limit"] == "testing_window"


def test_window_closed_is_refused(sandbox: Sandbox) -> None:
    _, key = sandbox.admit(window_days=1)
    sandbox.clock.advance(timedelta(days=1, seconds=1))
    response = sandbox.client.get(f"/payments/accounts/{LI_WEI}", headers={"X-API-Key": key})
    assert response.status_code == 403
    assert response.json()["limit"] == "testing_window"


def test_service_off_the_allow_list_is_refused(sandbox: Sandbox) -> None:
    response = sandbox.client.get("/credit/applications", headers={"X-API-Key": WALLET_KEY})
    assert response.status_code == 403
    assert response.json()["limit"] == "allowed_services"


def test_operation_off_the_allow_list_is_refused(sandbox: Sandbox) -> None:
    _, key = sandbox.admit(operations=["payments GET /accounts/{account_id}"])
    shared = sandbox.float_account
    assert sandbox.client.get(f"/payments/accounts/{shared}", headers={"X-API-Key": key}).status_code == 200
    response = sandbox.transfer(key, "1.00")
    assert response.status_code == 403
    assert response.json()["limit"] == "allowed_operations"


def test_single_transaction_limit_is_refused_and_nothing_moves(sandbox: Sandbox) -> None:
    _, key = sandbox.admit(limits={"max_single_transaction": "100.00"})
    before = sandbox.balance(ZHANG_MIN)
    assert sandbox.transfer(key, "100.00").status_code == 201
    response = sandbox.transfer(key, "100.01")
    assert response.status_code == 403
    assert response.json()["limit"] == "max_single_transaction"
    assert sandbox.balance(ZHANG_MIN) == f"{float(before) + 100:.2f}"


def test_daily_volume_limit_is_refused_until_the_next_day(sandbox: Sandbox) -> None:
    _, key = sandbox.admit(limits={"daily_volume": "250.00"})
    assert sandbox.transfer(key, "200.00").status_code == 201
    response = sandbox.transfer(key, "60.00")
    assert response.status_code == 403
    assert response.json()["limit"] == "daily_volume"
    sandbox.clock.advance(timedelta(days=1))
    assert sandbox.transfer(key, "60.00").status_code == 201


def test_distinct_customer_limit_is_refused_for_a_new_customer(sandbox: Sandbox) -> None:
    _, key = sandbox.admit(limits={"max_customers": 1})
    first, second = sandbox.public_account("10.00", "First"), sandbox.public_account("10.00", "Second")
    assert sandbox.transfer(key, "1.00", source=first).status_code == 201
    assert sandbox.transfer(key, "1.00", source=first).status_code == 201  # same customer again
    response = sandbox.transfer(key, "1.00", source=second)
    assert response.status_code == 403
    assert response.json()["limit"] == "max_customers"


def test_rate_limit_answers_429_with_retry_after(sandbox: Sandbox) -> None:
    _, key = sandbox.admit(limits={"rate_limit_per_minute": 2})
    shared = sandbox.float_account
    first = sandbox.client.get(f"/payments/accounts/{shared}", headers={"X-API-Key": key})
    assert first.headers["ratelimit-limit"] == "2"
    assert first.headers["ratelimit-remaining"] == "1"
    sandbox.client.get(f"/payments/accounts/{shared}", headers={"X-API-Key": key})
    third = sandbox.client.get(f"/payments/accounts/{shared}", headers={"X-API-Key": key})
    assert third.status_code == 429
    assert third.headers["ratelimit-remaining"] == "0"
    assert int(third.headers["retry-after"]) == int(third.headers["ratelimit-reset"]) > 0
    sandbox.clock.advance(timedelta(seconds=int(third.headers["retry-after"])))
    assert sandbox.client.get(f"/payments/accounts/{shared}", headers={"X-API-Key": key}).status_code == 200


def test_suspended_participant_is_refused_until_reinstated(sandbox: Sandbox) -> None:
    pid, key = sandbox.admit()
    sandbox.client.post(f"/sandbox/participants/{pid}/suspend", json={"reason": "test"}, headers=REGULATOR)
    response = sandbox.transfer(key, "1.00")
    assert response.status_code == 403
    assert response.json()["limit"] == "status"
    sandbox.client.post(f"/sandbox/participants/{pid}/reinstate", json={"reason": "ok"}, headers=REGULATOR)
    assert sandbox.transfer(key, "1.00").status_code == 201


def test_limit_breaches_are_logged_with_the_limit(sandbox: Sandbox) -> None:
    pid, key = sandbox.admit(limits={"max_single_transaction": "1.00"})
    sandbox.transfer(key, "2.00")
    [entry] = sandbox.entries(participant_id=pid)
    assert (entry["status"], entry["limit"]) == (403, "max_single_transaction")
