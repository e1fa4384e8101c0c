"""The benchmarks run end to end: payments (bare FastAPI and payments on SQLite, a moment each)
and, with PostgreSQL, the replicas benchmark (one gateway against two, a moment each).

They check that the command works and prints its figures; they assert nothing about speed."""

from __future__ import annotations

import pytest

from sandbox.bench import payments, replicas
from tests.support.postgres import SKIP_MESSAGE, admin_url


def test_payments_benchmark_runs_and_prints_its_table(capsys) -> None:
    status = payments.main(["--seconds", "0.5", "--warmup", "0.2", "--clients", "1", "--pairs", "2",
                            "--sqlite-only", "--no-sandbox-rss"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "transfers/s" in out
    assert "payments on SQLite" in out and "GET /invariants ok=True" in out
    assert "skipped: --sqlite-only" in out


@pytest.mark.postgres
def test_replicas_benchmark_runs_one_against_two_and_checks_both(capsys) -> None:
    """A moment of load through one gateway, then through two on the same databases: the
    report has its figures and every correctness check is ok."""
    url = admin_url()
    if url is None:
        pytest.skip(SKIP_MESSAGE)
    status = replicas.main(["--postgres-url", url, "--seconds", "1", "--warmup", "0.5", "--clients", "2",
                            "--pairs", "4", "--read-accounts", "2"])
    report = capsys.readouterr().out
    assert status == 0, report
    for figure in ("POST /payments/transfers through the gateway(s)", "GET /payments/accounts/{id}", "two / one:",
                   "cores busy", "log lock held", "decision lock held", "what limits it", "resident memory"):
        assert figure in report, f"{figure!r} missing from:\n{report}"
    assert report.count("all checks ok") == 2 and "FAILED" not in report, report
    assert "the same head on all 2" in report and "one activity report: every gateway reports the same" in report


def test_replicas_benchmark_without_postgres_says_how_to_run_it_and_passes(monkeypatch, capsys) -> None:
    """`make bench` on a machine without PostgreSQL: a hint, exit status 0."""
    for name in replicas.POSTGRES_ENVS:
        monkeypatch.delenv(name, raising=False)
    assert replicas.main([]) == 0
    out = capsys.readouterr().out
    assert "skipped: the replicas benchmark needs PostgreSQL" in out and "--postgres-url" in out
