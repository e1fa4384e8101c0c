"""kill -9 of the gateway while Demo Wallet Co's clients send transfers through it."""

from __future__ import annotations

from tests.faults.regulator import audit_after_recovery, report
from tests.faults.stack import Stack
from tests.faults.traffic import Load, Wallet, fund_new_accounts


def test_gateway_killed_mid_load_then_restarted_every_movement_is_logged_and_counted_once(
        stack: Stack, wallet: Wallet) -> None:
    accounts = fund_new_accounts(wallet, 2)
    load = Load(stack.gateway_url, accounts).start()
    try:
        load.wait_for_successes(12)
        stack.kill("gateway")  # in-flight senders lose their connection; nothing answers them
        stack.start("gateway")  # open intents are reconciled at start-up
        load.wait_for_successes(6)
    finally:
        sent = load.stop()

    assert any(s.status is None for s in sent), "the kill interrupted nothing"
    findings = audit_after_recovery(stack, wallet, sent)
    assert not findings, report(findings, stack)
