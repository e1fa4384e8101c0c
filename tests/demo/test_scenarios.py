"""Each narrated scenario is a test: `fintech-sandbox demo NAME` runs against one launched
sandbox (reset to the seeded state before each scenario), exits 0, narrates what it claims, and
the API shows afterwards what the narration said happened. A scenario whose claim the sandbox
does not bear out exits non-zero with a message that says so."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from sandbox.demo import SCENARIOS
from services.common.demo import DEMO_REGULATOR_KEY, WALLET_CO, demo_account
from tests.support.ports import free_port_offset
from tests.support.stack import ROOT, Sandbox

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher's clean-up relies on Linux")

REGULATOR = {"X-API-Key": DEMO_REGULATOR_KEY}
WALLET = {"X-API-Key": "sbx_demo_wallet_key"}
LENDER = {"X-API-Key": "sbx_demo_lender_key"}
ROBO = {"X-API-Key": "sbx_demo_robo_key"}
LI_WEI = demo_account("Li Wei").id
ZHANG_MIN = demo_account("Zhang Min").id
CHEN = demo_account("Chen's Tea Stall").id
CONSOLE_LINK = re.compile(r"console: http://127\.0\.0\.1:(\d+)/requests/(req_[0-9a-f]{32})$", re.MULTILINE)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    running = Sandbox(tmp_path_factory.mktemp("demo"), free_port_offset())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def demo(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    """`fintech-sandbox demo …` as a user runs it (not on a terminal: plain text)."""
    return subprocess.run([sys.executable, "-m", "sandbox", "demo", *args, "--port-offset", str(sandbox.offset)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def played(sandbox: Sandbox, name: str) -> str:
    sandbox.reset()
    result = demo(sandbox, name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PASSED {name}:" in result.stdout
    assert "FAILED" not in result.stdout
    return result.stdout


def balance(sandbox: Sandbox, account_id: str) -> str:
    answer = httpx.get(f"{sandbox.url}/payments/accounts/{account_id}/balance", headers=WALLET)
    return answer.json()["available"]["amount"]


def check_every_call_is_narrated(out: str, sandbox: Sandbox) -> None:
    """Each numbered step shows why, method and path, whose key, the answer and its console link."""
    steps = re.findall(r"^ ?\d+\. .+\n    ([A-Z]+) (/\S+)  as (.+) \((sbx_\S+)\)\n(?:    [{\[].*\n)?    → (\d{3}) ",
                       out, re.MULTILINE)
    links = CONSOLE_LINK.findall(out)
    assert steps and len(links) == len(steps), (len(steps), len(links), out)
    assert {int(port) for port, _ in links} == {8005 + sandbox.offset}
    assert len({rid for _, rid in links}) == len(links), "every call has its own X-Request-ID"


def test_list_names_every_scenario_with_a_line() -> None:
    result = subprocess.run([sys.executable, "-m", "sandbox", "demo", "--list"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [s.name for s in SCENARIOS]
    assert all(len(line.split(maxsplit=1)[1]) > 20 for line in lines)


def test_red_packet_moves_both_balances(sandbox: Sandbox) -> None:
    out = played(sandbox, "red-packet")
    check_every_call_is_narrated(out, sandbox)
    assert "POST /payments/transfers  as Demo Wallet Co (sbx_demo_wallet_key)" in out
    assert re.search(r"gateway: approve; score=0; rules=none; ruleset=\S+ · receipt index=\d+; hash=[0-9a-f]{64}", out)
    assert "✓ Li Wei's balance fell by 66.66 CNY (5000.00 → 4933.34)" in out
    assert (balance(sandbox, LI_WEI), balance(sandbox, ZHANG_MIN)) == ("4933.34", "1266.66")


def test_the_request_id_is_the_gateways(sandbox: Sandbox) -> None:
    """The console link names the id the gateway logged the call under."""
    out = played(sandbox, "red-packet")
    transfer = out[out.index("POST /payments/transfers"):]
    request_id = CONSOLE_LINK.search(transfer).group(2)
    entries = httpx.get(f"{sandbox.url}/sandbox/audit/entries", params={"request_id": request_id},
                        headers=REGULATOR).json()["data"]
    assert [(e["path"], e["status"]) for e in entries] == [("/payments/transfers", 0), ("/payments/transfers", 201)]


def test_merchant_qr_pays_the_merchant_less_the_fee(sandbox: Sandbox) -> None:
    out = played(sandbox, "merchant-qr")
    assert "✓ the merchant fee is 0.6% of 25.00: 0.15 CNY" in out
    assert "✓ the noodle house received 24.85 CNY after the fee" in out
    assert balance(sandbox, demo_account("Lanzhou Noodle House").id) == "24.85"


def test_cross_border_ripple_against_correspondent(sandbox: Sandbox) -> None:
    out = played(sandbox, "cross-border")
    assert "ripple's fee is about a tenth of the correspondent's: 17.80 against 178.00 CNY (10.0x)" in out
    assert re.search(r"the correspondent rail settles in days \(1-3 business days: .*\), ripple in seconds "
                     r"\(3-5 seconds\)", out)
    assert "✓ Alice received the quoted 137.81 USD" in out
    assert balance(sandbox, demo_account("Alice Example").id) == "2637.81"


def test_loan_310_is_decided_and_disbursed_with_no_human_step(sandbox: Sandbox) -> None:
    out = played(sandbox, "loan-310")
    assert "as Demo Lender (sbx_demo_lender_key)" in out
    assert "decision.outcome=approve" in out
    assert "✓ approved by the scorecard itself: no referral to a human underwriter" in out
    assert "✓ the money is in the borrower's wallet (800.00 → 20800.00 CNY)" in out
    assert balance(sandbox, CHEN) == "19067.62"  # 800 + 20,000 - the first instalment, 1,732.38
    loan_id = re.search(r"POST /credit/loans/(loan_\w+)/disbursement", out).group(1)
    loan = httpx.get(f"{sandbox.url}/credit/loans/{loan_id}", headers=LENDER).json()
    assert (loan["status"], loan["principal"]["amount"], loan["repaid"]["amount"]) == ("disbursed", "20000.00", "1732.38")


def test_portfolio_60_40_and_the_fee_gap(sandbox: Sandbox) -> None:
    out = played(sandbox, "portfolio-60-40")
    assert "✓ about 60/40: 61.1% equity funds, 38.9% bond funds" in out
    assert "the fee gap costs her 82753.59 CNY" in out
    accounts = httpx.get(f"{sandbox.url}/advisor/accounts", headers=ROBO).json()["data"]
    # Worth what was invested, but for the rounding of each fund's units (down, to six places).
    assert len(accounts) == 1 and abs(Decimal(accounts[0]["value"]["amount"]) - Decimal("1000.00")) < Decimal("0.10")
    assert balance(sandbox, LI_WEI) == "4000.00"


def test_tpp_journey_ends_in_her_statement_and_the_log(sandbox: Sandbox) -> None:
    out = played(sandbox, "tpp-journey")
    check_every_call_is_narrated(out, sandbox)
    assert "as Demo TPP Ltd (sbx_demo_tpp_key)" in out
    assert "Data.Status=AcceptedCreditSettlementCompleted" in out
    assert "✓ her wallet paid 25.00 CNY (31052.38 → 31027.38)" in out
    assert re.search(r"log #\d+ ptp_00000000000000000000000013 POST /payments/transfers 201 approve "
                     r"\(for ptp_00000000000000000000000002\)", out)


def test_aml_flags_structuring_and_blocks_the_sanctioned_name(sandbox: Sandbox) -> None:
    out = played(sandbox, "aml")
    assert re.search(r"gateway: review; score=12; rules=structuring", out)
    assert re.search(r"gateway: block; score=\d+; rules=sanctions", out)
    assert "3 amounts just below the 10000.00 CNY threshold within 24 h, 28500.00 CNY in all" in out
    alerts = httpx.get(f"{sandbox.url}/sandbox/alerts", params={"status": "open"}, headers=REGULATOR).json()["data"]
    assert sorted(a["decision"] for a in alerts) == ["block", "review"]


def test_exit_report_counts_the_firms_test(sandbox: Sandbox) -> None:
    out = played(sandbox, "exit-report")
    assert "requests=5  succeeded=4  refused=1" in out
    firm = [p for p in httpx.get(f"{sandbox.url}/sandbox/participants", params={"limit": 100},
                                  headers=REGULATOR).json()["data"]
            if p["name"] == "Blockchain Remit Ltd"]
    assert [p["status"] for p in firm] == ["suspended"]


def test_scenarios_run_again_without_a_reset(sandbox: Sandbox) -> None:
    """Fresh idempotency keys and wallets each run: a second run is a second payment, not a replay."""
    sandbox.reset()
    for _ in range(2):
        result = demo(sandbox, "red-packet")
        assert result.returncode == 0, result.stdout
    assert balance(sandbox, LI_WEI) == "4866.68"


def test_all_in_order_in_one_run(sandbox: Sandbox) -> None:
    sandbox.reset()
    result = demo(sandbox)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.findall(r"^PASSED ([\w-]+):", result.stdout, re.MULTILINE) == [s.name for s in SCENARIOS]
    assert f"{len(SCENARIOS)} of {len(SCENARIOS)} scenarios passed" in result.stdout


def test_a_claim_the_sandbox_does_not_bear_out_fails_loudly(sandbox: Sandbox) -> None:
    """Suspended by the regulator, Demo Wallet Co cannot send the red packet: the run says so and exits 1."""
    sandbox.reset()
    httpx.post(f"{sandbox.url}/sandbox/participants/{WALLET_CO}/suspend", headers=REGULATOR,
               json={"reason": "testing the narration's failure"}).raise_for_status()
    try:
        result = demo(sandbox, "red-packet")
    finally:
        sandbox.reset()
    assert result.returncode == 1
    assert re.search(r"^FAILED red-packet: GET /payments/accounts/\S+/balance answered 403, expected 200: ", result.stdout,
                     re.MULTILINE), result.stdout


def test_no_sandbox_no_run(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "sandbox", "demo", "red-packet", "--gateway-url",
                             "http://127.0.0.1:9"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "No sandbox answers at http://127.0.0.1:9: start it with `make run`" in result.stdout


def test_retry_through_timeout_moves_the_money_once(sandbox: Sandbox) -> None:
    out = played(sandbox, "retry-through-timeout")
    check_every_call_is_narrated(out, sandbox)
    assert "PUT /sandbox/faults/lost-transfer-answer  as the regulator (sbx_regulator_key)" in out
    assert re.search(r"POST /payments/transfers  as Demo Wallet Co \(sbx_demo_wallet_key\)\n.*\n    → 504 ", out)
    assert "✓ the money moved once: Li Wei 5000.00 → 4948.00, Zhang Min 1200.00 → 1252.00" in out
    assert "✓ the log closed it: intent, unanswered, then reconciled as applied (201)" in out
    assert (balance(sandbox, LI_WEI), balance(sandbox, ZHANG_MIN)) == ("4948.00", "1252.00")
    assert httpx.get(f"{sandbox.url}/sandbox/faults", headers=REGULATOR).json()["data"] == []
    lost = out[out.index("POST /payments/transfers"):]
    request_id = CONSOLE_LINK.search(lost).group(2)  # the attempt whose answer was lost
    entries = httpx.get(f"{sandbox.url}/sandbox/audit/entries", headers=REGULATOR,
                        params={"request_id": request_id}).json()["data"]
    assert [(e["phase"], e["status"], e["counts_toward"]) for e in entries] == [
        ("intent", 0, None), ("unanswered", 504, None), ("reconciled", 201, ["limits", "history"])]
    assert httpx.get(f"{sandbox.url}/payments/invariants", headers=WALLET).json()["ok"] is True
