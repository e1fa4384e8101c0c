"""Bad input to the payments API is refused with a problem+json a client can act on, and nothing
is written: the journals and every balance are the same before and after. A crash mid-request is
a problem+json 500 carrying the request id, and the half-done money movement is rolled back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from services.common.app import build_service_app
from services.common.clock import frozen_clock
from services.common.db import Database, model_base
from services.common.settings import ServiceSettings
from services.payments import fastpath, repository
from tests.payments.factories import MakeApp
from tests.support.ledger import assert_problem, snapshot

LI_WEI = "acc_00000000000000000000000001"  # CNY wallet, 5000.00
ZHANG_MIN = "acc_00000000000000000000000002"  # CNY wallet, 1200.00
NOODLES = "acc_00000000000000000000000003"  # CNY merchant
ALICE = "acc_00000000000000000000000007"  # USD wallet, 2500.00
NOBODY = "acc_0000000000000000000000zzzz"  # well-formed, does not exist
NO_JOURNAL = "tr_0000000000000000000000zzzz"
CARD = "4242424242424242"
PROBLEM = "urn:fintech-sandbox:problem:"


def cny(amount: Any) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


@pytest.fixture
def refundable(client: TestClient) -> str:
    """A P2P transfer that can be refunded (written before each test's snapshot)."""
    r = client.post("/transfers", json={"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": cny("20.00")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


# --- unknown things: 404 ------------------------------------------------------------------------

NOT_FOUND = [
    ("POST", "/deposits", {"account_id": NOBODY, "amount": cny("1.00"), "card_number": CARD}, "Account"),
    ("POST", "/withdrawals", {"account_id": NOBODY, "amount": cny("1.00")}, "Account"),
    ("POST", "/transfers", {"from_account_id": NOBODY, "to_account_id": ZHANG_MIN, "amount": cny("1.00")}, "Account"),
    ("POST", "/transfers", {"from_account_id": LI_WEI, "to_account_id": NOBODY, "amount": cny("1.00")}, "Account"),
    ("POST", "/refunds", {"journal_id": NO_JOURNAL}, "Journal"),
    ("GET", f"/accounts/{NOBODY}", None, "Account"),
    ("GET", f"/accounts/{NOBODY}/balance", None, "Account"),
    ("GET", f"/accounts/{NOBODY}/journals", None, "Account"),
    ("GET", f"/journals/{NO_JOURNAL}", None, "Journal"),
]


@pytest.mark.parametrize(("method", "path", "body", "what"), NOT_FOUND)
def test_unknown_account_or_journal_is_a_404_and_writes_nothing(
    client: TestClient, method: str, path: str, body: Any, what: str
) -> None:
    before = snapshot(client)
    r = client.request(method, path, json=body)
    problem = assert_problem(r, 404, "not-found", f"{what} not found")
    missing = NOBODY if what == "Account" else NO_JOURNAL
    assert problem["detail"] == f"No {what.lower()} has id {missing!r}."
    assert snapshot(client) == before


# --- currency mismatch: 409 ---------------------------------------------------------------------


def test_currency_mismatch_is_a_409_and_writes_nothing(client: TestClient, refundable: str) -> None:
    before = snapshot(client)
    usd = {"amount": "1.00", "currency": "USD"}
    cases = [
        ("/deposits", {"account_id": LI_WEI, "amount": usd, "card_number": CARD}, LI_WEI),
        ("/withdrawals", {"account_id": ALICE, "amount": cny("1.00")}, ALICE),
        ("/transfers", {"from_account_id": LI_WEI, "to_account_id": ALICE, "amount": cny("1.00")}, ALICE),
        ("/transfers", {"from_account_id": ALICE, "to_account_id": LI_WEI, "amount": usd}, LI_WEI),
    ]
    for path, body, account in cases:
        problem = assert_problem(client.post(path, json=body), 409, "currency-mismatch",
                                 "Currency does not match the account")
        assert problem["account_id"] == account
        assert problem["account_currency"] == ("USD" if account == ALICE else "CNY")
    problem = assert_problem(client.post("/refunds", json={"journal_id": refundable, "amount": usd}),
                             409, "currency-mismatch")
    assert refundable in problem["detail"]
    assert snapshot(client) == before


# --- amounts: 422 naming body.amount.amount ------------------------------------------------------

BAD_AMOUNTS = ["0", "0.00", "-1.00", "-0.01", "12.345", "1.001", 5, 5.5, "", "abc"]


def _with_amount(kind: str, amount: Any, refundable: str) -> tuple[str, dict[str, Any]]:
    return {
        "deposit": ("/deposits", {"account_id": LI_WEI, "amount": cny(amount), "card_number": CARD}),
        "withdrawal": ("/withdrawals", {"account_id": LI_WEI, "amount": cny(amount)}),
        "transfer": ("/transfers", {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": cny(amount)}),
        "payment": ("/transfers", {"from_account_id": LI_WEI, "to_account_id": NOODLES, "amount": cny(amount)}),
        "refund": ("/refunds", {"journal_id": refundable, "amount": cny(amount)}),
    }[kind]


@pytest.mark.parametrize("kind", ["deposit", "withdrawal", "transfer", "payment", "refund"])
def test_zero_negative_and_over_precise_amounts_are_422_naming_the_field(
    client: TestClient, refundable: str, kind: str
) -> None:
    before = snapshot(client)
    for amount in BAD_AMOUNTS:
        path, body = _with_amount(kind, amount, refundable)
        problem = assert_problem(client.post(path, json=body), 422, "validation-error", "Request is not valid")
        assert [e["field"] for e in problem["errors"]] == ["body.amount.amount"], amount
        assert problem["detail"] == "Invalid field(s): body.amount.amount"
    assert snapshot(client) == before


# --- malformed ids: 422 naming the path or body field --------------------------------------------

MALFORMED_IDS = ["acc_bad", "ACC_00000000000000000000000001", "acc_0000000000000000000000000l", "tr_00000000000000000000000001", "1"]


@pytest.mark.parametrize("bad_id", MALFORMED_IDS)
@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("/accounts/{}", "path.account_id"),
        ("/accounts/{}/balance", "path.account_id"),
        ("/accounts/{}/journals", "path.account_id"),
    ],
)
def test_malformed_account_id_in_the_path_is_422_naming_it(client: TestClient, template: str, field: str, bad_id: str) -> None:
    problem = assert_problem(client.get(template.format(bad_id)), 422, "validation-error")
    assert [e["field"] for e in problem["errors"]] == [field]


@pytest.mark.parametrize("bad_id", ["xyz_00000000000000000000000001", "tr_short", "acc_00000000000000000000000001"])
def test_malformed_journal_id_in_the_path_is_422_naming_it(client: TestClient, bad_id: str) -> None:
    problem = assert_problem(client.get(f"/journals/{bad_id}"), 422, "validation-error")
    assert [e["field"] for e in problem["errors"]] == ["path.journal_id"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/deposits", {"account_id": "acc_bad", "amount": cny("1.00"), "card_number": CARD}, "body.account_id"),
        ("/withdrawals", {"account_id": "acc_00000000000000000000000001x", "amount": cny("1.00")}, "body.account_id"),
        ("/transfers", {"from_account_id": "tr_00000000000000000000000001", "to_account_id": ZHANG_MIN,
                        "amount": cny("1.00")}, "body.from_account_id"),
        ("/transfers", {"from_account_id": LI_WEI, "to_account_id": 7, "amount": cny("1.00")}, "body.to_account_id"),
        ("/refunds", {"journal_id": "dep_00000000000000000000000001"}, "body.journal_id"),  # not refundable
        ("/refunds", {"journal_id": "acc_00000000000000000000000001"}, "body.journal_id"),
    ],
)
def test_malformed_id_in_the_body_is_422_naming_it_and_writes_nothing(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    before = snapshot(client)
    problem = assert_problem(client.post(path, json=body), 422, "validation-error")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert snapshot(client) == before


# --- unknown fields (extra=forbid), malformed JSON ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/deposits", {"account_id": LI_WEI, "amount": cny("1.00"), "card_number": CARD, "cvv": "123"}, "body.cvv"),
        ("/transfers", {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": cny("1.00"),
                        "fee": cny("0.00")}, "body.fee"),
        ("/transfers", {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN,
                        "amount": {**cny("1.00"), "exponent": 2}}, "body.amount.exponent"),
        ("/withdrawals", {"account_id": LI_WEI, "amount": cny("1.00"), "Amount": cny("9.00")}, "body.Amount"),
        ("/refunds", {"journal_id": NO_JOURNAL, "refund_all": True}, "body.refund_all"),
        ("/accounts", {"kind": "personal", "owner_name": "X", "balance": cny("100.00")}, "body.balance"),
    ],
)
def test_unknown_json_field_is_422_naming_it_and_writes_nothing(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    before = snapshot(client)
    problem = assert_problem(client.post(path, json=body), 422, "validation-error")
    assert {"field": field, "message": "Extra inputs are not permitted"} in problem["errors"]
    assert snapshot(client) == before


def test_a_body_that_is_not_json_is_a_400_problem(client: TestClient) -> None:
    before = snapshot(client)
    r = client.post("/transfers", content=b'{"from_account_id": ', headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 400, "invalid-json", "Body is not valid JSON")
    assert "character" in problem["detail"]
    assert snapshot(client) == before


# --- oversized bodies: 413 ----------------------------------------------------------------------


def _big_transfer(size: int) -> bytes:
    padding = "x" * size
    return (f'{{"from_account_id": "{LI_WEI}", "to_account_id": "{ZHANG_MIN}", '
            f'"amount": {{"amount": "1.00", "currency": "CNY"}}, "description": "{padding}"}}').encode()


def test_oversized_body_with_content_length_is_a_413_problem(client: TestClient) -> None:
    before = snapshot(client)
    r = client.post("/transfers", content=_big_transfer(70_000), headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 413, "payload-too-large", "Request body too large")
    assert problem["detail"] == "The request body exceeds 65536 bytes."
    assert snapshot(client) == before


@pytest.mark.parametrize("path", ["/transfers", "/accounts"])
def test_oversized_body_streamed_without_content_length_is_a_413_problem(client: TestClient, path: str) -> None:
    before = snapshot(client)
    body = _big_transfer(70_000)

    def chunks() -> Iterator[bytes]:  # chunked transfer encoding: no Content-Length up front
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    r = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "payload-too-large", "Request body too large")
    assert snapshot(client) == before


def test_the_body_limit_is_a_setting(make_app: MakeApp) -> None:
    with TestClient(make_app(max_body_bytes=300)) as small:
        body = {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": cny("1.00")}
        assert small.post("/transfers", json=body).status_code == 201
        r = small.post("/transfers", json={**body, "description": "y" * 300})
        assert_problem(r, 413, "payload-too-large")
        assert r.json()["detail"] == "The request body exceeds 300 bytes."


# --- crashes: problem+json 500 with the request id, nothing half-written -------------------------


def _crash_after(n: int, original: Any) -> Any:
    """Let the first n calls through, then raise: a crash part-way through a money movement."""
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > n:
            raise RuntimeError("simulated crash mid-transfer")
        return original(*args, **kwargs)

    return wrapper


def _after_then_crash(original: Any) -> Any:
    """Do the work, then raise: the journal and its postings are written but not committed."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise RuntimeError("simulated crash after the journal was written")

    return wrapper


@pytest.mark.parametrize(
    ("target", "body", "idempotency_key"),
    [
        # the payee's balance (the second account in id order) fails after the payer was debited
        ("apply", {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN, "amount": cny("15.00")}, None),
        # a merchant payment: balances and the fee moved, journal and postings inserted, then a crash
        ("post", {"from_account_id": LI_WEI, "to_account_id": NOODLES, "amount": cny("100.00")}, "crash-key"),
    ],
    ids=["mid-balance-updates", "after-journal-insert"],
)
def test_a_crash_mid_transfer_is_a_500_problem_with_the_request_id_and_writes_nothing(
    database_url, make_app: MakeApp, monkeypatch, target: str, body: dict[str, Any], idempotency_key: str | None
) -> None:
    app = make_app(database_url=database_url)
    with TestClient(app) as client:
        before = snapshot(client)
        if target == "apply":
            # The balance UPDATEs (sent in one batch with the inserts on PostgreSQL).
            monkeypatch.setattr(fastpath._APPLY_PREPARED, "execute",
                                _crash_after(1, fastpath._APPLY_PREPARED.execute))
        else:
            monkeypatch.setattr(repository.JournalsRepository, "post",
                                _after_then_crash(repository.JournalsRepository.post))
        headers = {"X-Request-ID": "trace-mid-transfer-42"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        r = client.post("/transfers", json=body, headers=headers)
        monkeypatch.undo()

        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["x-request-id"] == "trace-mid-transfer-42"
        problem = r.json()
        assert problem["type"] == PROBLEM + "internal-error"
        assert problem["title"] == "Internal server error"
        assert problem["request_id"] == "trace-mid-transfer-42"
        assert "nothing was committed" in problem["detail"]
        assert "simulated crash" not in r.text  # no internals leak

        assert snapshot(client) == before
        report = client.get("/invariants").json()
        assert report["ok"], report
        # The service is still healthy and the same movement now succeeds, once.
        retry = client.post("/transfers", json=body, headers=headers)
        assert retry.status_code == 201, retry.text
        assert len(snapshot(client)[0]) == len(before[0]) + 1
        assert client.get("/invariants").json()["ok"]


def _crashing_kit_app(tmp_path):  # type: ignore[no-untyped-def]
    router = APIRouter()

    @router.get("/boom")
    def boom() -> None:
        raise ZeroDivisionError("secret internals")

    @router.post("/boom")
    async def boom_post() -> None:
        raise KeyError("secret internals")

    base = model_base("CrashModel")
    settings = ServiceSettings(data_dir=tmp_path)
    db = Database(f"sqlite:///{tmp_path / 'crash.sqlite3'}", base.metadata)
    return build_service_app(name="crashy", title="Crashy", description="crashes", settings=settings,
                             database=db, clock=frozen_clock(), routers=[router])


def test_a_crash_in_any_kit_built_service_is_problem_json_with_the_request_id(tmp_path) -> None:
    with TestClient(_crashing_kit_app(tmp_path)) as client:
        echoed = client.get("/boom", headers={"X-Request-ID": "abc-123"})
        assert echoed.status_code == 500
        assert echoed.headers["content-type"] == "application/problem+json"
        assert echoed.headers["x-request-id"] == "abc-123"
        assert echoed.json()["request_id"] == "abc-123"
        assert echoed.json()["type"] == PROBLEM + "internal-error"
        assert "secret internals" not in echoed.text

        generated = client.post("/boom", json={})
        assert generated.status_code == 500
        rid = generated.headers["x-request-id"]
        assert re.fullmatch(r"req_[0-9a-f]{32}", rid)
        assert generated.json()["request_id"] == rid

        # An id a client cannot safely have logged (spaces, too long) is replaced, not echoed.
        for unsafe in ("has spaces", "x" * 200):
            r = client.get("/boom", headers={"X-Request-ID": unsafe})
            assert r.headers["x-request-id"] != unsafe
            assert r.json()["request_id"] == r.headers["x-request-id"]
