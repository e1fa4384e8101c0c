"""Payments killed (-9) right after it claimed an Idempotency-Key: the key is not stuck."""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update

from sandbox.gateway.proxy import ASSIGNED_KEY_PREFIX
from services.common.demo import WALLET_CO
from services.common.idempotency import fingerprint
from services.common.ids import new_id
from services.payments.models import IdempotencyKeys
from tests.faults.regulator import (
    RECONCILE_TIMEOUT_S,
    entries_closing,
    ledger_journals,
    regulators_audit,
    report,
    wait_for_intent,
    wait_until_reconciled,
)
from tests.faults.stack import LEASE_S, Stack
from tests.faults.traffic import LI_WEI, ZHANG_MIN, Wallet, fund_new_accounts, new_key

# "Retry shortly": seconds (the lease, or the gateway's reconciler rounds), not the day the issue saw.
SHORT_RETRY_AFTER_S = 10
# Once the lease is over the retry takes the claim over at once; allow a few reconciler rounds.
SETTLED_AFTER_LEASE_S = 5


def leave_claim_as_a_kill_would(stack: Stack, key: str, body: dict[str, Any]) -> None:
    """The row a payments process killed between claiming a key and finishing its work leaves:
    the claim committed (in flight, its token), no journal, nothing saved. Written while payments
    is down, before the gateway can ask about the key (it would fence a key with no record), with
    its lease started only once payments is back (`start_lease`), whatever the restart takes."""
    later = datetime.now(UTC) + timedelta(seconds=120)
    engine = stack.database("payments")
    try:
        with engine.begin() as conn:
            conn.execute(insert(IdempotencyKeys).values(
                id=new_id("idem"), scope=WALLET_CO, key=key,
                fingerprint=fingerprint("POST", "/transfers", json.dumps(body).encode()),
                state="in_flight", created_at=datetime.now(UTC), token=secrets.token_hex(16), claimed_at=later))
    finally:
        engine.dispose()


def start_lease(stack: Stack, key: str) -> float:
    """The claim's lease runs from now; returns when it runs out (monotonic seconds)."""
    engine = stack.database("payments")
    try:
        with engine.begin() as conn:
            t = IdempotencyKeys
            moved = conn.execute(update(t).where(t.c.key == key, t.c.state == "in_flight")
                                 .values(claimed_at=datetime.now(UTC))).rowcount
    finally:
        engine.dispose()
    assert moved == 1, f"the claim on {key} is no longer in flight"
    return time.monotonic() + LEASE_S


def test_a_key_claimed_by_a_killed_payments_is_in_flight_within_its_lease_then_runs_once(
        stack: Stack, wallet: Wallet) -> None:
    fund_new_accounts(wallet, 0)
    key = new_key()

    # The gateway forwards a keyed transfer and payments dies holding it: the sender gets 504.
    stack.pause("payments")
    with ThreadPoolExecutor(1) as sender, Wallet(stack.gateway_url) as client:
        pending = sender.submit(client.transfer, LI_WEI, ZHANG_MIN, "55.50", key)
        wait_for_intent(stack, key)
        stack.kill("payments")
        first = pending.result(timeout=10)
    assert (first.status, first.problem) == (504, "upstream-timeout"), str(first)
    leave_claim_as_a_kill_would(stack, key, first.body)
    stack.start("payments")
    lease_ends = start_lease(stack, key)

    within = wallet.retry(first)
    assert time.monotonic() < lease_ends, "the retry came after the lease: lengthen it"
    assert (within.status, within.problem) == (409, "idempotency-key-in-flight"), str(within)
    assert within.retry_after is not None and 1 <= int(within.retry_after) <= SHORT_RETRY_AFTER_S, str(within)

    time.sleep(max(0.0, lease_ends - time.monotonic()))
    after = wallet.retry_until_settled(first, SETTLED_AFTER_LEASE_S)
    assert (after.status, after.replayed) == (201, False), f"{after} (a retry after the lease runs it)"
    assert [j.id for j in ledger_journals(stack) if j.key == key] == [after.journal_id]
    findings = regulators_audit(stack, [first, within, after])
    assert not findings, report(findings, stack)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)  # the keyed test covers both databases
def test_an_unkeyed_transfer_claimed_by_a_killed_payments_is_reconciled_as_not_applied_after_the_lease(
        stack: Stack, wallet: Wallet) -> None:
    """No sender will ever retry the key the gateway assigned: reconciliation alone must close it."""
    fund_new_accounts(wallet, 0)  # keyed by the sender: the only key the gateway assigns is this one's

    stack.pause("payments")
    with ThreadPoolExecutor(1) as sender, Wallet(stack.gateway_url) as client:
        pending = sender.submit(client.transfer, LI_WEI, ZHANG_MIN, "44.40")
        intent = wait_for_intent(stack, lambda e: e["idempotency_key"].startswith(ASSIGNED_KEY_PREFIX))
        stack.kill("payments")
        first = pending.result(timeout=10)
    assert (first.status, first.problem) == (504, "upstream-timeout"), str(first)
    leave_claim_as_a_kill_would(stack, intent["idempotency_key"], first.body)
    stack.start("payments")
    start_lease(stack, intent["idempotency_key"])

    entries = wait_until_reconciled(stack, LEASE_S + RECONCILE_TIMEOUT_S)
    closing = [(e["phase"], e["status"], e["error"]) for e in entries_closing(entries, intent)]
    assert ("reconciled", 0, "not-applied") in closing, f"intent #{intent['index']} ({intent['idempotency_key']}) " \
        f"followed only by {closing}"
    assert [j for j in ledger_journals(stack) if j.key == intent["idempotency_key"]] == []
    findings = regulators_audit(stack, [first])
    assert not findings, report(findings, stack)
