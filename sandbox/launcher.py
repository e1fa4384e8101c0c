"""`make run`: start the gateway and every built service as separate processes on SQLite, wait
until each answers /readyz, print where everything is, and stop it all cleanly on Ctrl-C."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from sandbox.server import uvicorn_args
from sandbox.topology import ServiceSpec, built_services, environment
from services.common.demo import DEMO_MANDATES, DEMO_PARTICIPANTS, DEMO_REGULATOR_KEY

READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15


@dataclass
class Running:
    spec: ServiceSpec
    port: int
    process: subprocess.Popen
    log_path: Path


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the launcher dies, even by SIGKILL: no orphans."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C reaches the launcher only; it stops the children in order


def start(spec: ServiceSpec, data_dir: Path, port_offset: int) -> Running:
    port = spec.port + port_offset
    env = {**os.environ, **environment(spec, compose=False, data_dir=str(data_dir), port_offset=port_offset)}
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{spec.name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 (the child owns it from here)
    cmd = [sys.executable, "-m", "uvicorn", *uvicorn_args(spec, "127.0.0.1", port, access_log=False)]
    process = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
    )
    return Running(spec, port, process, log_path)


def port_taken(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:`port` (bound as uvicorn binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def port_clash_message(taken: list[ServiceSpec], port_offset: int) -> str:
    ports = ", ".join(f"{spec.port + port_offset} ({spec.name})" for spec in taken)
    return (f"Port{'s' if len(taken) > 1 else ''} {ports} already in use: is the sandbox (or something "
            "else) already running? Stop it with Ctrl-C in its terminal, or start this one beside it on "
            f"other ports: make run ARGS=\"--port-offset {port_offset + 100}\"")


def wait_ready(running: list[Running]) -> list[Running]:
    """Returns the services that did not come up (exited, or not ready in time)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(running)
    with httpx.Client(timeout=1.0) as client:
        while pending and time.monotonic() < deadline:
            for r in list(pending):
                if r.process.poll() is not None:
                    return [r]
                try:
                    if client.get(f"http://127.0.0.1:{r.port}/readyz").status_code == 200:
                        pending.remove(r)
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
    return pending


def stop(running: list[Running]) -> None:
    """SIGTERM lets uvicorn finish in-flight requests and close the database; then wait."""
    for r in reversed(running):
        if r.process.poll() is None:
            r.process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for r in running:
        try:
            r.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.process.kill()
            r.process.wait()


def banner(running: list[Running], data_dir: Path) -> str:
    gateway = next((r for r in running if r.spec.kind == "gateway"), None)
    lines = ["", "Fintech sandbox is up (SQLite files in %s; logs in %s)" % (data_dir, data_dir / "logs"), ""]
    lines.append(f"  {'service':<12} {'direct URL':<24} {'API docs':<32} {'through the gateway'}")
    for r in running:
        base = f"http://127.0.0.1:{r.port}"
        if r.spec.kind == "console":  # a web UI, not an API: open it in a browser
            lines.append(f"  {r.spec.name:<12} {base + '/':<24} {'-':<32} open in a browser: service map, "
                         "live feed, alerts, integrity")
            continue
        via = (f"http://127.0.0.1:{gateway.port}{r.spec.gateway_prefix}/..."
               if gateway and r.spec.gateway_prefix else ("regulator API at /sandbox/..." if r is gateway else "-"))
        lines.append(f"  {r.spec.name:<12} {base:<24} {base + '/docs':<32} {via}")
    lines += ["", "  Demo keys (send as X-API-Key to the gateway):"]
    # The services' own keys stay in their environment: they act for a participant, never as one.
    for p in DEMO_PARTICIPANTS:
        if p.kind == "participant":
            lines.append(f"    {p.api_key:<26} {p.name:<22} may call: {', '.join(p.services)}")
    lines.append(f"    {DEMO_REGULATOR_KEY:<26} {'Regulator':<22} /sandbox/... regulator API")
    lines += ["", "  Demo mandates (an account's owner lets another participant debit it; send as mandate_id):"]
    for m in DEMO_MANDATES:
        lines.append(f"    {m.id}  {m.purpose}")
    lines += ["", "  Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def run(data_dir: Path, port_offset: int = 0, only: list[str] | None = None, exit_when_ready: bool = False) -> int:
    specs = [s for s in built_services() if not only or s.name in only]
    running: list[Running] = []

    def on_signal(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the sandbox the way Ctrl-C does

    taken = [spec for spec in specs if port_taken(spec.port + port_offset)]
    if taken:
        print(port_clash_message(taken, port_offset), file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for spec in specs:
            running.append(start(spec, data_dir, port_offset))
        failed = wait_ready(running)
        if failed:
            for r in failed:
                tail = r.log_path.read_text(errors="replace").splitlines()[-20:]
                print(f"{r.spec.name} did not become ready; last lines of {r.log_path}:", file=sys.stderr)
                print("\n".join("    " + line for line in tail), file=sys.stderr)
            return 1
        print(banner(running, data_dir), flush=True)
        if exit_when_ready:
            return 0
        while True:
            for r in running:
                if r.process.poll() is not None:
                    print(f"{r.spec.name} exited with {r.process.returncode}; see {r.log_path}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
        return 0
    finally:
        stop(running)
        if running:
            print("All services stopped.", flush=True)
