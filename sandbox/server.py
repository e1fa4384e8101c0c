"""How every sandbox process is served (the launcher and docker compose both start uvicorn with
`uvicorn_args`): uvicorn's httptools protocol with the door's connection-level guards, so a
client cannot hold the server's memory or connections with requests it never finishes.

- headers larger than `max_header_bytes` → 431 and the connection closed;
- headers not finished within `header_timeout_s` of the connection or the request's first byte
  → 408 and closed (a connection that never sent a byte is just closed);
- a body not finished within `body_timeout_s` of its headers → 408 (or just closed if the
  answer has begun);
- a body larger than `max_body_bytes` → 413 and closed (or just closed if the answer has begun);
- idle between requests for `keep_alive_s` → closed (uvicorn's keep-alive timer);
- more than `max_client_connections` open connections, or as many requests in progress →
  503 with Retry-After, connection closed.

Settings come from the environment with the service's prefix (`GATEWAY_MAX_HEADER_BYTES`, ...)."""

from __future__ import annotations

import asyncio
import functools
import json
import resource
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from sandbox.topology import SERVICES, ServiceSpec
from services.common.problems import PROBLEM_MEDIA_TYPE, problem_body

DOOR_PROTOCOL = "sandbox.server:DoorProtocol"
GRACEFUL_SHUTDOWN_S = 10
OVERLOADED_RETRY_AFTER_S = 1
# File descriptors the process keeps beyond its client connections (databases, upstreams, logs).
SPARE_FILE_DESCRIPTORS = 256


class ServerSettings(BaseSettings):
    """Connection-level limits, read with the service's env prefix (see `settings_for`)."""

    model_config = SettingsConfigDict(extra="ignore")

    # Node's and uvicorn-with-h11's default; the gateway's own headers are well under 2 KiB.
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    # The sandbox's bodies are small JSON; the gateway reads a body whole before screening it.
    max_body_bytes: int = 1024 * 1024
    # An idle connection costs about 6 KiB and lives header_timeout_s or keep_alive_s at most:
    # 4,096 (~25 MiB) leaves room for a burst of 2,000 idle sockets and the clients' own.
    max_client_connections: int = 4096


def uvicorn_args(spec: ServiceSpec, host: str, port: int, *, access_log: bool = True) -> list[str]:
    """uvicorn's command-line arguments for `spec` (after `uvicorn` or `python -m uvicorn`)."""
    args = ["--factory", spec.app, "--host", host, "--port", str(port), "--http", DOOR_PROTOCOL,
            "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_S)]
    if not access_log:
        args.append("--no-access-log")
    return args


@functools.cache
def settings_for(app: str) -> ServerSettings:
    """The settings of the topology service served by `app` (once per process); an app outside
    the topology (a test's) gets the defaults."""
    prefix = next((spec.env_prefix for spec in SERVICES if spec.app == app), None)
    settings = ServerSettings(_env_prefix=prefix) if prefix else ServerSettings()
    _allow_open_files(settings.max_client_connections + SPARE_FILE_DESCRIPTORS)
    return settings


def _allow_open_files(wanted: int) -> None:
    """Raise the soft open-files limit toward `wanted` (a shell's 1,024 would refuse accepts
    long before the connection cap); never above the hard limit, never lowered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def problem_bytes(status: int, slug: str, title: str, detail: str,
                  headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A whole HTTP/1.1 problem+json answer that closes the connection, for refusals made before
    (or instead of) the application."""
    body = json.dumps(problem_body(status, slug, title, detail)).encode()
    lines = [STATUS_LINE[status], b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
             b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join([*lines, b"\r\n", body])


async def refuse_overloaded(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI answer for a request over the connection cap: 503, try again shortly."""
    body = json.dumps(problem_body(
        503, "server-overloaded", "Too many open connections",
        "The server is at its connection cap; retry shortly, reusing one keep-alive connection.",
        instance=scope.get("path"))).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(OVERLOADED_RETRY_AFTER_S).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class DoorProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit, header and body read deadlines and
    a connection cap. Header bytes are counted per read after parsing, so a client holds at most
    `max_header_bytes` plus one read before it is refused; requests that arrive whole in one read
    (nearly all) arm no timer beyond the one per connection."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = settings_for(config.app) if isinstance(config.app, str) else ServerSettings()
        self.timeout_keep_alive = self.limits.keep_alive_s  # type: ignore[assignment]
        self.read_deadline: asyncio.TimerHandle | None = None
        self.reading_headers = True  # from the connection (or a request's first byte) to its headers' end
        self.reading_body = False  # from the headers' end to the message's end
        self.header_bytes = 0  # this request's header bytes in the reads before the current one
        self.read_size = 0  # the current read's
        self.body_bytes = 0

    # -- the connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.read_size = len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.reading_headers:
            self.header_bytes += len(data)
            if self.header_bytes > self.limits.max_header_bytes:
                self._refuse_headers_too_large()
                return
        if (self.reading_headers or self.reading_body) and self.read_deadline is None:
            self._arm_read_deadline()

    # -- the parser's callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading_headers = True
        self.header_bytes = 0

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return  # refused earlier in this read: parse the rest, start nothing
        self.reading_headers = False
        self.reading_body = True
        self.body_bytes = 0
        self._cancel_read_deadline()
        # Headers that ended within this read may have come whole in it: measure them then only.
        limit = self.limits.max_header_bytes
        if self.header_bytes + self.read_size > limit and self._parsed_header_bytes() > limit:
            self._refuse_headers_too_large()
            return
        # Counted as uvicorn's limit_concurrency counts (connections, or requests in progress).
        over_cap = (len(self.connections) > self.limits.max_client_connections
                    or len(self.tasks) >= self.limits.max_client_connections)
        if over_cap:
            self.logger.warning("%s - 503: over the cap of %d connections", self._peer(),
                                self.limits.max_client_connections)
        # uvicorn reads self.app when it starts this request's task: set for this request only.
        self.app = refuse_overloaded if over_cap else self.config.loaded_app
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.transport.is_closing():
            return  # a refused request has no cycle to take its body
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_bytes:
            self._refuse_request(413, "payload-too-large", "Request body too large",
                                 f"A request body may take {self.limits.max_body_bytes} bytes.")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.reading_body = False
        self._cancel_read_deadline()
        if not self.transport.is_closing():
            super().on_message_complete()

    # -- deadlines and refusals ----------------------------------------------------------------

    def _arm_read_deadline(self) -> None:
        timeout = self.limits.header_timeout_s if self.reading_headers else self.limits.body_timeout_s
        self.read_deadline = self.loop.call_later(timeout, self._read_deadline_passed)

    def _cancel_read_deadline(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _read_deadline_passed(self) -> None:
        self.read_deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed, or handed to another protocol (an upgrade)
        if self.reading_headers and self.header_bytes == 0:
            self.transport.close()  # connected and never sent a byte: nothing to answer
            return
        part, limit = (("headers", self.limits.header_timeout_s) if self.reading_headers
                       else ("body", self.limits.body_timeout_s))
        self._refuse_request(408, "request-timeout", "Request not received in time",
                             f"The request's {part} did not arrive within {limit:g} s.")

    def _parsed_header_bytes(self) -> int:
        # The request line's method and version, and each header's ": " and CRLF, are about 4 bytes.
        return 16 + len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse_headers_too_large(self) -> None:
        self._refuse(431, "headers-too-large", "Request header fields too large",
                     f"The request line and headers may take {self.limits.max_header_bytes} bytes.")

    def _refuse_request(self, status: int, slug: str, title: str, detail: str) -> None:
        """Refuse the request being read; once its headers are in, the application has it too."""
        if self.reading_body and self.cycle is not None:
            if self.cycle.response_started:
                self.transport.close()  # the answer has begun: a status can no longer be sent
                return
            self.cycle.disconnected = True  # the application's receive() ends; its answer is dropped
        self._refuse(status, slug, title, detail)

    def _refuse(self, status: int, slug: str, title: str, detail: str) -> None:
        self.logger.warning("%s - %d %s", self._peer(), status, slug)
        self.transport.write(problem_bytes(status, slug, title, detail))
        self.transport.close()

    def _peer(self) -> str:
        return "%s:%d" % self.client if self.client else "unknown client"
