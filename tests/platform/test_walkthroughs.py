"""The README's walkthroughs stay true: a fresh sandbox is launched as `make run` does (every
service on SQLite, on ports moved by an offset), then the README's own curl blocks and its
narrated scenarios (and the example scripts that play them) run against it, unchanged but for
the port, and what they print is checked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.topology import built_services
from tests.support.docs_runner import first_missing_line
from tests.support.ports import free_port_offset
from tests.support.stack import sandbox_for

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SPECS = built_services()
STEP_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None or shutil.which("jq") is None,
                       reason="the walkthroughs use curl and jq (apt-get install curl jq)"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher's clean-up relies on Linux"),
]


def _readme_block(heading: str) -> str:
    """The first ```bash block after a README heading."""
    start = README.index(heading)
    body = README.index("```bash", start) + len("```bash")
    return README[body:README.index("```", body)]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    for sandbox in sandbox_for(tmp_path, free_port_offset()):
        yield sandbox.url


def _bash(script: str, gateway: str) -> str:
    port = int(gateway.rsplit(":", 1)[1])
    for host in ("127.0.0.1", "localhost"):
        script = script.replace(f"{host}:8000", f"127.0.0.1:{port}").replace(f"{host}:8001", f"127.0.0.1:{port + 1}")
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=STEP_TIMEOUT_S, env={**os.environ})
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def check_the_payments_walkthrough_moves_money(gateway: str) -> None:
    out = _bash(_readme_block("## Payments walkthrough"), gateway)
    assert '"available":{"amount":"66.66","currency":"CNY"}' in out
    assert '"ok":true' in out
    quote = _bash(_readme_block("**Merchant QR and cross-border payments.**"), gateway)
    assert '"rail":"ripple"' in quote and '"status":"open"' in quote


def check_the_gateway_walkthrough_approves_flags_blocks_and_refuses(gateway: str) -> None:
    out = _bash(_readme_block("## Gateway walkthrough"), gateway)
    decisions = re.findall(r"x-sandbox-decision: (\w+); score=\d+; rules=(\w+)", out)
    assert decisions == [("approve", "none"), ("approve", "none"), ("approve", "none"),
                         ("review", "structuring"), ("block", "sanctions")]
    assert "3 amounts just below the 10000.00 CNY threshold within 24 h" in out
    assert "25000.00 CNY is above the single-transaction limit of 20000.00 CNY." in out
    assert '"title":"Account not found","status":404' in out
    assert '"ok":true' in out and "first_broken\":null" in out
    assert "limit_breaches,1" in out


def check_the_advisor_walkthrough_replays_its_figures(gateway: str) -> None:
    out = _bash(_readme_block("## Robo-advisor walkthrough"), gateway).splitlines()
    documented = [line.removeprefix("# ") for line in _readme_block("## Robo-advisor walkthrough").splitlines()
                  if line.startswith("# {")]
    # Each documented output is the start of (or the whole) line the command printed.
    for expected in documented:
        assert any(line.startswith(expected.rstrip()) for line in out), (expected, out)


def _narrated_sessions() -> list[tuple[str, str]]:
    """The README's narrated-scenario session: each `$ ` command and the lines it documents."""
    start = README.index("```console", README.index("## Narrated scenarios"))
    start = README.index("```console", start + 1)  # the first is `demo --list`, which the docs runner runs
    body = README[start + len("```console"):README.index("```", start + len("```console"))]
    sessions: list[tuple[str, list[str]]] = []
    for line in body.strip("\n").splitlines():
        if line.startswith("$ "):
            sessions.append((line[2:], []))
        else:
            sessions[-1][1].append(line)
    return [(command, "\n".join(lines)) for command, lines in sessions]


def check_the_narrated_scenarios_print_what_the_readme_shows(gateway: str) -> None:
    """The 310 loan and the TPP journey, as `fintech-sandbox demo` narrates them (its own checks
    pass, or it exits 1), printing the lines the README documents, console links included."""
    port = int(gateway.rsplit(":", 1)[1])
    sessions = _narrated_sessions()
    assert [command.split()[-1] for command, _ in sessions] == ["loan-310", "tpp-journey"]
    for command, documented in sessions:
        out = _bash(f"{command} --gateway-url {gateway}", gateway)
        documented = documented.replace("127.0.0.1:8005", f"127.0.0.1:{port + 5}")
        assert first_missing_line(documented, out) is None, (first_missing_line(documented, out), out)
    # The example scripts are one line now: they play the same scenarios, the gateway URL first.
    out = _bash(f"examples/tpp_journey.sh {gateway}", gateway)
    assert "PASSED tpp-journey" in out and "AcceptedCreditSettlementCompleted" in out
    out = _bash(f"examples/loan_310.sh {gateway} --no-color", gateway)
    assert "PASSED loan-310" in out
    # The lender collects under the wallet owner's mandate to it, not on a key that may debit anything.
    assert "✓ Demo Lender may debit Chen's account under an active mandate" in out


def test_every_readme_walkthrough_runs_against_a_fresh_sandbox(gateway: str) -> None:
    """One sandbox for all of them (starting one costs several seconds); each check says which failed."""
    check_the_payments_walkthrough_moves_money(gateway)
    check_the_gateway_walkthrough_approves_flags_blocks_and_refuses(gateway)
    check_the_advisor_walkthrough_replays_its_figures(gateway)
    check_the_narrated_scenarios_print_what_the_readme_shows(gateway)
