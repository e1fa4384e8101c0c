"""The benchmarks' shared kit: start real servers, drive keep-alive load at them, read memory.

- `start` / `wait_ready` / `stop`: a uvicorn subprocess per app, one worker, no access log.
- `load`: several load-generator processes, each holding one keep-alive `http.client`
  connection (a cheap client, so the server is what gets measured), a warm-up phase and then
  a measured one; throughput, p50/p99 and errors.
- `serve`: an app on a loopback port in a thread of this process (for in-process figures).
- `percentiles`, `time_ms`: latency samples of a callable.
- `rss_mb`, `cpu_seconds`: resident memory and CPU time of a process (and its children), from /proc.
- `funded_pairs`, `transfer_bodies`: payer/payee wallets and the transfers between them.

Nothing here imports from tests/: benchmarks are commands a user runs, not tests.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(app: str, port: int, env: dict[str, str], log: Path, *, factory: bool = True) -> subprocess.Popen:
    """`app` ("module:factory") under uvicorn on 127.0.0.1:`port`, one worker, no access log."""
    cmd = [sys.executable, "-m", "uvicorn", *(["--factory"] if factory else []), app,
           "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60, path: str = "/readyz",
               service: str | None = None) -> None:
    """Poll `url` + `path` until it answers 200; with `service`, the answer's JSON must also name
    it (`{"service": ...}`), so another server that took the port meanwhile is not mistaken
    for ours. Raises RuntimeError when the process exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            r = httpx.get(f"{url}{path}", timeout=1)
            if r.status_code == 200 and (service is None or r.json().get("service") == service):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def stop(processes: list[subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM each (uvicorn shuts down cleanly), then wait; SIGKILL what does not stop."""
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- load generation ------------------------------------------------------------------------

_WorkerArgs = tuple[str, int, str, dict[str, str], list[bytes], float, float, int, int]
UNIQUE = "<unique>"  # a header with this value gets a new value on every request (Idempotency-Key)


def _worker(args: _WorkerArgs) -> tuple[list[float], int, int, float]:
    """One keep-alive connection sending POSTs until `stop_at`: (latencies, ok, errors, last end)."""
    host, port, path, headers, bodies, start_at, stop_at, seed, expect = args
    rng = random.Random(seed)
    headers = {**headers, "Content-Type": "application/json"}
    unique = [name for name, value in headers.items() if value == UNIQUE]
    sent = 0
    conn = http.client.HTTPConnection(host, port, timeout=30)
    latencies: list[float] = []
    ok = errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        t0 = time.perf_counter()
        if time.time() >= stop_at:
            break
        for name in unique:
            sent += 1
            headers[name] = f"bench-{seed}-{sent}-{rng.random()}"
        try:
            conn.request("POST", path, body=rng.choice(bodies), headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            # A dropped connection counts as an error; reconnect and go on.
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=30)
            time.sleep(0.01)
            continue
        latencies.append(time.perf_counter() - t0)
        if response.status == expect:
            ok += 1
        else:
            errors += 1
    conn.close()
    return latencies, ok, errors, time.time()


def _phase(pool: Any, host: str, port: int, path: str, headers: dict[str, str], bodies: list[bytes],
           clients: int, seconds: float, seed: int, expect: int) -> tuple[list[float], int, int, float]:
    start_at = time.time() + 0.3
    results = pool.map(_worker, [(host, port, path, headers, bodies, start_at, start_at + seconds, seed + i, expect)
                                 for i in range(clients)])
    latencies = sorted(x for r in results for x in r[0])
    ok = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    # The last requests may end a little after the deadline: divide by the time really taken.
    elapsed = max(seconds, max(r[3] for r in results) - start_at)
    return latencies, ok, errors, elapsed


def load(url: str, path: str, headers: dict[str, str], bodies: list[bytes], clients: int,
         seconds: float, warmup: float, expect: int = 201) -> dict[str, float]:
    """POST a random one of the pre-encoded JSON `bodies` to `url` + `path`, again and again, from
    `clients` processes (one keep-alive connection each): `warmup` seconds unmeasured (connections,
    caches, database pages), then `seconds` measured. Any status other than `expect`, or a
    dropped connection, is an error.

    Returns requests (responses in the measured phase), ok (those with `expect`), errors, rps
    (responses per second), ok_rps, p50_ms, p99_ms, elapsed_s, and the warm-up's own
    warmup_requests and warmup_ok."""
    host, port = url.removeprefix("http://").split(":")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(clients) as pool:
        warm, warm_ok = [], 0
        if warmup > 0:
            warm, warm_ok, _, _ = _phase(pool, host, int(port), path, headers, bodies, clients, warmup, 0, expect)
        latencies, ok, errors, elapsed = _phase(pool, host, int(port), path, headers, bodies, clients, seconds,
                                                100, expect)
    p50, p99 = percentiles(latencies) if latencies else (0.0, 0.0)
    return {
        "requests": len(latencies), "ok": ok, "errors": errors,
        "rps": len(latencies) / elapsed, "ok_rps": ok / elapsed,
        "p50_ms": p50 * 1000, "p99_ms": p99 * 1000, "elapsed_s": elapsed,
        "warmup_requests": len(warm), "warmup_ok": warm_ok,
    }


# --- in-process timing ----------------------------------------------------------------------


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of the samples, in their unit."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, max(0, int(round(0.99 * len(ordered))) - 1))]
    return statistics.median(ordered), p99


def time_ms(call: Callable[[], object], n: int, warmup: int = 20) -> list[float]:
    """`n` timings of `call` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve the ASGI `app` on 127.0.0.1 at a free port from a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- memory ---------------------------------------------------------------------------------


def _vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0  # a zombie has no VmRSS line


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields after the last ')'.
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_mb(pid: int, include_children: bool = True) -> float | None:
    """Resident memory (VmRSS) of `pid`, plus its descendants', in MiB; None off Linux or when
    the process is gone. Summing RSS counts pages the processes share once per process, so the
    total is an upper bound."""
    if not os.path.exists(f"/proc/{pid}/status"):
        return None
    pids = [pid, *(descendants(pid) if include_children else [])]
    total = 0
    for p in pids:
        try:
            total += _vm_rss_kb(p)
        except OSError:
            pass  # exited meanwhile
    return total / 1024


# --- payments fixtures (the payments and gateway benchmarks both move money) -----------------


def funded_pairs(payments_url: str, pairs: int, balance: str = "1000000.00") -> list[tuple[str, str]]:
    """Open `pairs` payer/payee CNY wallets directly on payments and top each payer up by
    `balance` from the test card that pays. Setup, not measured."""
    out = []
    with httpx.Client(base_url=payments_url, timeout=30) as client:
        for i in range(pairs):
            ids = []
            for role in ("payer", "payee"):
                r = client.post("/accounts", json={"kind": "personal", "owner_name": f"Bench {role} {i}",
                                                   "currency": "CNY"})
                r.raise_for_status()
                ids.append(r.json()["id"])
            client.post("/deposits", json={"account_id": ids[0], "amount": {"amount": balance, "currency": "CNY"},
                                           "card_number": "4242424242424242"}).raise_for_status()
            out.append((ids[0], ids[1]))
    return out


def transfer_bodies(pairs: list[tuple[str, str]], amount: str = "1.00") -> list[bytes]:
    """One pre-encoded POST /transfers body per pair: `amount` CNY from payer to payee."""
    return [json.dumps({"from_account_id": a, "to_account_id": b,
                        "amount": {"amount": amount, "currency": "CNY"}}).encode() for a, b in pairs]


def cpu_seconds(pid: int, include_children: bool = True) -> float | None:
    """CPU time (user + system, every thread) `pid` and its descendants have used so far, from
    /proc; None off Linux or when the process is gone. Unlike wall-clock throughput it does not
    shrink when other jobs share the machine, so per-request CPU is a steadier figure."""
    if not os.path.exists(f"/proc/{pid}/stat"):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *(descendants(pid) if include_children else [])]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks
