"""Narrated scenarios: `fintech-sandbox demo [name]` plays the seed's examples against the
running sandbox, call by call (see sandbox/demo/narration.py for what each step prints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandbox.demo import advisor, credit, faults, openbanking, payments, regulator
from sandbox.demo.narration import Scene


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str  # one line, for --list
    play: Callable[[Scene], None]


# In the order `fintech-sandbox demo` plays them: money moves first, the regulator's view last.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("red-packet", "Li Wei sends Zhang Min a 66.66 CNY red packet: both balances move, no fee",
             payments.red_packet),
    Scenario("merchant-qr", "Li Wei scans Lanzhou Noodle House's QR and pays 25.00 CNY; the merchant pays 0.6%",
             payments.merchant_qr),
    Scenario("cross-border", "1,000.00 CNY to a US wallet: correspondent (days, 10x the fee) against ripple "
             "(seconds), paid on ripple", payments.cross_border),
    Scenario("loan-310", "Chen's Tea Stall's 310 loan: scored on alternative data, decided and disbursed with "
             "no human step, repaid under a mandate", credit.loan_310),
    Scenario("portfolio-60-40", "a 30-year-old with medium risk gets about 60/40, funded from her wallet; "
             "0.25% against 1.5% fees over 30 years", advisor.portfolio_60_40),
    Scenario("tpp-journey", "an open-banking TPP: token, consent, the PSU authorises, accounts, a payment, "
             "found in her transactions and the audit log", openbanking.tpp_journey),
    Scenario("aml", "structuring (three top-ups just below 10,000 CNY opens an alert) and a sanctioned "
             "payee blocked before the ledger", regulator.aml),
    Scenario("exit-report", "the regulator admits a remittance firm, sees it breach a limit, reads its "
             "exit report and ends its test", regulator.exit_report),
    Scenario("retry-through-timeout", "the regulator injects a lost answer: a transfer times out after the "
             "ledger applied it, the retry with its Idempotency-Key is replayed, the money moves once",
             faults.retry_through_timeout),
)


def scenario(name: str) -> Scenario:
    for candidate in SCENARIOS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
