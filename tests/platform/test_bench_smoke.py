"""The payments benchmark runs end to end (bare FastAPI and payments on SQLite, a moment each).

It checks that the command works and prints its table; it asserts nothing about speed."""

from __future__ import annotations

from sandbox.bench import payments


def test_payments_benchmark_runs_and_prints_its_table(capsys) -> None:
    status = payments.main(["--seconds", "0.5", "--warmup", "0.2", "--clients", "1", "--pairs", "2",
                            "--sqlite-only", "--no-sandbox-rss"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "transfers/s" in out
    assert "payments on SQLite" in out and "GET /invariants ok=True" in out
    assert "skipped: --sqlite-only" in out
