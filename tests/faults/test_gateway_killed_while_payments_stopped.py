"""The issue's scenario (a): payments stopped, a keyed 777.00 transfer sent through the gateway,
the gateway killed, payments resumed, the gateway restarted."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.regulator import (
    RECONCILE_TIMEOUT_S,
    balance_minor,
    entries_closing,
    ledger_journals,
    regulators_audit,
    report,
    wait_for_intent,
    wait_until_reconciled,
)
from tests.faults.stack import GATEWAY_PATIENCE_S, Stack
from tests.faults.traffic import LI_WEI, ZHANG_MIN, Wallet, fund_new_accounts, new_key

AMOUNT_MINOR = 77_700
DEADLINE_AFTER_SEND_S = GATEWAY_PATIENCE_S + 1  # the gateway's deadline header: its patience + 1 s


# The deadline fence is the same code on both databases: its branch runs on SQLite only, to keep
# the suite within its time.
@pytest.mark.parametrize(("stack", "resumed"), [
    ("sqlite", "before-the-deadline"),
    pytest.param("postgres", "before-the-deadline", marks=pytest.mark.postgres),
    ("sqlite", "after-the-deadline"),
], indirect=["stack"])
def test_keyed_transfer_orphaned_by_a_gateway_crash_is_debited_only_if_logged_and_counted_once(
        stack: Stack, wallet: Wallet, resumed: str) -> None:
    fund_new_accounts(wallet, 0)
    before = balance_minor(stack, LI_WEI)
    key = new_key()

    stack.pause("payments")
    sent_at = time.monotonic()
    with ThreadPoolExecutor(1) as sender, Wallet(stack.gateway_url) as orphaned:
        pending = sender.submit(orphaned.transfer, LI_WEI, ZHANG_MIN, "777.00", key)
        intent = wait_for_intent(stack, key)
        stack.kill("gateway")
        first = pending.result(timeout=10)
    assert first.status is None, str(first)  # the sender never heard back
    if resumed == "after-the-deadline":
        time.sleep(max(0.0, sent_at + DEADLINE_AFTER_SEND_S + 0.5 - time.monotonic()))
    stack.resume("payments")
    stack.start("gateway")

    entries = wait_until_reconciled(stack, RECONCILE_TIMEOUT_S)
    reconciled = [e for e in entries_closing(entries, intent) if e["phase"] == "reconciled"]
    retry = wallet.retry_until_settled(first, RECONCILE_TIMEOUT_S)
    journals = [j for j in ledger_journals(stack) if j.key == key]

    assert retry.status == 201, str(retry)
    assert [j.id for j in journals] == [retry.journal_id]  # applied once, whichever attempt ran it
    assert before - balance_minor(stack, LI_WEI) == AMOUNT_MINOR
    assert len(reconciled) == 1, entries_closing(entries, intent)
    if resumed == "before-the-deadline":
        # Payments ran it when it resumed: the reconciled entry counts it, the retry replays it.
        assert (reconciled[0]["status"], reconciled[0]["counts_toward"]) == (201, ["limits", "history"])
        assert retry.replayed
    else:
        # Payments refused it by the deadline: nothing moved, so the retry ran it, and counts.
        assert (reconciled[0]["error"], reconciled[0]["counts_toward"]) == ("not-applied", None)
        assert not retry.replayed
    findings = regulators_audit(stack, [first, retry], [retry] if retry.replayed else [])
    assert not findings, report(findings, stack)
