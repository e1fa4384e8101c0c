"""The hash-chained audit log: every request leaves an entry; editing or deleting a stored
entry is detected by the endpoint and by the CLI, which name the first broken entry."""

from __future__ import annotations

import sqlite3

from fastapi.testclient import TestClient

from sandbox.gateway import cli_verify
from sandbox.gateway.auditlog import GENESIS, ChainHead, verify_chain
from services.common.clock import frozen_clock
from tests.gateway.conftest import LI_WEI, REGULATOR, WALLET_KEY, Sandbox, build_gateway


def _traffic(sandbox: Sandbox, n: int = 5) -> None:
    for _ in range(n):
        assert sandbox.transfer(WALLET_KEY, "1.00", source=LI_WEI).status_code == 201


def _tamper(sandbox: Sandbox, sql: str) -> None:
    with sqlite3.connect(sandbox.data_dir / "gateway.sqlite3") as conn:
        conn.execute(sql)


def test_every_request_is_chained(sandbox: Sandbox) -> None:
    _traffic(sandbox, 3)
    sandbox.client.get("/payments/accounts/acc_00000000000000000000000001")  # no key: logged too
    entries = sandbox.entries(with_intents=True)
    assert [e["index"] for e in entries] == [0, 1, 2, 3, 4, 5, 6]
    # Each transfer is written ahead (its intent, before it is forwarded), then its outcome.
    assert [e["phase"] for e in entries] == ["intent", "outcome"] * 3 + [None]
    assert [e["intent_index"] for e in entries[1:6:2]] == [0, 2, 4]
    assert entries[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert entries[6]["status"] == 401
    result = sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()
    assert result == {"ok": True, "size": 7, "head_hash": entries[6]["hash"], "first_broken": None}


def test_editing_one_entry_is_named_by_the_verify_endpoint(sandbox: Sandbox) -> None:
    _traffic(sandbox)
    _tamper(sandbox, "UPDATE audit_log SET amount = '0.01' WHERE idx = 2")
    result = sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()
    assert result["ok"] is False
    assert result["first_broken"]["index"] == 2
    assert "edited" in result["first_broken"]["reason"]


def test_editing_one_entry_is_named_by_the_cli(sandbox: Sandbox, capsys) -> None:  # type: ignore[no-untyped-def]
    _traffic(sandbox)
    assert cli_verify.main(["--data-dir", str(sandbox.data_dir)]) == 0
    _tamper(sandbox, "UPDATE audit_log SET status = 200 WHERE idx = 3")
    assert cli_verify.main(["--data-dir", str(sandbox.data_dir)]) == 1
    assert "BROKEN at entry 3" in capsys.readouterr().out


def test_rehashing_an_edited_entry_breaks_the_next_link(sandbox: Sandbox) -> None:
    _traffic(sandbox)
    # Change the first hex digit (to another one: a hash may already start with 'f').
    _tamper(sandbox, "UPDATE audit_log SET hash = CASE WHEN hash LIKE 'f%' THEN '0' ELSE 'f' END"
                     " || substr(hash, 2) WHERE idx = 1")
    result = sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()
    assert result["first_broken"]["index"] == 1


def test_deleting_an_entry_is_named(sandbox: Sandbox) -> None:
    _traffic(sandbox)
    _tamper(sandbox, "DELETE FROM audit_log WHERE idx = 1")
    result = sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()
    assert result["first_broken"] == {"index": 1, "reason": "entry 1 is missing (next stored entry is 2)"}


def test_a_receipt_no_longer_matches_after_tampering(sandbox: Sandbox) -> None:
    response = sandbox.transfer(WALLET_KEY, "1.00", source=LI_WEI)
    _traffic(sandbox, 2)
    _tamper(sandbox, "UPDATE audit_log SET amount = '100.00' WHERE idx = 0")
    check = sandbox.client.get("/sandbox/receipts/0", headers={"X-API-Key": WALLET_KEY}, params={
        "hash": response.headers["x-sandbox-receipt"].split("hash=")[1]}).json()
    assert check["chain_ok"] is False


def test_the_chain_continues_after_a_restart(sandbox: Sandbox, payments_app) -> None:  # type: ignore[no-untyped-def]
    _traffic(sandbox, 2)
    import httpx

    app = build_gateway(sandbox.data_dir, frozen_clock(), {"payments": httpx.ASGITransport(app=payments_app)})
    with TestClient(app) as client:
        response = client.post("/payments/transfers", headers={"X-API-Key": WALLET_KEY}, json={
            "from_account_id": LI_WEI, "to_account_id": "acc_00000000000000000000000002",
            "amount": {"amount": "1.00", "currency": "CNY"}})
        assert response.headers["x-sandbox-receipt"].startswith("index=5;")  # after its intent, 4
        assert client.get("/sandbox/audit/verify", headers=REGULATOR).json()["ok"] is True


def test_verify_chain_on_plain_rows() -> None:
    head = ChainHead()
    rows = [head.seal({"at": "t", "status": 200, "path": f"/p/{i}"}) for i in range(3)]
    assert verify_chain(rows).ok
    rows[1]["path"] = "/elsewhere"
    assert verify_chain(rows).first_broken.index == 1  # type: ignore[union-attr]


def test_editing_what_an_entry_counts_toward_is_named(sandbox: Sandbox) -> None:
    """Turning a replay (counts toward nothing) back into a counted movement breaks the chain."""
    for _ in range(2):
        sandbox.transfer(WALLET_KEY, "1.00", source=LI_WEI, **{"Idempotency-Key": "once"})
    assert [e["counts_toward"] for e in sandbox.entries(with_intents=True)] == [None, ["limits", "history"], []]
    _tamper(sandbox, "UPDATE audit_log SET counts = NULL WHERE idx = 2")
    result = sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()
    assert result["first_broken"]["index"] == 2


def test_entries_from_before_traces_still_verify_and_a_changed_trace_id_is_named(sandbox: Sandbox) -> None:
    """A log written before entries had a trace id (a database from then: the column is added at
    start-up, NULL) verifies as it did; changing one entry's trace id breaks it."""
    _traffic(sandbox, 2)
    assert all(len(e["trace_id"]) == 32 for e in sandbox.entries(with_intents=True))
    head = ChainHead()
    before_traces = [head.seal({"at": "t", "status": 200, "path": f"/p/{i}", "trace_id": None}) for i in range(2)]
    assert verify_chain({k: v for k, v in row.items() if k != "trace_id"} for row in before_traces).ok
    _tamper(sandbox, "UPDATE audit_log SET trace_id = '00000000000000000000000000000001' WHERE idx = 1")
    result = sandbox.client.get("/sandbox/audit/verify", headers=REGULATOR).json()
    assert result["first_broken"]["index"] == 1
