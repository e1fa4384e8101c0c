"""`python -m sandbox run --exit-when-ready` (what `make run` does, minus the waiting): every
built service starts on its port plus the offset, the banner names each with its URL, the
launcher exits 0, and no child process outlives it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.topology import built_services
from tests.support.ports import free_port_offset, port_in_use

ROOT = Path(__file__).resolve().parents[2]
SPECS = built_services()
# The whole start-check-stop cycle takes about 10 s on 2 cores; the bound only stops a hang.
RUN_TIMEOUT_S = 120


def _processes_started_for(data_dir: Path) -> list[int]:
    """Pids whose environment names this test's data dir: the launcher's children carry it."""
    marker = str(data_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks children through /proc")
def test_run_exit_when_ready_starts_everything_prints_urls_and_leaves_nothing_running(tmp_path) -> None:
    offset = free_port_offset()
    data_dir = tmp_path / "sandbox-data"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SANDBOX_LAUNCHER_TEST": str(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "run", "--exit-when-ready",
         "--port-offset", str(offset), "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout

    assert "Fintech sandbox is up" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ") and line.split()}
    gateway_port = next(s.port for s in SPECS if s.kind == "gateway") + offset
    for spec in SPECS:
        url = f"http://127.0.0.1:{spec.port + offset}"
        assert spec.name in rows, f"{spec.name} missing from the banner:\n{out}"
        row = rows[spec.name]
        if spec.kind == "console":  # a web UI: no API docs, no database, only its log
            assert row[1] == f"{url}/" and row[2] == "-", row
            assert (data_dir / "logs" / f"{spec.name}.log").exists()
            continue
        assert row[1] == url and row[2] == f"{url}/docs", row
        if spec.gateway_prefix:
            assert row[3] == f"http://127.0.0.1:{gateway_port}{spec.gateway_prefix}/...", row
        # Each service really ran: it made its SQLite file and its log under the data dir.
        assert (data_dir / f"{spec.name}.sqlite3").exists()
        assert (data_dir / "logs" / f"{spec.name}.log").exists()
    assert "sbx_demo_wallet_key" in out  # the demo keys a user needs to call the gateway
    assert "sbx_svc_" not in out  # the services' own keys act for participants, never as one
    assert "mdt_00000000000000000000000001" in out  # the demo mandates the walkthroughs use
    assert out.rstrip().endswith("All services stopped.")

    # Nothing survives the launcher: no port is still answering, no child process is left.
    assert [s.name for s in SPECS if port_in_use(s.port + offset)] == []
    assert _processes_started_for(data_dir) == []
