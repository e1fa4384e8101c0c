"""A participant cannot reach another's data: its customers' accounts and their statements
(payments keeps each participant to the accounts it opened, by the participant the gateway
names), its idempotency keys, its audit entries and receipts, and the regulator's API, which no
participant key opens."""

from __future__ import annotations

from tests.gateway.conftest import LI_WEI, REGULATOR, WALLET_KEY, ZHANG_MIN, Sandbox


def _receipt_index(response) -> int:  # type: ignore[no-untyped-def]
    return int(response.headers["x-sandbox-receipt"].split(";")[0].split("=")[1])


def test_same_idempotency_key_from_two_participants_makes_two_transfers(sandbox: Sandbox) -> None:
    _, other = sandbox.admit()
    mine = sandbox.transfer(WALLET_KEY, "10.00", source=LI_WEI, **{"Idempotency-Key": "k-1"})
    theirs = sandbox.transfer(other, "10.00", **{"Idempotency-Key": "k-1"})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert "idempotent-replayed" not in theirs.headers


def test_forged_participant_header_cannot_replay_anothers_response(sandbox: Sandbox) -> None:
    _, other = sandbox.admit()
    mine = sandbox.transfer(WALLET_KEY, "10.00", source=LI_WEI, **{"Idempotency-Key": "k-2"})
    forged = sandbox.transfer(other, "10.00", **{
        "Idempotency-Key": "k-2", "X-Sandbox-Participant": "ptp_00000000000000000000000001"})
    assert forged.status_code == 201
    assert forged.json()["id"] != mine.json()["id"]


def test_a_participant_checks_its_own_receipt(sandbox: Sandbox) -> None:
    response = sandbox.transfer(WALLET_KEY, "1.00", source=LI_WEI, target=ZHANG_MIN)
    index = _receipt_index(response)
    digest = response.headers["x-sandbox-receipt"].split("hash=")[1]
    check = sandbox.client.get(f"/sandbox/receipts/{index}", params={"hash": digest},
                               headers={"X-API-Key": WALLET_KEY})
    assert check.status_code == 200
    assert check.json()["matches"] is True and check.json()["chain_ok"] is True


def test_a_participant_cannot_read_anothers_receipt(sandbox: Sandbox) -> None:
    _, other = sandbox.admit()
    index = _receipt_index(sandbox.transfer(WALLET_KEY, "1.00", source=LI_WEI))
    response = sandbox.client.get(f"/sandbox/receipts/{index}", headers={"X-API-Key": other})
    assert response.status_code == 404


def test_regulator_endpoints_refuse_participant_keys(sandbox: Sandbox) -> None:
    for path in ("/sandbox/audit/entries", "/sandbox/alerts", "/sandbox/participants", "/sandbox/audit/verify"):
        response = sandbox.client.get(path, headers={"X-API-Key": WALLET_KEY})
        assert response.status_code == 403, path
        assert response.json()["type"].endswith("regulator-only")


def test_regulator_endpoints_refuse_missing_keys(sandbox: Sandbox) -> None:
    assert sandbox.client.get("/sandbox/audit/entries").status_code == 401
    assert sandbox.client.get("/sandbox/audit/entries", headers={"X-API-Key": "nope"}).status_code == 401


def test_participants_cannot_admit_themselves_more_rights(sandbox: Sandbox) -> None:
    response = sandbox.client.post("/sandbox/participants", headers={"X-API-Key": WALLET_KEY}, json={
        "name": "Me", "services": ["credit"], "limits": {"max_single_transaction": "1.00",
        "daily_volume": "1.00", "max_customers": 1, "rate_limit_per_minute": 1}})
    assert response.status_code == 403
    assert REGULATOR  # the regulator's key is the only one that admits


def test_another_firm_cannot_see_or_debit_the_wallet_firms_customer_but_can_pay_her(sandbox: Sandbox) -> None:
    _, other = sandbox.admit(name="Other Wallet Co")
    theirs = {"X-API-Key": other}
    for path in (f"/payments/accounts/{LI_WEI}", f"/payments/accounts/{LI_WEI}/balance",
                 f"/payments/accounts/{LI_WEI}/journals"):
        response = sandbox.client.get(path, headers=theirs)
        assert response.status_code == 404, path  # as if it did not exist: nothing disclosed
    before = sandbox.balance(LI_WEI)
    stolen = sandbox.transfer(other, "10.00", source=LI_WEI)
    assert stolen.status_code == 404 and sandbox.balance(LI_WEI) == before
    # Its own customer can pay Li Wei, and its lists show only its own accounts.
    own = sandbox.funded_account(other, "50.00", owner="Their Customer")
    assert sandbox.transfer(other, "5.00", source=own, target=LI_WEI).status_code == 201
    listed = sandbox.client.get("/payments/accounts", headers=theirs).json()["data"]
    assert [a["id"] for a in listed] == [own]
    # The wallet firm still sees its customer, now 5.00 richer.
    mine = sandbox.client.get(f"/payments/accounts/{LI_WEI}/balance", headers={"X-API-Key": WALLET_KEY})
    assert mine.json()["available"]["amount"] == f"{float(before) + 5:.2f}"
