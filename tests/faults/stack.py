"""Real gateway and payments processes for the fault suite.

Each is started the way `make run` starts it (`sandbox.launcher.start`: the same uvicorn command,
the topology's environment, a log under the data dir, dies with the test process), one process
per service, so a test can SIGKILL, SIGSTOP and SIGCONT each on its own. Timeouts are short so no
fault waits 10 s, and every process is resumed and stopped when the stack closes, even when the
test failed.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import TracebackType

import pytest
from sqlalchemy import Engine, create_engine

from sandbox import launcher
from sandbox.topology import by_name
from services.common.db import database_url
from tests.support.ports import free_port_offset

SERVICES = ("payments", "gateway")
# The gateway gives up on an upstream after 2 s (504) and reconciles open intents every second;
# its deadline for a movement is then connect + read + 1 s (services.common.idempotency).
# A claim's lease is long enough to see a retry refused within it, short enough to wait out.
FAULT_ENV = {
    "GATEWAY_READ_TIMEOUT": "2",
    "GATEWAY_CONNECT_TIMEOUT": "1",
    "GATEWAY_RECONCILE_INTERVAL_S": "1",
    "PAYMENTS_IDEMPOTENCY_LEASE_SECONDS": "3",
    "PAYMENTS_LOG_LEVEL": "WARNING",
    "GATEWAY_LOG_LEVEL": "INFO",
}
LEASE_S = float(FAULT_ENV["PAYMENTS_IDEMPOTENCY_LEASE_SECONDS"])
GATEWAY_PATIENCE_S = float(FAULT_ENV["GATEWAY_READ_TIMEOUT"]) + float(FAULT_ENV["GATEWAY_CONNECT_TIMEOUT"])
EXIT_WAIT_S = 10  # a SIGKILLed process is gone well within this


class Stack:
    """The gateway and payments on their own ports (a free block), on SQLite files under
    `data_dir` or on the PostgreSQL databases in `database_urls` (service name → URL)."""

    def __init__(self, data_dir: Path, database_urls: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.database_urls = dict(database_urls or {})
        self.port_offset = free_port_offset()
        self.running: dict[str, launcher.Running] = {}
        self.paused: set[str] = set()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{by_name(name).port + self.port_offset}"

    @property
    def gateway_url(self) -> str:
        return self.url("gateway")

    @property
    def payments_url(self) -> str:
        return self.url("payments")

    def database(self, name: str) -> Engine:
        """An engine on a service's own database (the caller disposes of it)."""
        return create_engine(database_url(self.database_urls.get(name), self.data_dir, name))

    # -- processes ------------------------------------------------------------------------------

    def start(self, *names: str) -> None:
        """Start these services (together) and wait until each answers /readyz."""
        started = []
        with pytest.MonkeyPatch.context() as env:  # the launcher passes its own environment on
            for name, value in FAULT_ENV.items():
                env.setenv(name, value)
            for name in names:
                assert name not in self.running, f"{name} is already running"
                spec = by_name(name)
                if name in self.database_urls:
                    env.setenv(f"{spec.env_prefix}DATABASE_URL", self.database_urls[name])
                self.running[name] = launcher.start(spec, self.data_dir, self.port_offset)
                started.append(self.running[name])
        failed = launcher.wait_ready(started)
        if failed:
            raise RuntimeError(f"{failed[0].spec.name} did not become ready:\n{self.log_tail(failed[0].spec.name)}")

    def kill(self, name: str) -> None:
        """kill -9: no shutdown, no cleanup, whatever it was doing."""
        process = self.running.pop(name).process
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=EXIT_WAIT_S)
        self.paused.discard(name)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process keeps its sockets (the kernel still accepts connections) but
        answers nothing until resumed."""
        self.running[name].process.send_signal(signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.running[name].process.send_signal(signal.SIGCONT)
        self.paused.discard(name)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Resume what is paused (a stopped process cannot act on SIGTERM), then stop all."""
        for name in list(self.paused):
            self.resume(name)
        running, self.running = list(self.running.values()), {}
        launcher.stop(running)  # SIGTERM, then SIGKILL for any that does not exit in time
