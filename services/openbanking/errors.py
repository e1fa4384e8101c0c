"""OBIE's error envelope (`OBErrorResponse1` with `UK.OBIE.*` codes) and `x-fapi-interaction-id`.

Open banking speaks its own ecosystem's errors instead of RFC 9457: every refusal the bank
returns, schema validation included, is an `OBErrorResponse1`.
"""

from __future__ import annotations

import re
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.problems import Problem, method_not_allowed
from services.common.requestctx import current_request_id

INTERACTION_HEADER = "x-fapi-interaction-id"
_VALID_INTERACTION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")


class OBError1(BaseModel):
    """One error: an OBIE code, what is wrong, and where (a JSON path or a header name)."""

    ErrorCode: str = Field(examples=["UK.OBIE.Resource.InvalidConsentStatus"])
    Message: str = Field(min_length=1, max_length=500)
    Path: str | None = Field(default=None, min_length=1, max_length=500)
    Url: str | None = None


class OBErrorResponse1(BaseModel):
    """OBIE's error envelope: an HTTP-level code, an id to quote, and one or more errors."""

    Code: str = Field(min_length=1, max_length=40, examples=["403 Forbidden"])
    Id: str | None = Field(default=None, min_length=1, max_length=40)
    Message: str = Field(min_length=1, max_length=500)
    Errors: list[OBError1] = Field(min_length=1)


class OBIEError(Exception):
    """A refusal in OBIE's terms; raise it anywhere in a request."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = [(error_code, message, path)]
        self.headers = headers or {}


def _code(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"[:40]
    except ValueError:
        return str(status)


def error_body(status: int, errors: list[tuple[str, str, str | None]], message: str | None = None) -> dict[str, Any]:
    items = []
    for code, msg, path in errors:
        item = {"ErrorCode": code, "Message": (msg or code)[:500]}
        if path:
            item["Path"] = path[:500]
        items.append(item)
    body: dict[str, Any] = {"Code": _code(status), "Message": (message or items[0]["Message"])[:500], "Errors": items}
    request_id = current_request_id()
    if request_id:
        body["Id"] = request_id[:40]
    return body


def error_response(status: int, errors: list[tuple[str, str, str | None]], headers: dict[str, str] | None = None,
                   message: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, errors, message), status_code=status, headers=headers)


def not_found(what: str, ident: str, path: str | None = None) -> OBIEError:
    return OBIEError(404, "UK.OBIE.Resource.NotFound", f"No {what} has id {ident!r}.", path)


def _obie_error(_request: Request, exc: OBIEError) -> JSONResponse:
    return error_response(exc.status, exc.errors, exc.headers)


def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")]
        where, fields = (loc[0], loc[1:]) if loc else ("body", [])
        missing = err.get("type") == "missing"
        if where == "header":
            code = "UK.OBIE.Header.Missing" if missing else "UK.OBIE.Header.Invalid"
        elif err.get("type") == "extra_forbidden":
            code = "UK.OBIE.Field.Unexpected"
        else:
            code = "UK.OBIE.Field.Missing" if missing else "UK.OBIE.Field.Invalid"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        errors.append((code, message, ".".join(fields) or where))
    return error_response(400, errors or [("UK.OBIE.Field.Invalid", "The request is not valid.", None)],
                          message="The request does not match the API's schema.")


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 404:
        return error_response(404, [("UK.OBIE.Resource.NotFound", f"Nothing is served at {request.url.path}.", None)],
                              headers)
    if exc.status_code == 405:
        headers["Allow"], message = method_not_allowed(request, exc)
        return error_response(405, [("UK.OBIE.UnexpectedError", message, None)], headers)
    detail = exc.detail if isinstance(exc.detail, str) else _code(exc.status_code)
    return error_response(exc.status_code, [("UK.OBIE.UnexpectedError", detail, None)], headers)


def _kit_problem(_request: Request, exc: Problem) -> JSONResponse:
    # The shared kit's refusals (idempotency conflicts, time travel), told in OBIE's terms.
    if exc.slug.startswith("idempotency-key"):
        errors = [("UK.OBIE.Header.Invalid", exc.detail or exc.title, "x-idempotency-key")]
    else:
        errors = [("UK.OBIE.UnexpectedError", exc.detail or exc.title, None)]
    return error_response(exc.status, errors, exc.headers)


def install_obie_error_handlers(app: FastAPI) -> None:
    """Replace the kit's problem+json handlers: the bank answers every error as OBIE does."""
    app.add_exception_handler(OBIEError, _obie_error)  # type: ignore[arg-type]
    app.add_exception_handler(Problem, _kit_problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]


class InteractionIdMiddleware:
    """Echo the TPP's `x-fapi-interaction-id`, or make one, on every response (OBIE requires it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        interaction_id = None
        for name, value in scope["headers"]:
            if name == b"x-fapi-interaction-id":
                candidate = value.decode("latin-1")
                if _VALID_INTERACTION_ID.match(candidate):
                    interaction_id = candidate
        header = (b"x-fapi-interaction-id", (interaction_id or str(uuid.uuid4())).encode())

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message.get("headers", []) if h[0].lower() != b"x-fapi-interaction-id"]
                message = {**message, "headers": [*kept, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


_ERROR_REF = {"$ref": "#/components/schemas/OBErrorResponse1"}
_INTERACTION_RESPONSE_HEADER = {
    "description": "The TPP's `x-fapi-interaction-id`, echoed, or one the bank made up.",
    "required": True,
    "schema": {"type": "string"},
}


def install_obie_openapi(app: FastAPI) -> None:
    """Document errors as they are served: `OBErrorResponse1` (400 instead of 422), and the
    interaction id header on every response. Runs over the kit's own OpenAPI conventions."""
    kit_openapi = app.openapi
    done: list[bool] = []

    def openapi() -> dict[str, Any]:
        schema = kit_openapi()
        if done:
            return schema
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        error_schema = OBErrorResponse1.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(error_schema.pop("$defs", {}))
        components["OBErrorResponse1"] = error_schema
        for path, path_item in schema.get("paths", {}).items():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                if path.startswith("/oauth2/"):  # OAuth2's own error format (RFC 6749 §5.2)
                    for status, response in responses.items():
                        if status[0] == "4" and status != "413" and "application/problem+json" in response.get("content", {}):
                            response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}
                    continue
                if "422" in responses:
                    responses.pop("422")
                    responses["400"] = {"description": "Bad request: the request does not match the schema"}
                for status, response in responses.items():
                    # 413 keeps the kit's ProblemDetails: its middleware refuses before the bank runs.
                    if status[0] in "45" and status != "413":
                        response["content"] = {"application/json": {"schema": _ERROR_REF}}
                    response.setdefault("headers", {})[INTERACTION_HEADER] = _INTERACTION_RESPONSE_HEADER
        done.append(True)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
