"""`fintech-sandbox load` against a launched sandbox: a short run with every typology injected
once (and more at a high rate), then the regulator's own API decides: each typology raised an
alert naming its rule, no alert is on a clean account, and the audit log verifies."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.load.typologies import TYPOLOGIES
from tests.support.ports import free_port_offset
from tests.support.stack import REGULATOR_KEY, ROOT, Sandbox, sandbox_for

EXPECTED_RULE = {"structuring": "structuring", "rapid_pass_through": "rapid_pass_through",
                 "sanctioned_name": "sanctions", "high_risk_corridor": "high_risk_jurisdiction",
                 "velocity": "velocity"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    yield from sandbox_for(tmp_path_factory.mktemp("load"), free_port_offset())


@pytest.fixture(scope="module")
def run(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("load-run")
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "load", "--gateway-url", sandbox.url, "--users", "6", "--spawn-rate", "6",
         "--iterations", "90", "--every-typology", "--typology-rate", "0.1", "--seed", "7",
         "--output-dir", str(out), "--json", str(out / "summary.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return result, summary


def test_the_run_passes_and_says_so(run: tuple[subprocess.CompletedProcess, dict]) -> None:
    result, summary = run
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["ok"] is True
    assert "alerts no typology explains: 0" in result.stdout
    assert summary["requests"] > 0
    for name in TYPOLOGIES:  # the printed summary lists each typology with the alert it raised
        assert any(line.split()[:2] == ["caught", name] and "alt_" in line for line in result.stdout.splitlines()), name


def test_each_typology_raised_an_alert_of_its_rule(run: tuple[subprocess.CompletedProcess, dict],
                                                   sandbox: Sandbox) -> None:
    _, summary = run
    alerts = {a["id"]: a for a in _alerts(sandbox)}
    for name, rule in EXPECTED_RULE.items():
        caught = [i for i in summary["injections"] if i["typology"] == name and i["caught"]]
        assert caught, f"{name}: {[i for i in summary['injections'] if i['typology'] == name]}"
        for injection in caught:
            # The summary's attribution, checked against the regulator's alert itself.
            assert any(rule in [h["rule"] for h in alerts[a["id"]]["rules"]] for a in injection["alerts"]), injection
    sanctioned = [i for i in summary["injections"] if i["typology"] == "sanctioned_name" and i["caught"]]
    for injection in sanctioned:
        payee = injection["accounts"][1]  # the account opened in the listed name
        assert any(alerts[a["id"]]["payee"] == payee for a in injection["alerts"])


def test_clean_traffic_raised_no_alert(run: tuple[subprocess.CompletedProcess, dict], sandbox: Sandbox,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    _, summary = run
    assert summary["unexplained_alerts"] == []
    manifest = json.loads(next(Path(tmp_path_factory.getbasetemp()).glob("load-run*/manifest.json")).read_text())
    clean = set(manifest["clean"]["accounts"])
    assert len(clean) > 5 and manifest["clean"]["journeys"]
    typology_requests = {r for i in manifest["injections"] for r in i["all_request_ids"]}
    for alert in _alerts(sandbox):
        assert alert["request_id"] in typology_requests, alert
        assert alert["payer"] not in clean and alert["payee"] not in clean, alert


def test_the_audit_log_verifies(run: tuple[subprocess.CompletedProcess, dict], sandbox: Sandbox) -> None:
    verify = httpx.get(f"{sandbox.url}/sandbox/audit/verify", headers={"X-API-Key": REGULATOR_KEY}, timeout=60).json()
    assert verify["ok"] is True and verify["first_broken"] is None
    assert run[1]["audit_log"]["ok"] is True


def _alerts(sandbox: Sandbox) -> list[dict]:
    alerts, after = [], None
    while True:
        params = {"limit": 100, **({"after": after} if after else {})}
        body = httpx.get(f"{sandbox.url}/sandbox/alerts", params=params, headers={"X-API-Key": REGULATOR_KEY},
                         timeout=30).json()
        alerts += body["data"]
        if not body["has_more"]:
            return alerts
        after = body["next_cursor"]
