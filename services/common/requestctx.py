"""Per-request context: the X-Request-ID, the gateway's deadline, a body-size limit, and a
problem+json 500 for crashes.

A pure ASGI middleware (no BaseHTTPMiddleware) so the hot path stays cheap and a crash
still leaves as problem+json carrying the request id.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from contextvars import ContextVar
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# When the gateway gave up on a forwarded request (unix seconds): after it, no key may be claimed.
DEADLINE_HEADER = "x-sandbox-deadline"
_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)

log = logging.getLogger("sandbox.requests")


def current_request_id() -> str | None:
    return _request_id.get()


def current_deadline() -> float | None:
    """The wall-clock moment (unix seconds) the gateway stopped waiting for this request, if it sent one."""
    return _deadline.get()


def _parse_deadline(value: bytes) -> float | None:
    try:
        deadline = float(value)
    except ValueError:
        return None
    return deadline if math.isfinite(deadline) else None  # "nan" or "inf" fence nothing


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


class RequestIdLogFilter(logging.Filter):
    """Adds `request_id` to every log record so one request can be followed across hops."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


class _BodyTooLarge(Exception):
    pass


def _problem_bytes(status: int, slug: str, title: str, detail: str, request_id: str) -> bytes:
    from services.common.problems import PROBLEM_TYPE_BASE
    from services.common.tracing import current_trace_id

    body = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": request_id,
    }
    if trace_id := current_trace_id():  # as every other problem carries it
        body["trace_id"] = trace_id
    return json.dumps(body).encode()


class RequestContextMiddleware:
    def __init__(self, app: Any, max_body_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = None
        content_length = None
        deadline = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = None
            elif name == b"x-sandbox-deadline":
                deadline = _parse_deadline(value)
        request_id = request_id or new_request_id()
        token = _request_id.set(request_id)
        deadline_token = _deadline.set(deadline)
        rid_header = (b"x-request-id", request_id.encode())
        started = False
        too_large = False

        async def send_with_id(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, rid_header]}
            await send(message)

        async def send_from_app(message: dict) -> None:
            # A body streamed without Content-Length ran past the limit, and the app turned the
            # failed read into a response of its own (FastAPI answers any body error with 400):
            # the client is told 413 instead.
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    await send_problem(413, "payload-too-large", "Request body too large", too_large_detail)
                return
            await send_with_id(message)

        async def send_problem(status: int, slug: str, title: str, detail: str) -> None:
            body = _problem_bytes(status, slug, title, detail, request_id)
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        limit = self.max_body_bytes
        too_large_detail = f"The request body exceeds {limit} bytes."
        try:
            if content_length is not None and content_length > limit:
                await send_problem(413, "payload-too-large", "Request body too large", too_large_detail)
                return
            received = 0

            async def limited_receive() -> dict:
                nonlocal received, too_large
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        too_large = True
                        raise _BodyTooLarge
                return message

            await self.app(scope, limited_receive, send_from_app)
        except _BodyTooLarge:
            if not started:
                await send_problem(413, "payload-too-large", "Request body too large", too_large_detail)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await send_problem(
                    500,
                    "internal-error",
                    "Internal server error",
                    "The service failed while handling this request; nothing was committed. "
                    "Quote the request_id when reporting it.",
                )
        finally:
            _request_id.reset(token)
            _deadline.reset(deadline_token)
