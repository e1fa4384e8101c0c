"""kill -9 of payments, or of the gateway, while Demo Wallet Co's clients send transfers
through the gateway; restarted, and audited."""

from __future__ import annotations

import time

import pytest

from tests.faults.regulator import audit_after_recovery, report
from tests.faults.stack import Stack
from tests.faults.traffic import Load, Wallet, fund_new_accounts


# payments killed: senders meet a dead upstream (503 nothing sent, 504 sent and unanswered) and
# the gateway reconciles what it forwarded. The gateway killed: senders lose their connection,
# and the restarted gateway reconciles the intents it finds open in its log.
@pytest.mark.parametrize("killed", ["payments", "gateway"])
def test_killed_mid_load_then_restarted_every_movement_is_logged_and_counted_once(
        stack: Stack, wallet: Wallet, killed: str) -> None:
    accounts = fund_new_accounts(wallet, 2)
    load = Load(stack.gateway_url, accounts).start()
    try:
        load.wait_for_successes(12)
        stack.kill(killed)
        time.sleep(0.3)  # the senders carry on against the dead process
        stack.start(killed)
        load.wait_for_successes(6)
    finally:
        sent = load.stop()

    assert any(not s.succeeded for s in sent), "the kill interrupted nothing"
    findings = audit_after_recovery(stack, wallet, sent)
    assert not findings, report(findings, stack)
