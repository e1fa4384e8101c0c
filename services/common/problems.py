"""RFC 9457 problem details for every error a service returns, validation and crashes included."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from services.common.requestctx import current_request_id
from services.common.tracing import current_trace_id

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Not a URL to fetch (RFC 9457 allows that): a stable name clients can switch on.
PROBLEM_TYPE_BASE = "urn:fintech-sandbox:problem:"

log = logging.getLogger("sandbox.problems")


class FieldError(BaseModel):
    """One invalid field: where it is in the request and what is wrong with it."""

    field: str
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; extra members carry machine-readable facts."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    trace_id: str | None = Field(default=None, description=(
        "The W3C trace id of the request (32 hex digits), as in `X-Trace-Id` and the gateway's "
        "audit entry: every hop of the request in Jaeger, when traces are exported."))
    errors: list[FieldError] | None = None


class Problem(Exception):
    """A refusal a client can act on: raise it anywhere in a request and it becomes problem+json."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        **extras: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extras = extras

    def body(self, instance: str | None = None) -> dict[str, Any]:
        return problem_body(
            self.status, self.slug, self.title, self.detail, instance=instance, **self.extras
        )


def problem_body(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    **extras: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body["request_id"] = current_request_id()
    if trace_id := current_trace_id():
        body["trace_id"] = trace_id
    body.update({k: v for k, v in extras.items() if v is not None})
    return body


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, "not-found", f"{what} not found", f"No {what.lower()} has id {ident!r}.")


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(parts)


def _validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
    invalid_json = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
    if invalid_json is not None:
        # Not a field error: the body is not JSON at all (400, as the OpenAPI documents).
        loc = invalid_json.get("loc", ())
        where = f" at character {loc[-1]}" if len(loc) > 1 and isinstance(loc[-1], int) else ""
        why = str((invalid_json.get("ctx") or {}).get("error", "JSON decode error"))
        body = problem_body(
            400, "invalid-json", "Body is not valid JSON", f"{why}{where}.", instance=request.url.path
        )
        return problem_response(400, body)
    errors = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid"))
        # pydantic prefixes ValueErrors raised in validators; the field already says where.
        message = message.removeprefix("Value error, ")
        errors.append({"field": _field_path(err.get("loc", ())), "message": message})
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    body = problem_body(
        422,
        "validation-error",
        "Request is not valid",
        f"Invalid field(s): {fields}",
        instance=request.url.path,
        errors=errors,
    )
    return problem_response(422, body)


_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
}


def _route_candidates(app: Any) -> Iterable[Any]:
    """Every route of the app, those of included routers too: FastAPI ≥ 0.16x keeps an included
    router whole in `app.router.routes`, so its routes are reached through `iter_route_contexts`."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI copies included routes into the app's own list
        return app.router.routes
    return iter_route_contexts(app.router.routes)


def allowed_methods(request: Request) -> list[str]:
    """Every method any route serves at this path (the router's 405 names only the first route's)."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "GET"}
    for route in _route_candidates(request.app):
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(scope)[0] != Match.NONE:
            methods |= set(route_methods)
    return sorted(methods)


def method_not_allowed(request: Request, exc: StarletteHTTPException) -> tuple[str, str]:
    """A 405's `Allow` header and the sentence that names the same methods."""
    raised = [m.strip() for m in ((getattr(exc, "headers", None) or {}).get("Allow") or "").split(",")]
    allow = ", ".join(allowed_methods(request) or sorted(m for m in raised if m))
    # No path in the words: through the gateway the service sees its own path, not the client's.
    return allow, f"{request.method} is not allowed here; this path allows {allow}: use one of them."


def _http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    slug, title = _STATUS_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"], detail = method_not_allowed(request, exc)
    body = problem_body(exc.status_code, slug, title, detail, instance=request.url.path)
    return problem_response(exc.status_code, body, headers=headers)


def _domain_problem(request: Request, exc: Problem) -> JSONResponse:
    return problem_response(exc.status, exc.body(instance=request.url.path), headers=exc.headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Every error leaves as problem+json: domain refusals, validation, HTTP errors."""
    app.add_exception_handler(Problem, _domain_problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_problem)  # type: ignore[arg-type]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the problem statuses an operation can return."""
    return {
        status: {
            "description": _STATUS_DESCRIPTIONS.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
            "model": ProblemDetails,
        }
        for status in statuses
    }


_STATUS_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or invalid credentials",
    402: "Payment required",
    403: "Refused by policy",
    404: "Not found",
    409: "Refused by a business rule or an idempotency conflict",
    413: "Request body too large",
    422: "Request failed schema validation; `errors` names each field",
    429: "Rate limit exceeded",
    503: "A dependency is unavailable",
    504: "A dependency timed out",
}
