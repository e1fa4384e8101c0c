"""The participant's contract (openapi/sandbox.json): generated from the services' documents and
the gateway's rules, committed in sync, every reference resolving, every proxied operation once."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
import schemathesis

from sandbox.contracts import OPENAPI_DIR, PARTICIPANT_FILE, build_app, participant_document, render
from sandbox.participant_contract import (
    API_KEY_SCHEME,
    GATEWAY_NAME,
    ServiceContract,
    gateway_operations,
    participant_contract,
    problem_schemas,
    proxied_operations,
    walk,
)
from sandbox.topology import api_services

PROXIED = [spec for spec in api_services() if spec.kind == "service"]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@cache
def _service_documents() -> dict[str, dict[str, Any]]:
    return {spec.name: build_app(spec).openapi() for spec in api_services()}


@cache
def _committed() -> dict[str, Any]:
    return json.loads((OPENAPI_DIR / PARTICIPANT_FILE).read_text(encoding="utf-8"))


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in METHODS]


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_committed_participant_contract_matches_the_code() -> None:
    committed = OPENAPI_DIR / PARTICIPANT_FILE
    assert committed.exists(), f"missing {committed}; run `make openapi`"
    assert committed.read_text(encoding="utf-8") == render(participant_document(_service_documents())), (
        f"{committed} drifted from the services or the gateway's rules; run `make openapi` and commit it"
    )


def test_every_reference_resolves() -> None:
    document = _committed()
    refs = {node["$ref"] for node in walk(document) if isinstance(node.get("$ref"), str)}
    assert refs
    unresolved = []
    for ref in sorted(refs):
        try:
            _resolve(document, ref)
        except KeyError:
            unresolved.append(ref)
    assert unresolved == []


def test_every_proxied_service_operation_appears_exactly_once() -> None:
    document = _committed()
    expected = set()
    for spec in PROXIED:
        service = ServiceContract(spec.name, spec.gateway_prefix, _service_documents()[spec.name])  # type: ignore[arg-type]
        for path, method, op in proxied_operations(service):
            expected.add((spec.gateway_prefix + path, method, f"{spec.name}_{op['operationId']}"))
    # And the gateway's own participant operations (events, webhooks), answered by the gateway.
    for path, method, op in gateway_operations(_service_documents()["gateway"]):
        expected.add((path, method, f"{GATEWAY_NAME}_{op['operationId']}"))
    found = [(path, method, op["operationId"]) for path, method, op in _operations(document)]
    assert len(found) == len(set(found)) == len(expected)
    assert set(found) == expected
    operation_ids = [op_id for _, _, op_id in found]
    assert len(operation_ids) == len(set(operation_ids))


def test_sandbox_controls_and_the_regulator_api_are_left_out() -> None:
    paths = _committed()["paths"]
    assert not [p for p in paths if "/_sandbox" in p or p.startswith("/sandbox/")]
    assert "/_sandbox/" in _committed()["info"]["description"]


def test_the_api_key_applies_to_every_operation() -> None:
    document = _committed()
    assert document["components"]["securitySchemes"][API_KEY_SCHEME] | {"description": ""} == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": ""}
    assert document["security"] == [{API_KEY_SCHEME: []}]
    for path, method, op in _operations(document):
        assert op["security"] and all(API_KEY_SCHEME in req for req in op["security"]), (method, path)
        assert "401" in op["responses"], (method, path)
        assert _answered_by_gateway(op) or "429" in op["responses"], (method, path)


def test_open_banking_keeps_its_oauth_next_to_the_key_under_its_prefix() -> None:
    document = _committed()
    op = document["paths"]["/open-banking/v3.1/pisp/domestic-payments"]["post"]
    assert op["security"] == [{API_KEY_SCHEME: [], "openbanking.PSUOAuth2Security": ["payments"]}]
    flows = document["components"]["securitySchemes"]["openbanking.TPPOAuth2Security"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == "/open-banking/oauth2/token"


def test_a_money_moving_operation_carries_the_screening_answers() -> None:
    responses = _committed()["paths"]["/payments/transfers"]["post"]["responses"]
    for status in ("409", "422"):
        assert "From the gateway" in responses[status]["description"]
        assert "application/problem+json" in responses[status]["content"]
    assert "idempotency-key-in-flight" in responses["409"]["description"]
    assert "unscreenable-request" in responses["422"]["description"]
    assert "transaction-blocked" in responses["403"]["description"]
    assert all("X-Sandbox-Decision" in r["headers"] for r in responses.values())
    # The service's own meaning of a status stays, the gateway's joins it.
    assert responses["409"]["description"].startswith("Refused by a business rule")


def test_an_operation_that_moves_no_money_has_no_screening_answers() -> None:
    responses = _committed()["paths"]["/payments/accounts/{account_id}"]["get"]["responses"]
    assert "409" not in responses and "422" in responses  # its 422 is the service's validation
    assert "unscreenable-request" not in responses["422"]["description"]
    assert all("X-Sandbox-Decision" not in r["headers"] for r in responses.values())
    assert {"401", "403", "429", "503", "504"} <= set(responses)


def _answered_by_gateway(op: dict[str, Any]) -> bool:
    """The gateway's own events and webhooks operations: no proxy, so no proxy headers or 429."""
    return op["operationId"].startswith(f"{GATEWAY_NAME}_")


def test_every_answer_carries_the_gateway_headers() -> None:
    document = _committed()
    for path, method, op in _operations(document):
        if _answered_by_gateway(op):
            continue
        for status, response in op["responses"].items():
            assert {"X-Request-ID", "X-Sandbox-Receipt", "RateLimit-Limit", "RateLimit-Remaining",
                    "RateLimit-Reset", "RateLimit-Policy"} <= set(response["headers"]), (method, path, status)
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
        assert "Retry-After" in op["responses"]["429"]["headers"]


def test_links_lead_to_operations_in_the_document() -> None:
    document = _committed()
    operation_ids = {op["operationId"] for _, _, op in _operations(document)}
    links = [link for _, _, op in _operations(document) for r in op["responses"].values()
             for link in r.get("links", {}).values()]
    assert links and all(link["operationId"] in operation_ids for link in links)


def test_open_banking_schema_names_survive_under_its_namespace() -> None:
    schemas = _committed()["components"]["schemas"]
    assert "openbanking.OBWriteDomestic2" in schemas and "openbanking.OBErrorResponse1" in schemas
    assert "payments.Money" in schemas and "advisor.AccountCreate" in schemas
    assert schemas["ProblemDetails"] == problem_schemas()["ProblemDetails"]


def test_schemathesis_loads_every_operation() -> None:
    # openapi-spec-validator is not installed here; schemathesis parses the whole document instead.
    schema = schemathesis.openapi.from_dict(_committed())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(_operations(_committed()))
    schema.as_state_machine()  # the links resolve to operations


# -- the generator on small documents ------------------------------------------------------

def _service(name: str, prefix: str, schemas: dict[str, Any], paths: dict[str, Any]) -> ServiceContract:
    return ServiceContract(name, prefix, {"openapi": "3.1.0", "paths": paths, "components": {"schemas": schemas}})


def _created(ref: str, op_id: str = "create_thing", link_to: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": "Created",
                                "content": {"application/json": {"schema": {"$ref": ref}}}}
    if link_to:
        response["links"] = {"Next": {"operationId": link_to}}
    return {"operationId": op_id, "responses": {"201": response, "409": {"description": "Taken"}}}


def test_same_named_schemas_of_two_services_are_kept_apart() -> None:
    money = {"type": "object", "properties": {"amount": {"type": "string"}}}
    a = _service("alpha", "/alpha", {"Money": money}, {"/things": {"post": _created("#/components/schemas/Money")}})
    b = _service("beta", "/beta", {"Money": {"type": "string"}},
                 {"/things": {"post": _created("#/components/schemas/Money", link_to="create_thing")}})
    document = participant_contract([a, b], lambda service, method, path: service == "alpha")
    schemas = document["components"]["schemas"]
    assert schemas["alpha.Money"] == money and schemas["beta.Money"] == {"type": "string"}
    beta = document["paths"]["/beta/things"]["post"]
    assert beta["operationId"] == "beta_create_thing"
    assert beta["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/beta.Money"}
    assert beta["responses"]["201"]["links"]["Next"]["operationId"] == "beta_create_thing"
    alpha = document["paths"]["/alpha/things"]["post"]["responses"]
    assert alpha["409"]["description"].startswith("Taken\n\nFrom the gateway: ")
    assert beta["responses"]["409"]["description"] == "Taken"  # beta moves no money


def test_a_dangling_reference_other_than_the_problem_schema_is_refused() -> None:
    broken = _service("alpha", "/alpha", {}, {"/things": {"post": _created("#/components/schemas/Nowhere")}})
    with pytest.raises(ValueError, match="Nowhere"):
        participant_contract([broken], lambda *_: False)
    # The problem schema is the kit's: a service that refers to it without defining it gets the shared one.
    sparse = _service("alpha", "/alpha", {}, {"/things": {"post": _created("#/components/schemas/ProblemDetails")}})
    document = participant_contract([sparse], lambda *_: False)
    assert "ProblemDetails" in document["components"]["schemas"]


def test_a_link_to_a_sandbox_control_is_refused() -> None:
    service = _service("alpha", "/alpha", {}, {
        "/things": {"post": _created("#/components/schemas/ProblemDetails", link_to="advance_clock")},
        "/_sandbox/clock/advance": {"post": {"operationId": "advance_clock", "responses": {}}},
    })
    with pytest.raises(ValueError, match="link"):
        participant_contract([service], lambda *_: False)
