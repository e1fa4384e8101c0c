"""`fintech-sandbox bench payments`: transfers per second, on SQLite and on PostgreSQL.

One run starts three servers, each a real uvicorn process on loopback with one worker, no
access log, log level warning, and measures them one after another:

1. a bare FastAPI app (the baseline): POST /transfers parses the same JSON body with a pydantic
   model and answers 201 with JSON, and does nothing else;
2. payments on a SQLite file (PAYMENTS_DATA_DIR, a temporary directory), twice: recording a
   domain event with every transfer (the outbox, the default) and without
   (PAYMENTS_RECORD_EVENTS=false), so the table shows what the outbox costs;
3. payments on PostgreSQL (PAYMENTS_DATABASE_URL, a fresh database made for the run and
   dropped after it); skipped, and said so, when PostgreSQL cannot be reached.

Funded payer/payee wallets are opened first (not measured). Then several load-generator
processes, each holding one keep-alive connection, POST /transfers of 1.00 CNY between random
pairs (no Idempotency-Key): a warm-up, then the measured seconds. The table gives transfers/s
(201 answers per second), p50/p99 latency, errors, the ratio to the bare app and whether the
target of 1,000 transfers/s is met. Then the server's CPU time per request (and PostgreSQL's
backends', when they run on this machine): a figure other jobs on a shared machine disturb far
less than throughput. Then each server's resident memory (RSS) idle and after the load, and
GET /invariants after each payments run, with the journals added counted against the 201
answers. Last, the whole sandbox (`fintech-sandbox run`: gateway and every service, SQLite) is
started on spare ports and its idle RSS is read (target under 1 GB).

It is a benchmark, not a test: a missed target is printed as MISSED and the exit status is
still 0. It is 1 only when the ledger is wrong (invariants fail, or journals do not match the
transfers answered 201).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from sandbox.bench.load import (
    cpu_seconds,
    descendants,
    free_port,
    funded_pairs,
    load,
    rss_mb,
    start,
    stop,
    transfer_bodies,
    wait_ready,
)

TARGET_TPS = 1_000  # Mojaloop's hub publishes 1,000 transfers/s (on a cluster)
SANDBOX_RSS_TARGET_MB = 1000.0
POSTGRES_ENV = "SANDBOX_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
PAYMENTS_APP = "services.payments.main:create_app"
BARE_APP = "sandbox.bench.payments:bare_app"
NO_EVENTS_LABEL = "payments, SQLite, no events"
OUTBOX_LOSS_TARGET = 0.10  # what recording an event with every movement may cost, at most


# --- the baseline: FastAPI doing nothing but parse and answer ----------------------------------


class _BareAmount(BaseModel):
    amount: str
    currency: str


class _BareTransfer(BaseModel):
    from_account_id: str
    to_account_id: str
    amount: _BareAmount
    description: str | None = None


class _BareJournal(BaseModel):
    id: str
    kind: str
    amount: _BareAmount
    from_account_id: str
    to_account_id: str


def bare_app() -> FastAPI:
    """The baseline: the same request body parsed by a pydantic model, a 201 JSON answer built
    from a response model, and no middleware, database or rules (an `async def`, so no
    threadpool hop either)."""
    app = FastAPI(title="bare")

    @app.post("/transfers", status_code=201, response_model=_BareJournal)
    async def create_transfer(body: _BareTransfer) -> _BareJournal:
        return _BareJournal(id="tr_bare", kind="transfer", amount=body.amount,
                            from_account_id=body.from_account_id, to_account_id=body.to_account_id)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ok", "service": "bare"}

    return app


# --- one measured server ---------------------------------------------------------------------


@dataclass
class Result:
    label: str
    stats: dict[str, float] | None = None
    rss_idle: float | None = None
    rss_loaded: float | None = None
    invariants: dict[str, Any] | None = None
    journals_added: int | None = None
    cpu_ms: float | None = None  # the server process's CPU per request (warm-up and measured)
    db_cpu_ms: float | None = None  # PostgreSQL's backends' CPU per request, when readable
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ledger_ok(self) -> bool:
        if self.invariants is None or self.stats is None:
            return True
        answered = int(self.stats["ok"] + self.stats["warmup_ok"])
        return bool(self.invariants.get("ok")) and self.journals_added == answered


def _invariants(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/invariants", timeout=120)
    r.raise_for_status()
    return r.json()


def _pg_backends_cpu(admin_url: str | None, dbname: str | None) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend serving `dbname`, when PostgreSQL
    runs on this machine and /proc shows its processes; {} otherwise."""
    if not admin_url or not dbname:
        return {}
    try:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            pids = [row[0] for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))]
    except Exception:  # noqa: BLE001 (a figure we can do without)
        return {}
    out = {}
    for pid in pids:
        cpu = cpu_seconds(pid, include_children=False)
        if cpu is not None:
            out[pid] = cpu
    return out


@dataclass
class Server:
    """One server under test: a uvicorn process of `app` with `env` on a free port."""

    label: str
    app: str
    env: dict[str, str]
    service: str  # what its /readyz names
    log: Path
    pg: tuple[str, str] | None = None  # (admin URL, database name) for the PostgreSQL run
    proc: subprocess.Popen | None = None
    url: str = ""

    def launch(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = start(self.app, port, self.env, self.log)

    def ready(self) -> None:
        """Wait for it; when it exited early (the free port was taken meanwhile), try again on
        another port, twice at most."""
        assert self.proc is not None
        for attempt in range(3):
            try:
                wait_ready(self.url, self.proc, service=self.service)
                return
            except RuntimeError as exc:
                stop([self.proc])
                if attempt < 2 and "exited" in str(exc):
                    self.launch()
                    continue
                tail = self.log.read_text(errors="replace").splitlines()[-20:] if self.log.exists() else []
                raise RuntimeError(f"{self.label}: {exc}; last lines of its log:\n" + "\n".join(tail)) from None


def _measure(server: Server, args: argparse.Namespace) -> Result:
    """Set up, load and read one ready server, then stop it."""
    assert server.proc is not None
    proc, url, label = server.proc, server.url, server.label
    payments = server.service == "payments"
    result = Result(label)
    try:
        if payments:
            bodies = transfer_bodies(funded_pairs(url, args.pairs))
            journals_before = _invariants(url)["journals"]
        else:
            # The same shape and size of body as the payments runs (ids of the same length).
            fake = [(f"acc_{uuid.uuid4().hex[:26]}", f"acc_{uuid.uuid4().hex[:26]}") for _ in range(args.pairs)]
            bodies = transfer_bodies(fake)
        print(f"  {label}: loading ...", flush=True)
        admin, dbname = server.pg if server.pg else (None, None)
        db_before = _pg_backends_cpu(admin, dbname)
        cpu_before = cpu_seconds(proc.pid)
        result.stats = load(url, "/transfers", {}, bodies, args.clients, args.seconds, args.warmup)
        cpu_after = cpu_seconds(proc.pid)
        db_after = _pg_backends_cpu(admin, dbname)
        result.rss_loaded = rss_mb(proc.pid)
        answered = result.stats["requests"] + result.stats["warmup_requests"]
        if cpu_before is not None and cpu_after is not None and answered:
            result.cpu_ms = (cpu_after - cpu_before) * 1000 / answered
        if db_after and answered:
            used = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in db_after.items())
            result.db_cpu_ms = used * 1000 / answered
        if payments:
            result.invariants = _invariants(url)
            result.journals_added = result.invariants["journals"] - journals_before
        if proc.poll() is not None:
            tail = " | ".join(server.log.read_text(errors="replace").splitlines()[-5:])
            result.notes.append(f"the server exited ({proc.returncode}) during the run: {tail}")
    finally:
        stop([proc])
    return result


# --- PostgreSQL: a database of its own for the run --------------------------------------------


def _postgres_database(admin_url: str) -> tuple[str | None, str | None, str]:
    """CREATE a fresh database: (its URL, its name, "") or (None, None, why not)."""
    try:
        import psycopg

        name = f"bench_payments_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 (unreachable, refused, no permission: all skip)
        return None, None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}", name, ""


def _drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{creds}{at}{host}"


# --- the whole sandbox at rest ------------------------------------------------------------------


def _free_offset() -> int | None:
    """A port offset at which the sandbox's ports (8000-8004 + offset) are all free."""
    import socket

    from sandbox.topology import SERVICES

    rng = random.Random()
    for _ in range(50):
        offset = rng.randrange(20_000, 40_000)
        try:
            socks = []
            for spec in SERVICES:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", spec.port + offset))
            return offset
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    return None


def _service_of(pid: int) -> str:
    from sandbox.topology import SERVICES

    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    args = [a.decode(errors="replace") for a in cmdline]
    for spec in SERVICES:
        if spec.app in args:
            return spec.name
    return " ".join(args)[:40]


def sandbox_idle_rss(settle_s: float = 3.0) -> tuple[float, list[tuple[str, float]]] | None:
    """Start `fintech-sandbox run` (gateway and every built service, SQLite) on free ports, wait
    until everything is ready and has settled, read RSS of the launcher and every process under
    it, stop it all. None when it cannot be done (no /proc, no free ports, not ready)."""
    from sandbox.topology import built_services

    if not Path("/proc/self/status").exists():
        return None
    offset = _free_offset()
    if offset is None:
        return None
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "run", "--data-dir", tmp, "--port-offset", str(offset)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 90
            pending = [spec.port + offset for spec in built_services()]
            with httpx.Client(timeout=1) as client:
                while pending and time.monotonic() < deadline and launcher.poll() is None:
                    for port in list(pending):
                        try:
                            if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                                pending.remove(port)
                        except httpx.HTTPError:
                            pass
                    time.sleep(0.2)
            if pending or launcher.poll() is not None:
                return None
            time.sleep(settle_s)
            total = rss_mb(launcher.pid)
            if total is None:
                return None
            parts = [("launcher (fintech-sandbox run)", rss_mb(launcher.pid, include_children=False) or 0.0)]
            parts += [(_service_of(pid), rss_mb(pid, include_children=False) or 0.0)
                      for pid in descendants(launcher.pid)]
            return total, parts
        finally:
            stop([launcher], timeout=30)


# --- the report ---------------------------------------------------------------------------------


def _load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _print_table(results: list[Result]) -> None:
    bare = next((r for r in results if r.label.startswith("bare") and r.stats), None)
    bare_tps = bare.stats["ok_rps"] if bare and bare.stats else 0.0
    print(f"\n  {'server':<26}{'transfers/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'vs bare':>9}   target ≥ {TARGET_TPS:,}/s")
    for r in results:
        if r.stats is None:
            print(f"  {r.label:<26}  skipped: {r.skipped}")
            continue
        s = r.stats
        tps = s["ok_rps"]
        if r is bare:
            ratio, verdict = "100%", "(baseline)"
        else:
            ratio = f"{tps / bare_tps:.0%}" if bare_tps else "-"
            verdict = "met" if tps >= TARGET_TPS else f"MISSED ({tps / TARGET_TPS:.0%} of target)"
        print(f"  {r.label:<26}{tps:>12,.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{int(s['errors']):>8}"
              f"{ratio:>9}   {verdict}")
    print("\n  server CPU per request (user + system, every thread; warm-up and measured phases)")
    for r in results:
        if r.stats is None or r.cpu_ms is None:
            continue
        line = f"  {r.label:<26}{r.cpu_ms:>8.2f} ms"
        if r.db_cpu_ms is not None:
            line += f" + {r.db_cpu_ms:.2f} ms in PostgreSQL's backends"
        if r.cpu_ms:
            line += f"   (the server alone on a free core: at most ~{1000 / r.cpu_ms:,.0f}/s)"
        print(line)
    print("\n  resident memory (RSS, MiB)      idle   after load")
    for r in results:
        if r.stats is not None:
            print(f"  {r.label:<26}{_mb(r.rss_idle):>11}{_mb(r.rss_loaded):>13}")
    for r in results:
        if r.invariants is None or r.stats is None:
            continue
        inv = r.invariants
        answered = int(r.stats["ok"] + r.stats["warmup_ok"])
        failing = [c["name"] for c in inv.get("checks", []) if not c.get("ok")]
        print(f"\n  {r.label}: GET /invariants ok={inv.get('ok')} "
              f"({inv.get('journals'):,} journals, {inv.get('postings'):,} postings"
              f"{'; failing: ' + ', '.join(failing) if failing else ''})")
        match = "matches" if r.journals_added == answered else "DOES NOT MATCH"
        print(f"    journals added during the load: {r.journals_added:,}; transfers answered 201 "
              f"(warm-up + measured): {answered:,}: {match}")
    _print_outbox_cost(results)
    for r in results:
        for note in r.notes:
            print(f"  note ({r.label}): {note}")


def _print_outbox_cost(results: list[Result]) -> None:
    """Payments on SQLite with its outbox against without: throughput and CPU per request."""
    with_events = next((r for r in results if r.label == "payments on SQLite" and r.stats), None)
    without = next((r for r in results if r.label == NO_EVENTS_LABEL and r.stats), None)
    if with_events is None or without is None or with_events.stats is None or without.stats is None:
        return
    tps_ratio = with_events.stats["ok_rps"] / without.stats["ok_rps"] if without.stats["ok_rps"] else 0.0
    print(f"\n  the outbox's cost (SQLite): with events {with_events.stats['ok_rps']:,.0f}/s, without "
          f"{without.stats['ok_rps']:,.0f}/s: {tps_ratio:.0%} of the throughput")
    if with_events.cpu_ms and without.cpu_ms:
        cpu_ratio = with_events.cpu_ms / without.cpu_ms
        verdict = "met" if cpu_ratio <= 1 + OUTBOX_LOSS_TARGET else "MISSED"
        print(f"    CPU per request {with_events.cpu_ms:.3f} ms with, {without.cpu_ms:.3f} ms without: "
              f"{cpu_ratio - 1:+.1%} (target: at most +{OUTBOX_LOSS_TARGET:.0%}, {verdict}; the stable "
              "figure on a shared machine)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fintech-sandbox bench payments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes (keep-alive each)")
    parser.add_argument("--pairs", type=int, default=64, help="funded payer/payee account pairs")
    parser.add_argument("--postgres-url", default=os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL,
                        help=f"a server where the user may CREATE DATABASE (default ${POSTGRES_ENV} "
                             f"or {DEFAULT_POSTGRES_URL})")
    parser.add_argument("--sqlite-only", action="store_true", help="skip the PostgreSQL run")
    parser.add_argument("--no-sandbox-rss", action="store_true",
                        help="skip starting the whole sandbox to read its idle memory")
    args = parser.parse_args(argv)

    print(f"POST /transfers, 1.00 CNY between {args.pairs} random funded pairs; {args.clients} keep-alive "
          f"client processes; {args.warmup:g} s warm-up then {args.seconds:g} s measured per server; "
          f"one uvicorn worker each; {os.cpu_count()} CPUs; {_load_average()}", flush=True)
    results: list[Result] = []
    skipped_pg: str | None = None
    pg_admin, pg_name = args.postgres_url, None
    with tempfile.TemporaryDirectory(prefix="bench-payments-") as tmp:
        tmpdir = Path(tmp)
        quiet = {"PAYMENTS_LOG_LEVEL": "WARNING"}
        servers = [
            Server("bare FastAPI (baseline)", BARE_APP, {}, "bare", tmpdir / "bare.log"),
            Server("payments on SQLite", PAYMENTS_APP, {**quiet, "PAYMENTS_DATA_DIR": str(tmpdir / "sqlite")},
                   "payments", tmpdir / "payments-sqlite.log"),
            Server(NO_EVENTS_LABEL, PAYMENTS_APP,
                   {**quiet, "PAYMENTS_DATA_DIR": str(tmpdir / "sqlite-no-events"), "PAYMENTS_RECORD_EVENTS": "false"},
                   "payments", tmpdir / "payments-sqlite-no-events.log"),
        ]
        if args.sqlite_only:
            skipped_pg = "--sqlite-only"
        else:
            db_url, pg_name, why = _postgres_database(pg_admin)
            if db_url is None or pg_name is None:
                skipped_pg = (f"PostgreSQL at {_redact(pg_admin)} unreachable ({why}); "
                              f"set --postgres-url or ${POSTGRES_ENV}")
            else:
                servers.append(Server("payments on PostgreSQL", PAYMENTS_APP,
                                      {**quiet, "PAYMENTS_DATA_DIR": str(tmpdir / "pg"),
                                       "PAYMENTS_DATABASE_URL": db_url},
                                      "payments", tmpdir / "payments-postgres.log", pg=(pg_admin, pg_name)))
        try:
            # Start them all at once (start-up is not measured), then measure one at a time.
            for server in servers:
                server.launch()
            for server in servers:
                server.ready()
            time.sleep(0.5)  # let start-up allocations settle before reading idle memory
            idle = {server.label: rss_mb(server.proc.pid) for server in servers if server.proc}
            for server in servers:
                result = _measure(server, args)
                result.rss_idle = idle.get(server.label)
                results.append(result)
        finally:
            stop([server.proc for server in servers if server.proc])
            if pg_name is not None:
                _drop_database(pg_admin, pg_name)
        if skipped_pg is not None:
            results.append(Result("payments on PostgreSQL", skipped=skipped_pg))

    _print_table(results)
    print(f"\n  {_load_average()} at the end (other jobs share these CPUs; see the CPU figures above)")

    if not args.no_sandbox_rss:
        print("\n  whole sandbox at rest (fintech-sandbox run: gateway and every service, SQLite) ...", flush=True)
        measured = sandbox_idle_rss()
        if measured is None:
            print("  whole sandbox idle RSS: could not be measured (no /proc, no free ports, or not ready)")
        else:
            total, parts = measured
            for name, mb in parts:
                print(f"    {name:<30}{mb:>9,.1f} MiB")
            verdict = "met" if total < SANDBOX_RSS_TARGET_MB else "MISSED"
            print(f"  whole sandbox idle RSS {total:,.1f} MiB (sum of RSS, shared pages counted per process): "
                  f"target < 1 GB {verdict}")
    return 0 if all(r.ledger_ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
