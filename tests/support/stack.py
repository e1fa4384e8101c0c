"""The whole sandbox as `make run` starts it (the launcher, every service on SQLite), on spare
ports and scratch data, for tests that drive it over real HTTP and for the docs runner."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from sandbox.topology import built_services

ROOT = Path(__file__).resolve().parents[2]
SPECS = built_services()
GATEWAY_PORT = next(s.port for s in SPECS if s.kind == "gateway")
REGULATOR_KEY = "sbx_regulator_key"


class Sandbox:
    """The whole sandbox as `make run` starts it, on its own ports and data, in `workdir`, whose
    `.sandbox-data` is its data directory (pages refer to it by that name), with `.venv` and
    `examples` linked in (pages call `.venv/bin/fintech-sandbox` and `examples/...`)."""

    def __init__(self, workdir: Path, offset: int) -> None:
        self.workdir = workdir
        self.offset = offset
        self.url = f"http://127.0.0.1:{GATEWAY_PORT + offset}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name, target in ((".venv", Path(sys.prefix)), ("examples", ROOT / "examples")):
            link = self.workdir / name
            if not link.exists():
                link.symlink_to(target)
        log = open(self.workdir / "launcher.log", "w")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "run", "--port-offset", str(self.offset),
             "--data-dir", str(self.workdir / ".sandbox-data")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        urls = [f"http://127.0.0.1:{spec.port + self.offset}/readyz" for spec in SPECS]
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("the sandbox did not start:\n" + (self.workdir / "launcher.log").read_text())
            try:
                if all(httpx.get(url, timeout=2).status_code == 200 for url in urls):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not become ready")
            time.sleep(0.3)

    def reset(self) -> None:
        answer = httpx.post(f"{self.url}/sandbox/reset", headers={"X-API-Key": REGULATOR_KEY}, timeout=60)
        if answer.status_code == 404:  # a build without the reset: start afresh instead
            self.stop()
            shutil.rmtree(self.workdir / ".sandbox-data", ignore_errors=True)
            self.start()
            return
        answer.raise_for_status()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None


def sandbox_for(workdir: Path, offset: int) -> Iterator[Sandbox]:
    sandbox = Sandbox(workdir, offset)
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()
