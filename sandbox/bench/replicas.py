"""`fintech-sandbox bench replicas`: one gateway against two, on one PostgreSQL database each.

Several gateway processes may share one PostgreSQL database (sandbox/gateway/shared.py): the
audit log is the source of truth, each replica catches up the others' entries before it
decides, an advisory *log lock* serialises appends and a *decision lock* serialises a movement's
limit check and hold. This benchmark measures what a second replica buys, in one run:

(a) baseline: one gateway and one payments process;
(b) two gateways and two payments processes (gateway i forwards to payments i), the load split
    evenly over the two gateways.

Each run gets two throwaway databases (gateway, payments: CREATE DATABASE with a unique name,
dropped at the end, even on error). Setup (not measured): funded payer/payee wallets opened on
payments directly, a bench participant with large limits admitted through gateway 1. Then
several load-generator processes, each holding one keep-alive connection to one gateway, POST
/payments/transfers of 1.00 CNY between random pairs with the participant's key (no
Idempotency-Key: the gateway assigns one): a warm-up, then the measured seconds. The same client
count and durations for both runs. Reported: transfers/s, p50/p99, errors and 5xx, the ratio
two/one; and after each run, whether it stayed correct:

- the ledger's invariants hold (payments GET /invariants);
- every 2xx answer is one journal of the participant's in the ledger and one counted entry in
  the audit log (the activity report's succeeded requests), and the report's volume is the sum
  of those journals;
- GET /sandbox/audit/verify is ok on every gateway, and they report the same head: one chain;
- no 5xx.

Then where the time went, to say what limits it: CPU seconds of every process in the measured
phase (gateways, payments, PostgreSQL's backends for the run's databases, PostgreSQL's other
processes, the load generator, the rest of the machine), the share of the time the log lock and
the decision lock were held (pg_locks, sampled every 10 ms), and a run of reads
(GET /payments/accounts/{id}: one audit entry each, no decision lock, no ledger write) to set
against the transfers. RSS of each process, idle and after the load.

It needs a PostgreSQL server where the user may CREATE DATABASE: --postgres-url, else
$SANDBOX_BENCH_POSTGRES_URL or $SANDBOX_TEST_POSTGRES_URL. Without one it says how to run it
and exits 0, so `make bench` works anywhere. It is a benchmark: the exit status is 1 only when a
correctness check fails.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import random
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from sandbox.bench.load import (
    cpu_seconds,
    descendants,
    free_port,
    funded_pairs,
    percentiles,
    rss_mb,
    start,
    stop,
    transfer_bodies,
    wait_ready,
)
from sandbox.bench.payments import _load_average, _pg_backends_cpu, _redact
from sandbox.gateway.shared import DECISION_LOCK, LOG_LOCK
from services.common.demo import DEMO_REGULATOR_KEY
from services.common.money import to_minor

POSTGRES_ENVS = ("SANDBOX_BENCH_POSTGRES_URL", "SANDBOX_TEST_POSTGRES_URL")
GATEWAY_APP = "sandbox.gateway.main:create_app"
PAYMENTS_APP = "services.payments.main:create_app"
NOWHERE = "http://127.0.0.1:9"  # the other services take no part in this measurement
LOCK_SAMPLE_S = 0.01
BUSY = 0.9  # a machine this busy (share of its cores) has no CPU left for another replica


# --- throwaway databases -------------------------------------------------------------------------


@contextmanager
def throwaway_database(admin_url: str, purpose: str) -> Iterator[tuple[str, str]]:
    """CREATE a uniquely named database, yield (its URL, its name), DROP it afterwards."""
    import psycopg

    name = f"bench_replicas_{purpose}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}", name
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _unreachable(admin_url: str) -> str | None:
    """Why PostgreSQL at `admin_url` cannot be used, or None when it can."""
    try:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 (missing driver, unreachable, refused: all skip)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"
    return None


# --- the replicas ----------------------------------------------------------------------------------


@dataclass
class Process:
    label: str
    proc: subprocess.Popen
    url: str
    log: Path

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(f"      {line}" for line in text[-lines:]) or "      (empty log)"


class Replicas:
    """`n` gateway → payments pairs on the same two databases, started one pair after the other
    (as a rollout starts pods: the first makes the tables, the second finds them)."""

    def __init__(self, gateway_db: str, payments_db: str, workdir: Path) -> None:
        self.gateway_db, self.payments_db, self.workdir = gateway_db, payments_db, workdir
        self.gateways: list[Process] = []
        self.payments: list[Process] = []

    def start(self, n: int) -> None:
        """Pair by pair; a pair's gateway and payments together (they use different databases)."""
        for i in range(1, n + 1):
            pay_port, gw_port = free_port(), free_port()
            pay_url, gw_url = f"http://127.0.0.1:{pay_port}", f"http://127.0.0.1:{gw_port}"
            data, pay_log, gw_log = self.workdir / f"replica-{i}", self.workdir / f"payments-{i}.log", \
                self.workdir / f"gateway-{i}.log"
            self.payments.append(Process(f"payments {i}", start(PAYMENTS_APP, pay_port, {
                "PAYMENTS_DATABASE_URL": self.payments_db, "PAYMENTS_DATA_DIR": str(data),
                "PAYMENTS_LOG_LEVEL": "WARNING"}, pay_log), pay_url, pay_log))
            self.gateways.append(Process(f"gateway {i}", start(GATEWAY_APP, gw_port, {
                "GATEWAY_DATABASE_URL": self.gateway_db, "GATEWAY_DATA_DIR": str(data),
                "GATEWAY_UPSTREAM_PAYMENTS": pay_url, "GATEWAY_UPSTREAM_CREDIT": NOWHERE,
                "GATEWAY_UPSTREAM_ADVISOR": NOWHERE, "GATEWAY_UPSTREAM_OPENBANKING": NOWHERE,
                "GATEWAY_LOG_LEVEL": "WARNING"}, gw_log), gw_url, gw_log))
            wait_ready(pay_url, self.payments[-1].proc, service="payments")
            wait_ready(gw_url, self.gateways[-1].proc, service="gateway")

    @property
    def processes(self) -> list[Process]:
        return [p for i, pay in enumerate(self.payments) for p in (pay, *self.gateways[i:i + 1])]

    def stop(self) -> None:
        stop([p.proc for p in reversed(self.processes)])


# --- load: keep-alive clients spread over the gateways ------------------------------------------

_ClientArgs = tuple[str, int, str, list[str], list[bytes] | None, dict[str, str], float, float, int]


def _client(args: _ClientArgs) -> tuple[list[float], dict[int, int], int, float]:
    """One keep-alive connection sending requests until `stop_at`: (latencies, statuses, dropped
    connections, last end). Like sandbox.bench.load's client, but GET too, and every status kept."""
    host, port, method, paths, bodies, headers, start_at, stop_at, seed = args
    rng = random.Random(seed)
    if bodies:
        headers = {**headers, "Content-Type": "application/json"}
    conn = http.client.HTTPConnection(host, port, timeout=30)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    dropped = 0
    while time.time() < start_at:
        time.sleep(0.001)
    while time.time() < stop_at:
        t0 = time.perf_counter()
        try:
            conn.request(method, rng.choice(paths), body=rng.choice(bodies) if bodies else None, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            dropped += 1  # reconnect and go on
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            time.sleep(0.01)
            continue
        latencies.append(time.perf_counter() - t0)
        statuses[response.status] += 1
    conn.close()
    return latencies, dict(statuses), dropped, time.time()


@dataclass
class Phase:
    """One load phase over every gateway."""

    expect: int
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    dropped: int = 0
    elapsed: float = 0.0
    per_gateway: list[int] = field(default_factory=list)  # answers each gateway gave

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def ok(self) -> int:
        return self.statuses.get(self.expect, 0)

    @property
    def errors(self) -> int:
        return self.requests - self.ok + self.dropped

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def pct(self) -> tuple[float, float]:
        p50, p99 = percentiles(self.latencies) if self.latencies else (0.0, 0.0)
        return p50 * 1000, p99 * 1000

    def odd_answers(self) -> str:
        odd = {s: n for s, n in sorted(self.statuses.items()) if s != self.expect}
        parts = [f"{n}× {s}" for s, n in odd.items()] + ([f"{self.dropped} dropped"] if self.dropped else [])
        return ", ".join(parts)


def _run_phase(pool: Any, gateways: list[str], method: str, paths: list[str], bodies: list[bytes] | None,
               headers: dict[str, str], clients: int, seconds: float, seed: int, expect: int,
               on_start: Callable[[], None] | None = None) -> Phase:
    """`clients` connections, client i to gateway i mod n, for `seconds`; `on_start` is called
    when the clients start sending (the clients' processes are ready by then)."""
    start_at = time.time() + 0.3
    jobs = []
    for i in range(clients):
        host, port = gateways[i % len(gateways)].removeprefix("http://").split(":")
        jobs.append((host, int(port), method, paths, bodies, headers, start_at, start_at + seconds, seed + i))
    pending = pool.map_async(_client, jobs)
    if on_start is not None:
        time.sleep(max(0.0, start_at - time.time()))
        on_start()
    results = pending.get()
    phase = Phase(expect)
    phase.per_gateway = [0] * len(gateways)
    for i, (latencies, statuses, dropped, _) in enumerate(results):
        phase.latencies += latencies
        phase.statuses.update(statuses)
        phase.dropped += dropped
        phase.per_gateway[i % len(gateways)] += len(latencies)
    phase.latencies.sort()
    phase.elapsed = max(seconds, max(r[3] for r in results) - start_at)  # the last may end late
    return phase


# --- where the CPU went, and the locks ---------------------------------------------------------------


def _machine_s() -> tuple[float, float] | None:
    """(busy, iowait): CPU seconds the whole machine (every core) has spent busy, and idle with
    a disk write or read outstanding, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / ticks, iowait / ticks


class Postgres:
    """The PostgreSQL server's processes, when it runs on this machine: the backends serving the
    run's databases, and everything else under the postmaster."""

    def __init__(self, admin_url: str, databases: list[str]) -> None:
        self.admin_url = admin_url
        self.databases = databases
        self.postmaster: int | None = None

    def backends(self) -> dict[int, float]:
        """CPU seconds so far of each backend serving the run's databases ({} when unreadable)."""
        out = {pid: cpu for name in self.databases for pid, cpu in _pg_backends_cpu(self.admin_url, name).items()}
        if self.postmaster is None and out:
            try:
                with open(f"/proc/{next(iter(out))}/stat") as f:
                    self.postmaster = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                pass
        return out

    def everything(self) -> float | None:
        return cpu_seconds(self.postmaster) if self.postmaster else None


@dataclass
class CpuSnapshot:
    at: float
    machine: tuple[float, float] | None
    processes: dict[str, float | None]
    backends: dict[int, float]
    postgres_all: float | None
    load_generator: float
    bench: float | None


def _snapshot(replicas: Replicas, pg: Postgres) -> CpuSnapshot:
    servers = {p.proc.pid for p in replicas.processes}
    me = os.getpid()
    workers = [pid for pid in descendants(me) if pid not in servers]
    backends = pg.backends()
    return CpuSnapshot(
        at=time.monotonic(), machine=_machine_s(),
        processes={p.label: cpu_seconds(p.proc.pid) for p in replicas.processes},
        backends=backends, postgres_all=pg.everything(),
        load_generator=sum(cpu_seconds(pid, include_children=False) or 0.0 for pid in workers),
        bench=cpu_seconds(me, include_children=False))


@dataclass
class CpuUse:
    """CPU seconds between two snapshots: each of the run's parts, and the whole machine's."""

    wall: float
    parts: dict[str, float | None]  # None: not readable here
    machine: float | None = None  # busy, every core
    iowait: float | None = None  # idle with disk I/O outstanding, every core

    @property
    def run(self) -> float:
        return sum(v for v in self.parts.values() if v is not None)

    @property
    def others(self) -> float | None:
        return None if self.machine is None else max(0.0, self.machine - self.run)

    def cores(self, prefix: str) -> float:
        """Cores the parts whose label starts with `prefix` kept busy (CPU s per wall s)."""
        return sum(v or 0.0 for k, v in self.parts.items() if k.startswith(prefix)) / self.wall


def _cpu_used(before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
    def delta(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, b - a)

    parts: dict[str, float | None] = {label: delta(before.processes[label], cpu)
                                      for label, cpu in after.processes.items()}
    backends = sum(cpu - before.backends.get(pid, 0.0) for pid, cpu in after.backends.items())
    parts["PostgreSQL, the run's backends"] = backends if after.backends else None
    everything = delta(before.postgres_all, after.postgres_all)
    parts["PostgreSQL, its other processes"] = None if everything is None else max(0.0, everything - backends)
    parts["load generator"] = after.load_generator - before.load_generator
    parts["this bench (lock sampler)"] = delta(before.bench, after.bench)
    use = CpuUse(after.at - before.at, parts)
    if before.machine is not None and after.machine is not None:
        use.machine = after.machine[0] - before.machine[0]
        use.iowait = after.machine[1] - before.machine[1]
    return use


class LockSampler:
    """Samples pg_locks every LOCK_SAMPLE_S in a thread: how often the gateway's log lock and
    decision lock were held in its database, and how many waited for each."""

    LOCKS: ClassVar[dict[str, int]] = {"log lock": LOG_LOCK, "decision lock": DECISION_LOCK}

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin_url = admin_url
        self.database = database
        self.samples = 0
        self.held: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _sample(self) -> None:
        import psycopg

        by_objid = {key & 0xFFFF_FFFF: name for name, key in self.LOCKS.items()}
        classid = LOG_LOCK >> 32
        assert all(key >> 32 == classid for key in self.LOCKS.values())
        query = ("SELECT objid::bigint, granted, count(*) FROM pg_locks WHERE locktype = 'advisory' "
                 "AND database = (SELECT oid FROM pg_database WHERE datname = %s) AND classid::bigint = %s "
                 "GROUP BY 1, 2")
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            while not self._stop.is_set():
                for objid, granted, n in conn.execute(query, (self.database, classid)):
                    name = by_objid.get(objid)
                    if name is not None and granted:
                        self.held[name] += 1
                    elif name is not None:
                        self.waiting[name] += n
                self.samples += 1
                self._stop.wait(LOCK_SAMPLE_S)

    def held_share(self, name: str) -> float:
        return self.held[name] / self.samples if self.samples else 0.0

    def mean_waiting(self, name: str) -> float:
        return self.waiting[name] / self.samples if self.samples else 0.0


# --- correctness -----------------------------------------------------------------------------------


def _regulator(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": DEMO_REGULATOR_KEY}, timeout=120)


def admit_bench_participant(gateway: str) -> tuple[str, str]:
    """A participant with limits the load never reaches: (its id, its key)."""
    with _regulator(gateway) as regulator:
        r = regulator.post("/sandbox/participants", json={
            "name": f"Replicas Bench {uuid.uuid4().hex[:6]}", "services": ["payments"], "limits": {
                "max_single_transaction": "1000000.00", "daily_volume": "100000000000.00",
                "max_customers": 1_000_000, "rate_limit_per_minute": 100_000}})
    if r.status_code != 201:
        raise RuntimeError(f"admitting the bench participant: {r.status_code} {r.text[:300]}")
    return r.json()["id"], r.json()["api_key"]


def _activity(gateway: str, participant_id: str) -> dict[str, Any]:
    with _regulator(gateway) as regulator:
        r = regulator.get(f"/sandbox/participants/{participant_id}/activity")
    r.raise_for_status()
    report = r.json()
    report["volume_minor"] = to_minor(report["volume"]["amount"], report["volume"]["currency"])
    return report


def _ledger_for(payments_db: str, participant_id: str) -> tuple[int, int]:
    """(journals, their sum in minor units) the ledger holds under the participant's idempotency
    scope: what it moved through the gateway."""
    import psycopg

    with psycopg.connect(payments_db, connect_timeout=5) as conn:
        n, total = conn.execute(
            "SELECT count(*), coalesce(sum(j.amount_minor), 0) FROM journals j "
            "JOIN idempotency_keys k ON k.id = j.idempotency_key_id WHERE k.scope = %s",
            (participant_id,)).fetchone()
    return int(n), int(total)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _verify_chain(gateways: list[str]) -> Check:
    """Every gateway verifies the log, and all name the same size and head. An entry appended
    between two answers (a reconciliation) would differ them: asked again once."""
    for attempt in range(2):
        answers = []
        for url in gateways:
            with _regulator(url) as regulator:
                answers.append(regulator.get("/sandbox/audit/verify").json())
        heads = {(a["size"], a["head_hash"]) for a in answers}
        if all(a["ok"] for a in answers) and len(heads) == 1:
            size, head = heads.pop()
            same = f", the same head on all {len(gateways)}" if len(gateways) > 1 else ""
            return Check("audit log", True, f"verifies: {size:,} entries, head {head[:12]}…{same}")
        if attempt == 0:
            time.sleep(1)
    detail = "; ".join(f"gateway {i}: ok={a['ok']} size={a['size']} head={a['head_hash'][:12]}… "
                       f"first_broken={a['first_broken']}" for i, a in enumerate(answers, 1))
    return Check("audit log", False, detail)


def check_transfers(replicas: Replicas, payments_db: str, participant_id: str, before: dict[str, Any],
                    answered: int, server_errors: int) -> list[Check]:
    """After the transfer load: the ledger, the counts, the chain, the 5xx."""
    checks = []
    invariants = httpx.get(f"{replicas.payments[0].url}/invariants", timeout=300).json()
    failing = [c["name"] for c in invariants.get("checks", []) if not c.get("ok")]
    checks.append(Check("ledger invariants", bool(invariants.get("ok")),
                        f"{invariants.get('journals', 0):,} journals"
                        + (f"; failing: {', '.join(failing)}" if failing else "")))
    journals, ledger_minor = _ledger_for(payments_db, participant_id)
    reports = [_activity(g.url, participant_id) for g in replicas.gateways]
    counted = reports[0]["succeeded"] - before["succeeded"]
    volume = reports[0]["volume_minor"] - before["volume_minor"]
    checks.append(Check("2xx = journals = counted", answered == journals == counted,
                        f"{answered:,} answered 2xx, {journals:,} journals in the ledger, "
                        f"{counted:,} succeeded in the activity report"))
    checks.append(Check("volume = ledger", volume == ledger_minor,
                        f"activity volume {volume / 100:,.2f} CNY, "
                        f"the ledger's journals {ledger_minor / 100:,.2f} CNY"))
    if len(reports) > 1:
        keys = ("requests", "succeeded", "failed", "volume_minor")
        same = all({k: r[k] for k in keys} == {k: reports[0][k] for k in keys} for r in reports)
        checks.append(Check("one activity report", same, "every gateway reports the same requests and volume"
                            if same else "; ".join(str({k: r[k] for k in keys}) for r in reports)))
    checks.append(_verify_chain([g.url for g in replicas.gateways]))
    failed = reports[0]["failed"] - before["failed"]
    checks.append(Check("no 5xx", server_errors == 0 and failed == 0,
                        f"{server_errors} answered, {failed} logged"))
    return checks


# --- one run ------------------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    gateways: int
    transfers: Phase | None = None
    reads: Phase | None = None
    transfer_cpu: CpuUse | None = None
    read_cpu: CpuUse | None = None
    locks: dict[str, tuple[float, float]] = field(default_factory=dict)  # name → (held share, mean waiting)
    read_locks: dict[str, tuple[float, float]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    rss_idle: dict[str, float | None] = field(default_factory=dict)
    rss_loaded: dict[str, float | None] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return all(c.ok for c in self.checks)


def _measured(pool: Any, replicas: Replicas, pg: Postgres, gateway_db: str,
              **phase: Any) -> tuple[Phase, CpuUse, dict[str, tuple[float, float]]]:
    """One measured phase with the CPU and lock figures taken over it, from its first request."""
    sampler = LockSampler(pg.admin_url, gateway_db)
    before: list[CpuSnapshot] = []

    def begin() -> None:
        before.append(_snapshot(replicas, pg))
        sampler.start()

    try:
        result = _run_phase(pool, [g.url for g in replicas.gateways], on_start=begin, **phase)
    finally:
        sampler.stop()
    cpu = _cpu_used(before[0], _snapshot(replicas, pg))
    locks = {name: (sampler.held_share(name), sampler.mean_waiting(name)) for name in LockSampler.LOCKS}
    return result, cpu, locks


@dataclass
class Setup:
    """What the load needs, made before it (not measured)."""

    participant: str
    headers: dict[str, str]
    bodies: list[bytes]  # the transfers
    readable: list[str]  # accounts the participant opened, for the reads


def _set_up(replicas: Replicas, args: argparse.Namespace) -> Setup:
    participant, key = admit_bench_participant(replicas.gateways[0].url)
    bodies = transfer_bodies(funded_pairs(replicas.payments[0].url, args.pairs))
    with httpx.Client(base_url=replicas.gateways[0].url, headers={"X-API-Key": key}, timeout=30) as http:
        readable = [http.post("/payments/accounts", json={"kind": "personal", "currency": "CNY",
                                                          "owner_name": f"Read {i}"}).json()["id"]
                    for i in range(args.read_accounts)]
    return Setup(participant, {"X-API-Key": key}, bodies, readable)


def _drive(run: Run, replicas: Replicas, pg: Postgres, gateway_name: str, payments_db: str,
           args: argparse.Namespace) -> None:
    """Set up, then the transfers (warm-up, measured, checked), then the reads."""
    setup = _set_up(replicas, args)
    time.sleep(0.5)  # start-up allocations settle before idle memory is read
    run.rss_idle = {p.label: rss_mb(p.proc.pid) for p in replicas.processes}
    before = _activity(replicas.gateways[0].url, setup.participant)
    gateways = [g.url for g in replicas.gateways]
    transfer = {"method": "POST", "paths": ["/payments/transfers"], "bodies": setup.bodies,
                "headers": setup.headers, "clients": args.clients, "expect": 201}
    print(f"  {run.label}: transfers ...", flush=True)
    with multiprocessing.get_context("fork").Pool(args.clients) as pool:
        warm = _run_phase(pool, gateways, seconds=args.warmup, seed=0, **transfer)
        run.transfers, run.transfer_cpu, run.locks = _measured(
            pool, replicas, pg, gateway_name, seconds=args.seconds, seed=100, **transfer)
        run.rss_loaded = {p.label: rss_mb(p.proc.pid) for p in replicas.processes}
        run.checks = check_transfers(replicas, payments_db, setup.participant, before, warm.ok + run.transfers.ok,
                                     warm.server_errors + run.transfers.server_errors)
        if not args.reads:
            return
        print(f"  {run.label}: reads ...", flush=True)
        read = {"method": "GET", "paths": [f"/payments/accounts/{a}" for a in setup.readable], "bodies": None,
                "headers": setup.headers, "clients": args.clients, "expect": 200}
        _run_phase(pool, gateways, seconds=min(args.warmup, 1.0), seed=200, **read)
        run.reads, run.read_cpu, run.read_locks = _measured(
            pool, replicas, pg, gateway_name, seconds=args.seconds, seed=300, **read)
    chain = _verify_chain(gateways)
    run.checks.append(Check("after the reads: " + chain.name, chain.ok, chain.detail))
    run.checks.append(Check("after the reads: no 5xx", run.reads.server_errors == 0,
                            f"{run.reads.server_errors} answered"))


def _stop(run: Run, replicas: Replicas) -> None:
    """Stop every process; keep the tail of each log when something went wrong."""
    exited = [p for p in replicas.processes if p.proc.poll() is not None]
    replicas.stop()
    failed = not run.checks or not run.correct or exited or any(
        ph is not None and (ph.server_errors or ph.dropped) for ph in (run.transfers, run.reads))
    if failed:
        run.logs = [f"    {p.label} ({'exited ' + str(p.proc.returncode) if p in exited else 'ran'}), "
                    f"last lines of its log:\n{p.tail()}" for p in replicas.processes]


def measure(label: str, n: int, admin_url: str, args: argparse.Namespace) -> Run:
    """One run: `n` replicas on two throwaway databases, driven, checked, stopped, dropped."""
    run = Run(label, n)
    try:
        with ExitStack() as resources:
            workdir = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="bench-replicas-")))
            gateway_db, gateway_name = resources.enter_context(throwaway_database(admin_url, "gateway"))
            payments_db, payments_name = resources.enter_context(throwaway_database(admin_url, "payments"))
            replicas = Replicas(gateway_db, payments_db, workdir)
            try:
                print(f"  {label}: starting ...", flush=True)
                replicas.start(n)
                _drive(run, replicas, Postgres(admin_url, [gateway_name, payments_name]), gateway_name,
                       payments_db, args)
            except Exception as exc:  # noqa: BLE001 (reported with the processes' logs; the other run goes on)
                run.checks.append(Check("the run", False, f"{type(exc).__name__}: {exc}"))
            finally:
                _stop(run, replicas)
    except Exception as exc:  # noqa: BLE001 (the throwaway databases could not be made or dropped)
        run.checks.append(Check("its databases", False, f"{type(exc).__name__}: {exc}"))
    return run


# --- the report --------------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _cpu_table(runs: list[Run], attr: str, cpus: int) -> None:
    measured: list[tuple[Run, CpuUse]] = [(r, getattr(r, attr)) for r in runs if getattr(r, attr) is not None]
    if not measured:
        return
    labels: list[str] = []
    for _, use in sorted(measured, key=lambda m: -len(m[1].parts)):
        labels += [k for k in use.parts if k not in labels]

    def row(label: str, values: list[float | None | str]) -> None:
        cells = "".join(f"{v:>14}" if isinstance(v, str) else f"{'-' if v is None else f'{v:.2f}':>14}"
                        for v in values)
        print(f"    {label:<38}{cells}")

    row("CPU seconds", [r.label.split(":")[0] for r, _ in measured])
    for label in labels:
        row(label, [use.parts.get(label, "") for _, use in measured])
    row("the run, all", [use.run for _, use in measured])
    row("other jobs on the machine", [use.others for _, use in measured])
    row("machine, all", [use.machine for _, use in measured])
    row("wall seconds", [use.wall for _, use in measured])
    row("cores busy (machine / wall)", [f"{use.machine / use.wall:.2f} of {cpus}" if use.machine is not None else "-"
                                        for _, use in measured])
    row("cores idle in iowait", [None if use.iowait is None else use.iowait / use.wall for _, use in measured])


def _phase_table(runs: list[Run], attr: str, what: str) -> None:
    print(f"\n  {what}")
    print(f"    {'run':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'5xx':>6}   per gateway")
    for r in runs:
        ph: Phase | None = getattr(r, attr)
        if ph is None:
            continue
        p50, p99 = ph.pct()
        split = " + ".join(f"{n / ph.elapsed:,.0f}" for n in ph.per_gateway)
        print(f"    {r.label:<34}{ph.rps:>9,.0f}{p50:>9.2f}{p99:>9.2f}{ph.errors:>8}{ph.server_errors:>6}   {split}")
        if ph.odd_answers():
            print(f"      not {ph.expect}: {ph.odd_answers()}")
    phases = [getattr(r, attr) for r in runs]
    if len(phases) == 2 and all(phases) and phases[0].rps:
        print(f"    two / one: {phases[1].rps / phases[0].rps:.0%}")


def _cpu_per_request(phase: Phase | None, use: CpuUse | None) -> float | None:
    """Milliseconds of CPU, every process of the run, per answer."""
    if phase is None or use is None or not phase.requests:
        return None
    return use.run * 1000 / phase.requests


def _limits(runs: list[Run], cpus: int) -> None:
    """What limits it, said with the numbers (the transfers' measured phase)."""
    print("\n  what limits it")
    if len(runs) != 2 or any(r.transfers is None or r.transfer_cpu is None for r in runs):
        print("    (needs both runs' transfers)")
        return
    uses: list[CpuUse] = [r.transfer_cpu for r in runs]  # type: ignore[misc]
    for r, use in zip(runs, uses, strict=True):
        machine = f"{use.machine / use.wall:.2f} of {cpus} cores busy" if use.machine is not None else "machine: -"
        iowait = f", {use.iowait / use.wall:.2f} idle in iowait" if use.iowait is not None else ""
        others = f"; other jobs {use.others / use.wall:.2f}" if use.others is not None else ""
        print(f"    - {r.label.split(':')[0]}: {machine}{iowait}: the run's processes {use.run / use.wall:.2f} "
              f"(gateways {use.cores('gateway'):.2f}, payments {use.cores('payments'):.2f}, PostgreSQL "
              f"{use.cores('PostgreSQL'):.2f}, load generator {use.cores('load generator'):.2f}, lock sampler "
              f"{use.cores('this bench'):.2f}){others}")
    per = [_cpu_per_request(r.transfers, r.transfer_cpu) for r in runs]
    if per[0] and per[1]:
        print(f"    - CPU per transfer, every process of the run: {per[0]:.2f} ms with one, {per[1]:.2f} ms with two "
              f"({per[1] / per[0] - 1:+.0%}); {cpus} cores of its own would carry at most about "
              f"{cpus * 1000 / per[0]:,.0f} and {cpus * 1000 / per[1]:,.0f} transfers/s")
    busy = [use.machine / use.wall if use.machine is not None else None for use in uses]
    full = [b is not None and b >= BUSY * cpus for b in busy]
    if full[1]:
        grew = (uses[1].run / uses[1].wall) - (uses[0].run / uses[0].wall)
        taken = ""
        if grew > 0.05 and uses[0].others is not None and uses[1].others is not None:
            taken = (f"; the {grew:.2f} cores more that the run used were taken from other jobs "
                     f"({uses[0].others / uses[0].wall:.2f} → {uses[1].others / uses[1].wall:.2f} cores), and that "
                     "share, not the replica, is what moves two/one on a shared machine")
        print(f"    - with two replicas the {cpus} cores are full{' (with one too)' if full[0] else ''}: the second "
              f"replica brings no CPU of its own, it shares the same {cpus} (gateways {uses[0].cores('gateway'):.2f} "
              f"cores as one process, {uses[1].cores('gateway'):.2f} as two){taken}. With gateways, payments, "
              f"PostgreSQL and the load generator on {cpus} cores, throughput is the cores over the CPU per transfer, "
              "and a second replica costs CPU (it catches up the other's entries, and every lock is a round trip): "
              "replicas pay on more cores or machines")
    if not full[0] and busy[0] is not None:
        print(f"    - with one replica the machine had room ({busy[0]:.2f} of {cpus} cores busy): the "
              "clients waited on each transfer's chain of round trips and commits (intent, ledger, outcome; "
              "each commit a WAL flush) "
              "rather than on CPU")
    for r in runs:
        print(f"    - {r.label.split(':')[0]}: " + "; ".join(
            f"{what} {_held(locks, phase, per)}" for what, per, locks, phase in (
                ("transfers", "transfer", r.locks, r.transfers), ("reads", "read", r.read_locks, r.reads))
            if phase is not None))
    others = [use.others / use.wall for use in uses if use.others is not None]
    if others and max(others) > 0.25:
        print(f"    - other jobs on the machine used {' and '.join(f'{o:.2f}' for o in others)} of the {cpus} cores "
              "during the two runs: the req/s are what was left to the run, and the CPU figures (per transfer, "
              "by process) are the steadier ones")
    log_two = runs[1].locks.get("log lock", (0.0, 0.0))[0]
    if log_two >= BUSY:
        print(f"    - the log lock is held {log_two:.0%} of the time with two: appends are serialised, and that "
              "bounds throughput whatever the cores")
    elif log_two > 0 and runs[1].transfers:
        print(f"    - the log lock serialises appends (a transfer's intent and outcome, the relay storing its event; a "
              f"read's one entry): held {log_two:.0%} of the time with two, it is not the bound here. It would be at "
              f"about {runs[1].transfers.rps / log_two:,.0f} transfers/s if its hold per transfer stayed as "
              "measured (a holder on busy cores also waits for a core: on a machine with room the hold is shorter)")


def _held(locks: dict[str, tuple[float, float]], phase: Phase, per: str) -> str:
    """'log lock held 30% of the time (~6.5 ms a transfer, 0.01 waiting), ...'."""
    return ", ".join(f"{name} held {share:.0%} of the time (~{share * 1000 / phase.rps if phase.rps else 0:.1f} ms "
                     f"a {per}, {waiting:.2f} waiting)" if share or waiting else f"{name} never held"
                     for name, (share, waiting) in locks.items())


def _report(runs: list[Run], cpus: int) -> None:
    _phase_table(runs, "transfers", "POST /payments/transfers through the gateway(s)")
    if any(r.reads for r in runs):
        _phase_table(runs, "reads", "GET /payments/accounts/{id} through the gateway(s)")
    for r in runs:
        print(f"\n  correctness, {r.label}:")
        for c in r.checks:
            print(f"    {'ok    ' if c.ok else 'FAILED'} {c.name}: {c.detail}")
        if not r.checks:
            print("    FAILED: the run did not get as far as its checks")
        print(f"    all checks {'ok' if r.correct and r.checks else 'NOT ok'}")
    print("\n  where the CPU went, transfers (measured phase)")
    _cpu_table(runs, "transfer_cpu", cpus)
    if any(r.read_cpu for r in runs):
        print("\n  where the CPU went, reads (measured phase)")
        _cpu_table(runs, "read_cpu", cpus)
    print("\n  resident memory (RSS, MiB)            idle   after the transfers")
    for r in runs:
        for label, idle in r.rss_idle.items():
            print(f"    {r.label.split(':')[0] + ', ' + label:<34}{_mb(idle):>9}{_mb(r.rss_loaded.get(label)):>14}")
    _limits(runs, cpus)
    for r in runs:
        if r.logs:
            print(f"\n  {r.label}: something went wrong; the processes' logs:")
            print("\n".join(r.logs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fintech-sandbox bench replicas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default_url = next((os.environ[e] for e in POSTGRES_ENVS if os.environ.get(e)), None)
    parser.add_argument("--postgres-url", default=default_url,
                        help="a PostgreSQL server where the user may CREATE DATABASE (default $"
                             + " or $".join(POSTGRES_ENVS) + ")")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before the transfers")
    parser.add_argument("--clients", type=int, default=4,
                        help="load-generator processes, one keep-alive connection each, split evenly over the gateways")
    parser.add_argument("--pairs", type=int, default=64, help="funded payer/payee account pairs")
    parser.add_argument("--read-accounts", type=int, default=8, help="accounts the read phase reads")
    parser.add_argument("--reads", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure reads (GET /payments/accounts/{id}) after the transfers")
    args = parser.parse_args(argv)

    if not args.postgres_url:
        print("skipped: the replicas benchmark needs PostgreSQL (several gateways share one database). Run it as\n"
              f"  {POSTGRES_ENVS[0]}=postgresql://postgres@127.0.0.1:5432/postgres make bench\n"
              "or  .venv/bin/python -m sandbox bench replicas --postgres-url postgresql://USER@HOST:5432/DB\n"
              "(a server where that user may CREATE DATABASE; the run makes and drops its own databases).")
        return 0
    why = _unreachable(args.postgres_url)
    if why is not None:
        print(f"skipped: PostgreSQL at {_redact(args.postgres_url)} cannot be used ({why}); "
              f"set --postgres-url or ${POSTGRES_ENVS[0]}")
        return 0
    if args.clients % 2:
        print(f"note: {args.clients} clients do not split evenly over two gateways")
    cpus = os.cpu_count() or 1
    print(f"one gateway + one payments against two of each, on PostgreSQL ({_redact(args.postgres_url)}); "
          f"POST /payments/transfers, 1.00 CNY between {args.pairs} random funded pairs, {args.clients} keep-alive "
          f"clients split evenly over the gateways; {args.warmup:g} s warm-up then {args.seconds:g} s measured; "
          f"one uvicorn worker per process; {cpus} CPUs; {_load_average()}", flush=True)
    started = time.monotonic()
    runs = [measure("one: 1 gateway + 1 payments", 1, args.postgres_url, args),
            measure("two: 2 gateways + 2 payments", 2, args.postgres_url, args)]
    _report(runs, cpus)
    print(f"\n  {_load_average()} at the end; the whole benchmark took {time.monotonic() - started:.0f} s")
    return 0 if all(r.correct and r.checks for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
