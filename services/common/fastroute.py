"""A direct request handler for the hot JSON POSTs, with FastAPI's own handler behind it.

For every request FastAPI's handler parses the Content-Type with the `email` package, decodes
the JSON into dicts, validates them, and solves the endpoint's parameters one by one, with its
telemetry hooks around each step: about a third of the event loop's time per transfer in
`fintech-sandbox bench payments`. `DirectJSONRoute` takes the common case itself, a body sent
as `application/json` that the endpoint's model validates (pydantic parses and validates the
JSON in one step) with header parameters that validate, and calls the endpoint with exactly the
values FastAPI would pass. Anything else (no body, invalid JSON, a field or header that fails
validation, another media type) goes to FastAPI's own handler, unchanged: every error a client
can see is still FastAPI's, and the OpenAPI document is what FastAPI makes of the endpoint.

A service keeps its endpoints on a stock `APIRouter`, as FastAPI's tutorial writes them, and its
composition root chooses `served_directly(router)` to serve them this way (payments:
`PAYMENTS_FAST_ROUTES`). A route uses the direct handler only when its endpoint takes exactly
one pydantic model as its body, the `Request`, and optional header parameters with an explicit
alias (no `Depends`, no path or query parameters); any other route keeps FastAPI's handler. The endpoint must return a `Response` (its own status and body), as
the payments POSTs do: the direct handler does not run the response model. (FastAPI's native telemetry, when configured, sees these requests
without its per-operation spans.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError

JSON_MEDIA_TYPE = "application/json"


class DirectJSONRoute(APIRoute):
    """An APIRoute (use it as an APIRouter's `route_class`) with the direct handler above."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        plan = _plan(self)
        if plan is None:
            return standard
        model, body_name, request_name, headers = plan
        endpoint = self.dependant.call

        async def handler(request: Request) -> Response:
            if request.headers.get("content-type") != JSON_MEDIA_TYPE:
                return await standard(request)
            raw = await request.body()  # kept on the request: the fallback reads it again
            if not raw:
                return await standard(request)
            try:
                body = model.model_validate_json(raw)
            except ValidationError:
                return await standard(request)  # FastAPI words the errors, as always
            values: dict[str, Any] = {body_name: body, request_name: request}
            for name, alias, field in headers:
                value = request.headers.get(alias)
                if value is None:
                    if field.field_info.is_required():
                        return await standard(request)
                    values[name] = field.field_info.get_default(call_default_factory=True)
                    continue
                value, errors = field.validate(value, {}, loc=("header", alias))
                if errors:
                    return await standard(request)
                values[name] = value
            result = await endpoint(**values)  # type: ignore[misc]
            if not isinstance(result, Response):
                # FastAPI would serialise it through the route's response model; the endpoint
                # has run, so it cannot be handed over now. Fail loudly (a programming error).
                raise TypeError(f"{self.path}: a DirectJSONRoute endpoint must return a Response")
            return result

        return handler


def _plan(route: APIRoute) -> tuple[type[BaseModel], str, str, list[tuple[str, str, Any]]] | None:
    """(body model, body parameter, request parameter, [(header parameter, alias, field)]) when
    the route's endpoint has the shape the direct handler serves; None otherwise."""
    dependant = route.dependant
    if (
        not inspect.iscoroutinefunction(dependant.call)
        or dependant.request_param_name is None
        or len(dependant.body_params) != 1
        or dependant.path_params or dependant.query_params or dependant.cookie_params
        or dependant.dependencies
        or dependant.websocket_param_name or dependant.http_connection_param_name
        or dependant.response_param_name or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    ):
        return None
    body = dependant.body_params[0]
    model = body.field_info.annotation
    if getattr(body.field_info, "embed", False) or not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    headers = []
    for field in dependant.header_params:
        if not field.alias or field.alias == field.name:
            return None  # FastAPI derives the header's name: leave it to FastAPI
        headers.append((field.name, field.alias, field))
    return model, body.name, dependant.request_param_name, headers


def served_directly(router: APIRouter) -> APIRouter:
    """The router's routes again, each rebuilt as a `DirectJSONRoute` with the same arguments
    (so the same OpenAPI document); the direct handler serves those whose shape `_plan` accepts."""
    arguments = [name for name in inspect.signature(APIRoute.__init__).parameters
                 if name not in ("self", "path", "endpoint")]
    direct = APIRouter()
    for route in router.routes:
        if type(route) is APIRoute:
            route = DirectJSONRoute(route.path, route.endpoint,
                                    **{name: getattr(route, name) for name in arguments})
        direct.routes.append(route)
    return direct
