"""Debit mandates: an account is debited by the participant that opened it, or under a live
mandate its owner granted (grantee, caps per debit and per calendar period, expiry, revocation).

The service clock is frozen at Monday 2026-01-05 09:00 UTC, so "this month" is January 2026.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from services.common.demo import ADVISOR_SERVICE, DEMO_MANDATES, DEMO_ROBO, WALLET_CO
from services.payments.models import Mandate
from tests.payments.factories import MakeApp, as_, cny, grant_mandate, open_funded
from tests.support.ledger import assert_problem, snapshot
from tests.support.servers import serve

OWNER, GRANTEE, STRANGER = "ptp_wallet_firm", "ptp_robo_firm", "ptp_other_firm"


@pytest.fixture
def app(make_app: MakeApp) -> FastAPI:
    return make_app(seed_demo_data=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def wallet(client: TestClient) -> str:
    """The owner's customer's wallet, holding 200.00 CNY."""
    return open_funded(client, OWNER, "Li Wei", top_up="200.00")


@pytest.fixture
def shop(client: TestClient) -> str:
    """The grantee's own account, the payee of its debits (a business: fee-free transfers)."""
    return open_funded(client, GRANTEE, "Robo custody", kind="merchant", top_up="0.01")


def debit(client: TestClient | httpx.Client, caller: dict[str, str], payer: str, payee: str, amount: str,
          mandate_id: str | None = None) -> httpx.Response:
    body = {"from_account_id": payer, "to_account_id": payee, "amount": cny(amount)}
    if mandate_id is not None:
        body["mandate_id"] = mandate_id
    return client.post("/transfers", headers=caller, json=body)


def test_the_owner_debits_without_a_mandate(client: TestClient, wallet: str, shop: str) -> None:
    paid = debit(client, as_(OWNER), wallet, shop, "10.00")
    assert paid.status_code == 201 and paid.json()["mandate_id"] is None
    out = client.post("/withdrawals", headers=as_(OWNER), json={"account_id": wallet, "amount": cny("5.00")})
    assert out.status_code == 201 and out.json()["mandate_id"] is None
    assert client.get(f"/accounts/{wallet}", headers=as_(OWNER)).json()["balance"] == cny("185.00")


def test_another_participant_without_a_mandate_gets_not_found(client: TestClient, wallet: str, shop: str) -> None:
    before = snapshot(client)
    refused = debit(client, as_(GRANTEE), wallet, shop, "10.00")
    assert wallet in assert_problem(refused, 404, "not-found")["detail"]
    # The same answer as for an account that does not exist: existence is not disclosed.
    missing = debit(client, as_(GRANTEE), "acc_0000000000000000000000zzzz", shop, "10.00")
    assert assert_problem(missing, 404, "not-found")["title"] == refused.json()["title"]
    assert_problem(client.post("/withdrawals", headers=as_(GRANTEE),
                               json={"account_id": wallet, "amount": cny("1.00")}), 404, "not-found")
    assert snapshot(client) == before


def test_a_live_mandate_lets_the_grantee_debit_and_the_journal_names_it(
        client: TestClient, wallet: str, shop: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE)
    assert mandate["grantor_participant_id"] == OWNER and mandate["status"] == "active"
    assert mandate["used_this_period"] == cny("0.00")

    paid = debit(client, as_(GRANTEE), wallet, shop, "30.00", mandate["id"])
    assert paid.status_code == 201, paid.text
    assert paid.json()["mandate_id"] == mandate["id"]
    # Both sides see it: the owner on its customer's statement, the grantee on its account's.
    for who in (OWNER, GRANTEE):
        assert client.get(f"/journals/{paid.json()['id']}", headers=as_(who)).json()["mandate_id"] == mandate["id"]
    out = client.post("/withdrawals", headers=as_(GRANTEE),
                      json={"account_id": wallet, "amount": cny("5.00"), "mandate_id": mandate["id"]})
    assert out.status_code == 201 and out.json()["mandate_id"] == mandate["id"]
    seen = client.get(f"/mandates/{mandate['id']}", headers=as_(GRANTEE)).json()
    assert seen["used_this_period"] == cny("35.00")
    # The mandate lets the grantee debit; it does not let it read the account.
    assert client.get(f"/accounts/{wallet}", headers=as_(GRANTEE)).status_code == 404
    assert client.get(f"/accounts/{wallet}", headers=as_(OWNER)).json()["balance"] == cny("165.00")


def test_qr_and_cross_border_payments_debit_under_a_mandate(client: TestClient, wallet: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE)
    merchant = open_funded(client, GRANTEE, "Noodles", kind="merchant", top_up="0.01")
    payload = client.get(f"/accounts/{merchant}/qr", headers=as_(GRANTEE), params={"amount": "12.00"}).json()["payload"]
    scan = {"payload": payload, "from_account_id": wallet}
    assert_problem(client.post("/qr-payments", headers=as_(GRANTEE), json=scan), 404, "not-found")
    paid = client.post("/qr-payments", headers=as_(GRANTEE), json={**scan, "mandate_id": mandate["id"]})
    assert paid.status_code == 201 and paid.json()["mandate_id"] == mandate["id"]

    dollars = client.post("/accounts", headers=as_(GRANTEE),
                          json={"kind": "personal", "owner_name": "Alice", "currency": "USD"}).json()["id"]
    quote = client.post("/fx/quotes", json={"sell": cny("40.00"), "buy_currency": "USD", "rail": "ripple"}).json()
    pay = {"quote_id": quote["id"], "from_account_id": wallet, "to_account_id": dollars}
    assert_problem(client.post("/cross-border-payments", headers=as_(GRANTEE), json=pay), 404, "not-found")
    # Each debit is within the 50.00 cap, and together (52.00) within the 80.00 a month.
    xb = client.post("/cross-border-payments", headers=as_(GRANTEE), json={**pay, "mandate_id": mandate["id"]})
    assert xb.status_code == 201, xb.text
    assert xb.json()["mandate_id"] == mandate["id"]
    assert client.get(f"/mandates/{mandate['id']}", headers=as_(OWNER)).json()["used_this_period"] == cny("52.00")


def test_the_cap_per_debit_is_enforced(client: TestClient, wallet: str, shop: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE, per_debit="50.00", per_period="80.00")
    before = snapshot(client)
    problem = assert_problem(debit(client, as_(GRANTEE), wallet, shop, "50.01", mandate["id"]), 403, "mandate-limit")
    assert problem["limit"] == "max_per_debit" and problem["remaining"] == cny("50.00")
    assert problem["mandate_id"] == mandate["id"]
    assert snapshot(client) == before
    assert debit(client, as_(GRANTEE), wallet, shop, "50.00", mandate["id"]).status_code == 201


def test_the_cap_per_period_is_enforced_and_a_new_period_starts_afresh(
        app: FastAPI, client: TestClient, wallet: str, shop: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE, per_debit="50.00", per_period="80.00")
    assert debit(client, as_(GRANTEE), wallet, shop, "50.00", mandate["id"]).status_code == 201
    problem = assert_problem(debit(client, as_(GRANTEE), wallet, shop, "30.01", mandate["id"]), 403, "mandate-limit")
    assert problem["limit"] == "max_per_period" and problem["remaining"] == cny("30.00")
    assert debit(client, as_(GRANTEE), wallet, shop, "30.00", mandate["id"]).status_code == 201
    problem = assert_problem(debit(client, as_(GRANTEE), wallet, shop, "0.01", mandate["id"]), 403, "mandate-limit")
    assert problem["remaining"] == cny("0.00")
    # The owner's own debits do not count against the grantee's mandate.
    assert debit(client, as_(OWNER), wallet, shop, "10.00").status_code == 201

    app.state.clock.advance(timedelta(days=27))  # 2026-02-01: February is a new period
    assert client.get(f"/mandates/{mandate['id']}", headers=as_(GRANTEE)).json()["used_this_period"] == cny("0.00")
    assert debit(client, as_(GRANTEE), wallet, shop, "50.00", mandate["id"]).status_code == 201


def test_a_daily_mandate_counts_the_utc_day(app: FastAPI, client: TestClient, wallet: str, shop: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE, per_debit="10.00", per_period="10.00", period="day")
    assert debit(client, as_(GRANTEE), wallet, shop, "10.00", mandate["id"]).status_code == 201
    app.state.clock.advance(timedelta(hours=14, minutes=59))  # 23:59 the same day
    assert_problem(debit(client, as_(GRANTEE), wallet, shop, "1.00", mandate["id"]), 403, "mandate-limit")
    app.state.clock.advance(timedelta(minutes=1))  # midnight UTC
    assert debit(client, as_(GRANTEE), wallet, shop, "10.00", mandate["id"]).status_code == 201


def test_an_expired_mandate_debits_nothing(client: TestClient, wallet: str, shop: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE, expires_at="2026-01-06T09:00:00Z")
    assert debit(client, as_(GRANTEE), wallet, shop, "1.00", mandate["id"]).status_code == 201
    moved = client.post("/_sandbox/clock/advance", json={"seconds": 24 * 3600})
    assert moved.status_code == 200, moved.text
    problem = assert_problem(debit(client, as_(GRANTEE), wallet, shop, "1.00", mandate["id"]), 403, "mandate-inactive")
    assert problem["mandate_status"] == "expired" and mandate["id"] in problem["detail"]
    assert client.get(f"/mandates/{mandate['id']}", headers=as_(OWNER)).json()["status"] == "expired"
    listed = client.get("/mandates", headers=as_(OWNER), params={"status": "expired"}).json()["data"]
    assert [m["id"] for m in listed] == [mandate["id"]]


def test_the_grantor_revokes_and_revoking_again_changes_nothing(client: TestClient, wallet: str, shop: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE)
    assert_problem(client.post(f"/mandates/{mandate['id']}/revoke", headers=as_(GRANTEE)), 403, "not-mandate-grantor")
    assert_problem(client.post(f"/mandates/{mandate['id']}/revoke", headers=as_(STRANGER)), 404, "not-found")

    revoked = client.post(f"/mandates/{mandate['id']}/revoke", headers=as_(OWNER))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    again = client.post(f"/mandates/{mandate['id']}/revoke", headers=as_(OWNER))
    assert again.status_code == 200 and again.json() == revoked.json()
    problem = assert_problem(debit(client, as_(GRANTEE), wallet, shop, "1.00", mandate["id"]), 403, "mandate-inactive")
    assert "revoked" in problem["detail"]


def test_a_mandate_is_usable_only_by_its_grantee_and_on_its_account(
        client: TestClient, wallet: str, shop: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE)
    # Another participant naming it is told it does not exist, as for an unknown id.
    assert_problem(debit(client, as_(STRANGER), wallet, shop, "1.00", mandate["id"]), 404, "not-found")
    assert_problem(debit(client, as_(GRANTEE), wallet, shop, "1.00", "mdt_0000000000000000000000zzzz"), 404, "not-found")
    other_wallet = open_funded(client, OWNER, "Zhang Min")
    problem = assert_problem(debit(client, as_(GRANTEE), other_wallet, shop, "1.00", mandate["id"]),
                             409, "mandate-account-mismatch")
    assert problem["debtor_account_id"] == wallet


def test_a_service_acting_for_a_participant_debits_under_that_participants_mandate(
        client: TestClient, wallet: str) -> None:
    custody = open_funded(client, ADVISOR_SERVICE, "Advisor custody", kind="merchant", top_up="0.01")
    mandate = grant_mandate(client, OWNER, wallet, DEMO_ROBO)
    for_robo = as_(ADVISOR_SERVICE, on_behalf_of=DEMO_ROBO)
    paid = debit(client, for_robo, wallet, custody, "20.00", mandate["id"])
    assert paid.status_code == 201, paid.text
    assert paid.json()["mandate_id"] == mandate["id"]
    # On its own account, or for someone else, the service holds no mandate of the robo's.
    assert_problem(debit(client, as_(ADVISOR_SERVICE), wallet, custody, "1.00", mandate["id"]), 404, "not-found")
    assert_problem(debit(client, as_(ADVISOR_SERVICE, on_behalf_of=STRANGER), wallet, custody, "1.00",
                         mandate["id"]), 404, "not-found")
    assert_problem(debit(client, for_robo, wallet, custody, "1.00"), 404, "not-found")
    # The service moves its own custody money for the robo without any mandate.
    back = debit(client, for_robo, custody, wallet, "5.00")
    assert back.status_code == 201 and back.json()["mandate_id"] is None


def test_only_the_owner_grants_and_only_the_parties_see_a_mandate(client: TestClient, wallet: str) -> None:
    body = {"debtor_account_id": wallet, "grantee_participant_id": GRANTEE, "max_per_debit": cny("1.00"),
            "max_per_period": cny("2.00"), "period": "week", "expires_at": "2026-02-01T00:00:00Z",
            "purpose": "weekly savings"}
    assert_problem(client.post("/mandates", headers=as_(STRANGER), json=body), 404, "not-found")
    assert_problem(client.post("/mandates", headers=as_(OWNER), json={**body, "max_per_period": {
        "amount": "2.00", "currency": "USD"}}), 409, "currency-mismatch")
    assert_problem(client.post("/mandates", headers=as_(OWNER), json={**body, "expires_at": "2026-01-01T00:00:00Z"}),
                   409, "mandate-expiry-passed")
    assert_problem(client.post("/mandates", headers=as_(OWNER), json={**body, "period": "year"}),
                   422, "validation-error")
    mine = grant_mandate(client, OWNER, wallet, GRANTEE)
    direct = client.post("/mandates", json={**body, "grantee_participant_id": STRANGER})
    assert direct.status_code == 201 and direct.json()["grantor_participant_id"] == OWNER

    def listed(headers: dict[str, str], **params: str) -> list[str]:
        return [m["id"] for m in client.get("/mandates", headers=headers, params=params).json()["data"]]

    assert listed(as_(OWNER)) == sorted([mine["id"], direct.json()["id"]])
    assert listed(as_(GRANTEE)) == [mine["id"]]
    assert listed(as_(STRANGER)) == [direct.json()["id"]]
    assert listed({}, grantee_participant_id=GRANTEE) == [mine["id"]]
    assert listed(as_(OWNER), debtor_account_id=wallet, status="active") == sorted([mine["id"], direct.json()["id"]])
    assert listed(as_(OWNER), status="revoked") == []
    assert_problem(client.get(f"/mandates/{mine['id']}", headers=as_(STRANGER)), 404, "not-found")
    assert client.get(f"/mandates/{mine['id']}").status_code == 200


def test_granting_and_revoking_are_safe_to_retry_with_a_key(client: TestClient, wallet: str) -> None:
    body = {"debtor_account_id": wallet, "grantee_participant_id": GRANTEE, "max_per_debit": cny("1.00"),
            "max_per_period": cny("2.00"), "period": "day", "expires_at": "2026-02-01T00:00:00Z",
            "purpose": "daily round-ups"}
    headers = {**as_(OWNER), "Idempotency-Key": "grant-1"}
    first = client.post("/mandates", headers=headers, json=body)
    again = client.post("/mandates", headers=headers, json=body)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/mandates", headers=as_(OWNER)).json()["data"]) == 1
    revoke = {**as_(OWNER), "Idempotency-Key": "revoke-1"}
    revoked = client.post(f"/mandates/{first.json()['id']}/revoke", headers=revoke)
    assert client.post(f"/mandates/{first.json()['id']}/revoke", headers=revoke).json() == revoked.json()


def test_invariants_check_every_mandated_debit_against_its_mandate(
        app: FastAPI, client: TestClient, wallet: str, shop: str) -> None:
    mandate = grant_mandate(client, OWNER, wallet, GRANTEE, per_debit="50.00", per_period="80.00")
    paid = debit(client, as_(GRANTEE), wallet, shop, "40.00", mandate["id"]).json()
    assert debit(client, as_(GRANTEE), wallet, shop, "40.00", mandate["id"]).status_code == 201

    def mandate_check() -> dict[str, object]:
        report = client.get("/invariants").json()
        return next(c for c in report["checks"] if c["name"] == "mandated_debits_within_mandate")

    assert mandate_check()["ok"] is True and client.get("/invariants").json()["ok"] is True
    # Were the rows ever to disagree (here: the caps rewritten under the journals, and the
    # mandate revoked before the first debit), the check names each journal that broke them.
    with app.state.db.session() as session:
        session.execute(update(Mandate).where(Mandate.id == mandate["id"]).values(
            max_per_debit_minor=3000, max_per_period_minor=7000,
            revoked_at=datetime.fromisoformat(paid["created_at"]) - timedelta(seconds=1)))
        session.commit()
    check = mandate_check()
    assert check["ok"] is False
    violations = " ".join(check["violations"])  # type: ignore[arg-type]
    assert f"{paid['id']}: {mandate['id']} was not live" in violations
    assert "over max_per_period 7000" in violations and "max_per_debit 3000" in violations


CONCURRENT_DEBITS = 12


def test_concurrent_debits_never_pass_the_cap_per_period(database_url, make_app: MakeApp) -> None:
    """Twelve debits of 10.00 at once under a 50.00-a-month mandate: exactly five pass."""
    app = make_app(database_url=database_url, seed_demo_data=False)
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        wallet = open_funded(client, OWNER, "Li Wei", top_up="500.00")
        shop = open_funded(client, GRANTEE, "Robo custody", kind="merchant", top_up="0.01")
        mandate = grant_mandate(client, OWNER, wallet, GRANTEE, per_debit="10.00", per_period="50.00")

        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=30) as c:
                return debit(c, as_(GRANTEE), wallet, shop, "10.00", mandate["id"])

        with ThreadPoolExecutor(CONCURRENT_DEBITS) as pool:
            answers = list(pool.map(one, range(CONCURRENT_DEBITS)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201] * 5 + [403] * 7, [r.text for r in answers if r.status_code not in (201, 403)]
        assert all(r.json()["limit"] == "max_per_period" for r in answers if r.status_code == 403)
        seen = client.get(f"/mandates/{mandate['id']}").json()
        assert seen["used_this_period"] == cny("50.00")
        assert client.get(f"/accounts/{wallet}").json()["balance"] == cny("450.00")
        assert client.get("/invariants").json()["ok"]


def test_the_demo_mandates_are_seeded_once(make_app: MakeApp) -> None:
    for _ in range(2):  # a restart on the same data adds nothing
        with TestClient(make_app()) as client:
            mandates = client.get("/mandates", params={"limit": 100}).json()["data"]
            assert [m["id"] for m in mandates] == [d.id for d in DEMO_MANDATES]
    robo = next(m for m in mandates if m["grantee_participant_id"] == DEMO_ROBO)
    assert robo["grantor_participant_id"] == WALLET_CO and robo["status"] == "active"
    assert robo["max_per_debit"] == cny("5000.00") and robo["max_per_period"] == cny("20000.00")
    assert robo["expires_at"].startswith("2027-01-05")  # 365 days from the first start
    # The walkthrough's step: Demo Robo (through the advisor) funds a portfolio from Li Wei's wallet.
    with TestClient(make_app()) as client:
        funded = debit(client, as_(ADVISOR_SERVICE, on_behalf_of=DEMO_ROBO), robo["debtor_account_id"],
                       "acc_00000000000000000000000006", "1000.00", robo["id"])
        assert funded.status_code == 201, funded.text

