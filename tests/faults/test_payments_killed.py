"""kill -9 of payments while Demo Wallet Co's clients send transfers through the gateway."""

from __future__ import annotations

import time

from tests.faults.regulator import audit_after_recovery, report
from tests.faults.stack import Stack
from tests.faults.traffic import Load, Wallet, fund_new_accounts


def test_payments_killed_mid_load_then_restarted_every_movement_is_logged_and_counted_once(
        stack: Stack, wallet: Wallet) -> None:
    accounts = fund_new_accounts(wallet, 2)
    load = Load(stack.gateway_url, accounts).start()
    try:
        load.wait_for_successes(12)
        stack.kill("payments")
        time.sleep(0.3)  # senders meet a dead upstream: 503 (nothing sent) or 504 (sent, unanswered)
        stack.start("payments")
        load.wait_for_successes(6)
    finally:
        sent = load.stop()

    assert any(not s.succeeded for s in sent), "the kill interrupted nothing"
    findings = audit_after_recovery(stack, wallet, sent)
    assert not findings, report(findings, stack)
