"""Payments stopped (SIGSTOP) past the gateway's read timeout with transfers in flight."""

from __future__ import annotations

from tests.faults.regulator import audit_after_recovery, report
from tests.faults.stack import Stack
from tests.faults.traffic import LI_WEI, ZHANG_MIN, Wallet, fund_new_accounts, new_key, send_together

IN_FLIGHT = 10


def test_transfers_that_timed_out_while_payments_was_stopped_are_reconciled_and_counted_once(
        stack: Stack, wallet: Wallet) -> None:
    accounts = fund_new_accounts(wallet, 1)  # the gateway now knows every account's owner
    ring = [LI_WEI, accounts[-1], ZHANG_MIN]
    stack.pause("payments")
    sent = send_together(stack.gateway_url, [
        (ring[n % 3], ring[(n + 1) % 3], f"{20 + n}.{n:02d}", new_key() if n % 2 else None)
        for n in range(IN_FLIGHT)])
    # Resumed at once, within the gateway's deadline: what payments runs now must be reconciled as
    # applied and counted, keyed or not; what it refuses past the deadline as not applied.
    stack.resume("payments")

    assert [(s.status, s.problem) for s in sent] == [(504, "upstream-timeout")] * IN_FLIGHT, \
        "\n".join(map(str, sent))
    findings = audit_after_recovery(stack, wallet, sent)
    assert not findings, report(findings, stack)
