"""The participant's contract (openapi/sandbox.json): every service operation as a participant
reaches it through the gateway, generated from the services' own OpenAPI documents and the
gateway's rules. Pure functions over plain dicts; `export()` in sandbox/contracts.py writes it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sandbox.gateway.proxy import is_sandbox_control  # forwarded only with the regulator's key
from services.common.problems import PROBLEM_MEDIA_TYPE, ProblemDetails

TITLE = "Fintech sandbox: the participant's API at the gateway"
SERVER = "http://127.0.0.1:8000"
API_KEY_SCHEME = "ApiKey"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SCHEMA_REF = "#/components/schemas/"
SCHEME_SEPARATOR = "."  # `openbanking.OBWriteDomestic2`: never part of a pydantic or OBIE name

# (service, METHOD, service path template) -> whether the gateway screens it as money-moving.
MoneyMoving = Callable[[str, str, str], bool]


@dataclass(frozen=True)
class ServiceContract:
    """One service's exported OpenAPI document and where the gateway serves it."""

    name: str  # payments, ..., openbanking: prefixes operationIds, schemas and tags
    prefix: str  # its path prefix at the gateway (topology's gateway_prefix)
    document: dict[str, Any]

    @property
    def label(self) -> str:
        """The gateway's name for the service (its rules file says `open-banking`)."""
        return self.prefix.strip("/")


def problem_schemas() -> dict[str, dict[str, Any]]:
    """The services' problem schema (services/common/problems.py), as their documents carry it."""
    schema = ProblemDetails.model_json_schema(ref_template=SCHEMA_REF + "{model}")
    nested = schema.pop("$defs", {})
    return {"ProblemDetails": schema, **nested}


def _fresh(node: Any) -> Any:
    """A copy sharing no dict with the original or within itself (FastAPI's documents do share)."""
    return json.loads(json.dumps(node))


# -- the gateway's own answers ----------------------------------------------------------------

def _header(description: str, example: str, *, required: bool = False) -> dict[str, Any]:
    header: dict[str, Any] = {"description": description, "schema": {"type": "string"}, "example": example}
    if required:
        header["required"] = True
    return header


HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": _header("The request's id (the one sent, or one the gateway made); quote it when asking "
                            "about a request.", "req_01J0000000000000000000000", required=True),
    "X-Sandbox-Receipt": _header("The request's entry in the gateway's hash-chained audit log; check it at "
                                 "`GET /sandbox/receipts/{index}` (gateway.json). Absent on a refusal counted in a "
                                 "flood summary.", "index=42; hash=5f2c…"),
    "X-Sandbox-Decision": _header("The AML screening decision on a money-moving request: outcome, score, the "
                                  "rules that fired and the rule set's version.",
                                  "approve; score=0; rules=none; ruleset=aml-2026.12.1"),
    "RateLimit-Limit": _header("Requests a minute the participant may send (IETF draft RateLimit fields; "
                               "absent on 401).", "600"),
    "RateLimit-Remaining": _header("Requests left in the current window.", "599"),
    "RateLimit-Reset": _header("Seconds until the window resets.", "60"),
    "RateLimit-Policy": _header("The limit and its window in seconds.", "600;w=60"),
    "Retry-After": _header("Seconds to wait before retrying.", "5"),
    "WWW-Authenticate": _header("How to authenticate at the gateway.", 'ApiKey header="X-API-Key"'),
}
EVERY_ANSWER = ("X-Request-ID", "X-Sandbox-Receipt", "RateLimit-Limit", "RateLimit-Remaining",
                "RateLimit-Reset", "RateLimit-Policy")


@dataclass(frozen=True)
class GatewayAnswer:
    """A problem+json answer the gateway gives before or instead of the service's."""

    status: str
    description: str
    headers: tuple[str, ...] = ()
    money_moving_only: bool = False


GATEWAY_ANSWERS: tuple[GatewayAnswer, ...] = (
    GatewayAnswer("401", "No `X-API-Key` (`missing-api-key`) or one the gateway does not know "
                  "(`invalid-api-key`).", ("WWW-Authenticate",)),
    GatewayAnswer("403", "Outside the participant's testing window, allowed services "
                  "or operations, or (money-moving) above a single-transaction, daily-volume or customer "
                  "limit (`sandbox-limit`, `limit` names it); the participant is suspended "
                  "(`participant-suspended`); the regulator's key sent to a service "
                  "(`regulator-key-not-a-participant`); `X-Sandbox-On-Behalf-Of` from a participant "
                  "(`on-behalf-not-allowed`) or naming no admitted one (`unknown-originator`)."),
    GatewayAnswer("403", "Money-moving: blocked by AML screening (`transaction-blocked`, with "
                  "`X-Sandbox-Decision`, the rules that fired and the alert opened).",
                  ("X-Sandbox-Decision",), money_moving_only=True),
    GatewayAnswer("409", "Money-moving: an earlier attempt with this idempotency key is still running or its "
                  "outcome is not known yet (`idempotency-key-in-flight`, retry later), or another payment "
                  "with this `X-Request-ID` is on its way (`request-id-in-flight`).",
                  ("Retry-After",), money_moving_only=True),
    GatewayAnswer("422", "Money-moving: the gateway cannot read the amount or currency where its rules look "
                  "(`unscreenable-request`), or the body is nested too deeply (`json-too-deep`); nothing "
                  "was forwarded.", money_moving_only=True),
    GatewayAnswer("429", "Too many requests (`rate-limited`): the participant's requests a minute, or "
                  "requests without a valid key from one address.", ("Retry-After",)),
    GatewayAnswer("503", "The service could not be reached (`upstream-unavailable`), or the regulator is "
                  "resetting the sandbox to its seeded state (`sandbox-resetting`); nothing was forwarded.",
                  ("Retry-After",)),
    GatewayAnswer("503", "Money-moving: the transaction could not be screened (`screening-unavailable`); "
                  "nothing moved.", money_moving_only=True),
    GatewayAnswer("504", "The service did not answer in time (`upstream-timeout`): the request may or may not "
                  "have been applied; retry with the same idempotency key."),
)


def gateway_answers(money_moving: bool) -> dict[str, GatewayAnswer]:
    """The gateway's answers for one operation, one per status (descriptions of a status joined)."""
    merged: dict[str, GatewayAnswer] = {}
    for answer in GATEWAY_ANSWERS:
        if answer.money_moving_only and not money_moving:
            continue
        before = merged.get(answer.status)
        if before is None:
            merged[answer.status] = answer
        else:
            merged[answer.status] = GatewayAnswer(
                answer.status, f"{before.description} {answer.description}",
                tuple(dict.fromkeys(before.headers + answer.headers)))
    return merged


def _header_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def add_gateway_answers(operation: dict[str, Any], money_moving: bool) -> None:
    """The gateway's refusals as problem+json, and the headers it adds to every answer. A status
    the service already declares keeps its content; the gateway's reasons join its description."""
    responses = operation.setdefault("responses", {})
    problem = {"schema": {"$ref": SCHEMA_REF + "ProblemDetails"}}
    for status, answer in gateway_answers(money_moving).items():
        declared = responses.get(status)
        if declared is None:
            responses[status] = {"description": f"From the gateway: {answer.description}",
                                 "content": {PROBLEM_MEDIA_TYPE: _fresh(problem)}}
        else:
            declared["description"] = f"{declared.get('description', '').rstrip()}\n\nFrom the gateway: " \
                                      f"{answer.description}".lstrip()
            declared.setdefault("content", {}).setdefault(PROBLEM_MEDIA_TYPE, _fresh(problem))
            # The gateway may give this status itself, without the service's own headers (OBIE's
            # x-fapi-interaction-id): those can no longer be promised on it.
            for header in declared.get("headers", {}).values():
                if isinstance(header, dict) and "$ref" not in header:
                    header["required"] = False
        headers = responses[status].setdefault("headers", {})
        for name in answer.headers:
            headers.setdefault(name, _header_ref(name))
    every = EVERY_ANSWER + (("X-Sandbox-Decision",) if money_moving else ())
    for response in responses.values():
        headers = response.setdefault("headers", {})
        for name in every:
            headers.setdefault(name, _header_ref(name))


# -- one service's document, renamed into the shared one ---------------------------------------

def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every object in a JSON document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def schema_names(service: ServiceContract, shared: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each schema name the service's document uses -> its name in the contract: `<service>.<name>`,
    except the kit's problem schemas, which every service shares with the gateway's answers."""
    defined = service.document.get("components", {}).get("schemas", {})
    names = {name: name if shared.get(name) == schema else f"{service.name}{SCHEME_SEPARATOR}{name}"
             for name, schema in defined.items()}
    for node in walk(service.document):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            continue
        name = ref.removeprefix(SCHEMA_REF)
        if not ref.startswith(SCHEMA_REF):
            raise ValueError(f"{service.name}: cannot rename the reference {ref!r}")
        if name not in names:
            if name not in shared:  # a reference the service's document leaves dangling
                raise ValueError(f"{service.name}: {ref!r} is not defined")
            names[name] = name
    return names


def _rewrite_refs(node: Any, names: dict[str, str]) -> None:
    for item in walk(node):
        ref = item.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
            item["$ref"] = SCHEMA_REF + names[ref.removeprefix(SCHEMA_REF)]


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def proxied_operations(service: ServiceContract) -> list[tuple[str, str, dict[str, Any]]]:
    """(service path, method, operation) for every operation the gateway forwards for a participant."""
    return [(path, method, op) for path, method, op in _operations(service.document) if not is_sandbox_control(path)]


def _scheme_name(service: ServiceContract, name: str) -> str:
    return f"{service.name}{SCHEME_SEPARATOR}{name}"


def _security_schemes(service: ServiceContract) -> dict[str, dict[str, Any]]:
    """The service's own schemes (open banking's OAuth2), renamed, their relative URLs under the prefix."""
    out = {}
    for name, scheme in service.document.get("components", {}).get("securitySchemes", {}).items():
        scheme = _fresh(scheme)
        for flow in scheme.get("flows", {}).values():
            for key in ("authorizationUrl", "tokenUrl", "refreshUrl"):
                if isinstance(flow.get(key), str) and flow[key].startswith("/"):
                    flow[key] = service.prefix + flow[key]
        out[_scheme_name(service, name)] = scheme
    return out


def _security(service: ServiceContract, declared: list[dict[str, list[str]]] | None) -> list[dict[str, list[str]]]:
    """The gateway's key, and whatever the service itself asks for as well."""
    if not declared:
        return [{API_KEY_SCHEME: []}]
    return [{API_KEY_SCHEME: [], **{_scheme_name(service, k): v for k, v in requirement.items()}}
            for requirement in declared]


def _tag(service: ServiceContract, tag: str) -> str:
    return f"{service.name}: {tag}"


def service_paths(service: ServiceContract, names: dict[str, str],
                  money_moving: MoneyMoving) -> dict[str, dict[str, Any]]:
    """The service's proxied operations under its gateway prefix, renamed, with the gateway's answers."""
    proxied = proxied_operations(service)
    operation_ids = {op["operationId"]: f"{service.name}_{op['operationId']}" for _, _, op in proxied}
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in proxied:
        op = _fresh(op)
        _rewrite_refs(op, names)
        op["operationId"] = operation_ids[op["operationId"]]
        op["tags"] = [_tag(service, t) for t in op.get("tags") or [service.name]]
        op["security"] = _security(service, op.get("security"))
        for response in op.get("responses", {}).values():
            for name, link in response.get("links", {}).items():
                if "operationId" not in link or link["operationId"] not in operation_ids:
                    raise ValueError(f"{service.name} {method.upper()} {path}: link {name} leads to no "
                                     "operation reachable through the gateway")
                link["operationId"] = operation_ids[link["operationId"]]
        add_gateway_answers(op, money_moving(service.label, method.upper(), path))
        paths.setdefault(service.prefix + (path if path != "/" else ""), {})[method] = op
    return paths


# -- the gateway's own participant operations: events and webhooks -------------------------------

GATEWAY_NAME = "gateway"
# Tags of the gateway's own operations a participant calls with its key (openapi/gateway.json).
PARTICIPANT_TAGS = ("events", "webhooks")


def gateway_operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) of the gateway's own operations for participants: not the
    regulator's `/sandbox/…`, tagged events or webhooks."""
    return [(path, method, op) for path, method, op in _operations(document)
            if not path.startswith(("/sandbox", "/_sandbox")) and set(op.get("tags") or ()) & set(PARTICIPANT_TAGS)]


def _referenced(document: dict[str, Any], roots: list[Any]) -> list[str]:
    """Schema names the roots reference, transitively, in the order first met."""
    schemas = document.get("components", {}).get("schemas", {})
    seen: dict[str, None] = {}
    pending = list(roots)
    while pending:
        for node in walk(pending.pop()):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
                name = ref.removeprefix(SCHEMA_REF)
                if name not in seen and name in schemas:
                    seen[name] = None
                    pending.append(schemas[name])
    return list(seen)


def gateway_paths(document: dict[str, Any], shared: dict[str, dict[str, Any]]) -> tuple[
        dict[str, dict[str, Any]], dict[str, Any]]:
    """The gateway's participant operations as they are (answered by the gateway itself, so no
    proxy refusals are added), operationIds prefixed `gateway_`, schemas namespaced `gateway.`."""
    operations = gateway_operations(document)
    used = _referenced(document, [op for _, _, op in operations])
    schemas = document.get("components", {}).get("schemas", {})
    names = {n: n if shared.get(n) == schemas[n] else f"{GATEWAY_NAME}{SCHEME_SEPARATOR}{n}" for n in used}
    own: dict[str, Any] = {}
    for name in used:
        if names[name] in shared:
            continue
        schema = _fresh(schemas[name])
        _rewrite_refs(schema, names)
        if schema.get("title") == name:
            schema["title"] = names[name]
        own[names[name]] = schema
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in operations:
        op = _fresh(op)
        _rewrite_refs(op, names)
        op["operationId"] = f"{GATEWAY_NAME}_{op['operationId']}"
        op["tags"] = [f"{GATEWAY_NAME}: {t}" for t in op.get("tags") or ()]
        op["security"] = [{API_KEY_SCHEME: []}]
        paths.setdefault(path, {})[method] = op
    return paths, own


# -- the whole contract -------------------------------------------------------------------------

DESCRIPTION = """What a participant calls: every operation of the sandbox's services as it is reached
through the regulatory gateway at {server}, under its prefix ({prefixes}).

Generated by `make openapi` from the services' own OpenAPI documents (`openapi/<service>.json`) and
the gateway's rules; do not edit it by hand. Every operation takes the participant's key in the
`X-API-Key` header. Besides the service's own answers, each operation documents the gateway's
refusals as problem+json (401 no or unknown key, 403 sandbox limits, suspension or screening, 429
rate limit, 503 service or screening unavailable, 504 service timed out; on money-moving
operations also 409 for a request still in flight and 422 for a body the gateway cannot screen)
and the headers the gateway adds to every answer (`X-Request-ID`, `X-Sandbox-Receipt`,
`RateLimit-*`; `X-Sandbox-Decision` on money-moving operations, those its AML rules screen).

The gateway's own operations for participants are here too: `GET /events` (this participant's
events from a cursor) and `/webhooks/…` (signed webhook endpoints and their deliveries). The
gateway answers them itself, so they carry its problem+json answers (401, 403, 404, 422) but no
proxy headers; their schemas are under `gateway.`.

Schemas are namespaced by service (`payments.Money`, `openbanking.OBWriteDomestic2`), operationIds
prefixed by it (`payments_create_transfer`); the problem schema is shared.

Not here: the services' `/_sandbox/…` controls (their clocks), which the gateway forwards only with
the regulator's key and refuses to participants (403 `sandbox-controls-regulator-only`), and the
gateway's own regulator API at `/sandbox/…`, which is `openapi/gateway.json`.
"""


def participant_contract(services: Iterable[ServiceContract], money_moving: MoneyMoving,
                         shared: dict[str, dict[str, Any]] | None = None,
                         gateway: dict[str, Any] | None = None) -> dict[str, Any]:
    """openapi/sandbox.json from the services' documents and the gateway's screening rules, and
    the gateway's own events and webhooks operations from its document (`gateway`)."""
    services = list(services)
    shared = problem_schemas() if shared is None else shared
    schemas: dict[str, Any] = _fresh(shared)
    schemes: dict[str, Any] = {API_KEY_SCHEME: {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "The participant's key, issued when the regulator admits it (demo keys: README.md)."}}
    paths: dict[str, Any] = {}
    tags: list[dict[str, Any]] = []
    for service in services:
        names = schema_names(service, shared)
        for name, schema in service.document.get("components", {}).get("schemas", {}).items():
            if names[name] in shared:
                continue
            schema = _fresh(schema)
            _rewrite_refs(schema, names)
            if schema.get("title") == name:  # client generators name a class after its title
                schema["title"] = names[name]
            schemas[names[name]] = schema
        schemes.update(_security_schemes(service))
        for path, item in service_paths(service, names, money_moving).items():
            if path in paths:
                raise ValueError(f"{path} is served twice")
            paths[path] = item
        described = {t["name"]: t for t in service.document.get("tags", [])}
        used = dict.fromkeys(t for item in paths.values() for op in item.values() for t in op["tags"]
                             if t.startswith(f"{service.name}: "))
        for tag in used:
            own = described.get(tag.removeprefix(f"{service.name}: "), {})
            tags.append({**own, "name": tag})
    if gateway is not None:
        own_paths, own_schemas = gateway_paths(gateway, shared)
        schemas.update(own_schemas)
        for path, item in own_paths.items():
            if path in paths:
                raise ValueError(f"{path} is served twice")
            paths[path] = item
        described = {t["name"]: t for t in gateway.get("tags", [])}
        for tag in PARTICIPANT_TAGS:
            if any(f"{GATEWAY_NAME}: {tag}" in op["tags"] for item in own_paths.values() for op in item.values()):
                tags.append({**described.get(tag, {}), "name": f"{GATEWAY_NAME}: {tag}"})
    prefixes = ", ".join(f"`{s.prefix}/…`" for s in services)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": "1.0.0",
                 "description": DESCRIPTION.format(server=SERVER, prefixes=prefixes)},
        "servers": [{"url": SERVER}],
        "security": [{API_KEY_SCHEME: []}],
        "tags": tags,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": schemes, "headers": _fresh(HEADERS)},
    }


def screened_by_gateway() -> MoneyMoving:
    """The gateway's rules file decides which operations move money (as the gateway itself does)."""
    from sandbox.gateway.screening import RuleSet

    rules = RuleSet.load()
    return lambda service, method, path: rules.screened_operation(service, method, path) is not None
