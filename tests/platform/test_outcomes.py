"""The outcome read the gateway reconciles with (services/common/outcomes.py):
`GET /_sandbox/idempotency-keys/{key}?fingerprint=…[&scope=…]` says whether the request with that
key and fingerprint is `done` (and its status), `in_flight` (and until when), or `absent`, and
never shows another request's or another scope's record. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.clock import frozen_clock
from services.common.idempotency import Idempotency, fingerprint, wall_clock
from services.payments.main import PaymentsSettings, create_app
from tests.platform.test_idempotency import PROBLEM, TRANSFER, _key

TRANSFER_BYTES = json.dumps(TRANSFER).encode()
WALLET = {"kind": "personal", "owner_name": "Li Wei", "currency": "CNY"}
WALLET_CO = "ptp_00000000000000000000000001"
DEMO_TPP = "ptp_00000000000000000000000002"


@pytest.fixture
def app(database_url: str | None, tmp_path: Path) -> Iterator[FastAPI]:
    application = create_app(PaymentsSettings(data_dir=tmp_path, database_url=database_url),
                             clock=frozen_clock())
    with TestClient(application):
        yield application


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def _outcome(client: TestClient, key: str, digest: str, **params: str) -> dict[str, Any]:
    r = client.get(f"/_sandbox/idempotency-keys/{key}", params={"fingerprint": digest, **params})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def test_a_finished_request_reads_done_with_its_status(client: TestClient) -> None:
    moved = client.post("/transfers", json=TRANSFER, headers=_key("paid"))
    assert moved.status_code == 201
    refused = client.post("/transfers", json={**TRANSFER, "amount": {"amount": "9999.00", "currency": "CNY"}},
                          headers=_key("too-much"))
    assert refused.status_code == 409

    digest = fingerprint("POST", "/transfers", TRANSFER_BYTES)
    assert _outcome(client, "paid", digest) == {
        "key": "paid", "scope": "direct", "fingerprint": digest, "state": "done", "status_code": 201,
        "lease_expires_at": None, "created_at": "2026-01-05T09:00:00Z",
    }
    # A saved refusal is an outcome too: nothing moved, and the key replays it.
    too_much = json.dumps({**TRANSFER, "amount": {"amount": "9999.00", "currency": "CNY"}}).encode()
    read = _outcome(client, "too-much", fingerprint("POST", "/transfers", too_much))
    assert (read["state"], read["status_code"]) == ("done", 409)


def test_the_gateways_fingerprint_finds_the_record_whatever_the_key_order_or_spacing(client: TestClient) -> None:
    client.post("/transfers", json=TRANSFER, headers=_key("reordered"))
    as_forwarded = json.dumps(dict(reversed(list(TRANSFER.items()))), indent=2).encode()
    assert _outcome(client, "reordered", fingerprint("POST", "/transfers", as_forwarded))["state"] == "done"


def test_a_request_still_running_reads_in_flight_until_its_lease_expires(app: FastAPI, client: TestClient) -> None:
    """Read from inside the request's own unit of work, after its claim committed."""
    digest = fingerprint("POST", "/transfers", TRANSFER_BYTES)
    claimed_at = wall_clock()
    running = Idempotency(app.state.idempotency_table, app.state.clock, "running", scope="direct",
                          fingerprint=digest, database=app.state.db, lease=app.state.idempotency_lease,
                          now=lambda: claimed_at)
    seen: dict[str, Any] = {}

    def work() -> dict[str, str]:
        seen.update(_outcome(client, "running", digest))
        return {"id": "whatever the work returns"}

    with app.state.db.session() as session:
        running.run(session, work)

    expires = (claimed_at + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    assert seen == {"key": "running", "scope": "direct", "fingerprint": digest, "state": "in_flight",
                    "status_code": None, "lease_expires_at": expires, "created_at": "2026-01-05T09:00:00Z"}
    assert _outcome(client, "running", digest)["state"] == "done"


def test_no_record_reads_absent(client: TestClient) -> None:
    digest = fingerprint("POST", "/transfers", TRANSFER_BYTES)
    assert _outcome(client, "never-sent", digest) == {
        "key": "never-sent", "scope": None, "fingerprint": digest, "state": "absent", "status_code": None,
        "lease_expires_at": None, "created_at": None,
    }
    assert _outcome(client, "never-sent", digest, scope=DEMO_TPP)["scope"] == DEMO_TPP


def test_another_request_or_another_scope_never_reads_the_record(client: TestClient) -> None:
    opened = client.post("/accounts", json=WALLET, headers=_key("shared", **{"X-Sandbox-Participant": WALLET_CO}))
    assert opened.status_code == 201
    digest = fingerprint("POST", "/accounts", json.dumps(WALLET).encode())

    assert _outcome(client, "shared", digest, scope=WALLET_CO)["state"] == "done"
    assert _outcome(client, "shared", digest)["scope"] == WALLET_CO
    # Demo TPP's key of the same name, the direct scope, and another body under the key: nothing.
    assert _outcome(client, "shared", digest, scope=DEMO_TPP)["state"] == "absent"
    assert _outcome(client, "shared", digest, scope="direct")["state"] == "absent"
    other_body = fingerprint("POST", "/accounts", json.dumps({**WALLET, "owner_name": "Zhang Min"}).encode())
    assert _outcome(client, "shared", other_body)["state"] == "absent"
    assert _outcome(client, "shared", fingerprint("POST", "/transfers", json.dumps(WALLET).encode()))["state"] == "absent"


def test_a_key_holding_a_slash_is_read_whole(client: TestClient) -> None:
    client.post("/transfers", json=TRANSFER, headers=_key("order/42"))
    digest = fingerprint("POST", "/transfers", TRANSFER_BYTES)
    read = client.get("/_sandbox/idempotency-keys/order%2F42", params={"fingerprint": digest}).json()
    assert (read["key"], read["state"]) == ("order/42", "done")


@pytest.mark.parametrize("digest", ["", "abc", "G" * 64, "A" * 64], ids=["empty", "short", "not-hex", "upper-case"])
def test_a_malformed_fingerprint_is_a_422_naming_it(client: TestClient, digest: str) -> None:
    r = client.get("/_sandbox/idempotency-keys/k", params={"fingerprint": digest})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == PROBLEM + "validation-error"
    assert [e["field"] for e in r.json()["errors"]] == ["query.fingerprint"]


def _service_app(name: str, tmp_path: Path) -> FastAPI:
    from services.advisor.main import AdvisorSettings, create_app as advisor_app
    from services.credit.main import CreditSettings, create_app as credit_app
    from services.openbanking.main import OpenBankingSettings, create_app as openbanking_app

    factories = {"payments": (PaymentsSettings, create_app), "advisor": (AdvisorSettings, advisor_app),
                 "openbanking": (OpenBankingSettings, openbanking_app), "credit": (CreditSettings, credit_app)}
    settings, factory = factories[name]
    return factory(settings(data_dir=tmp_path / name), clock=frozen_clock())


@pytest.mark.parametrize("name", ["payments", "advisor", "openbanking"])
def test_every_service_that_keeps_keys_serves_the_read(name: str, tmp_path: Path) -> None:
    with TestClient(_service_app(name, tmp_path)) as client:
        read = _outcome(client, "k", "0" * 64)
        assert read["state"] == "absent"
        assert "/_sandbox/idempotency-keys/{key}" in client.get("/openapi.json").json()["paths"]


def test_credit_keeps_no_kit_keys_and_serves_no_read(tmp_path: Path) -> None:
    with TestClient(_service_app("credit", tmp_path)) as client:
        assert client.get("/_sandbox/idempotency-keys/k", params={"fingerprint": "0" * 64}).status_code == 404
