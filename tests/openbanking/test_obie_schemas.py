"""Every implemented operation's responses validate against the official OBIE v3.1.11 schemas.

The OpenAPI files are not in this repository: set OBIE_SPEC_DIR to a folder holding
account-info-openapi.json, payment-initiation-openapi.json and confirmation-funds-openapi.json
(OpenBankingUK/read-write-api-specs, tag v3.1.11, dist/openapi). `.ci/run` sets it.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.openbanking.factories import WALLET, Bank, bearer

SPEC_DIR = os.environ.get("OBIE_SPEC_DIR")
pytestmark = pytest.mark.skipif(
    not SPEC_DIR,
    reason="OBIE_SPEC_DIR is not set: point it at a folder with the OBIE v3.1.11 OpenAPI files "
    "(account-info-openapi.json, payment-initiation-openapi.json, confirmation-funds-openapi.json), e.g. "
    "OBIE_SPEC_DIR=../shared/reference/obie-v3.1.11 pytest tests/openbanking/test_obie_schemas.py",
)

FILES = {"aisp": "account-info-openapi.json", "pisp": "payment-initiation-openapi.json",
         "cbpii": "confirmation-funds-openapi.json"}


@cache
def _spec(api: str) -> dict[str, Any]:
    return json.loads((Path(SPEC_DIR or ".") / FILES[api]).read_text(encoding="utf-8"))


def _inline(node: Any, root: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Resolve every local $ref by inlining it (the OBIE files have no recursive schemas)."""
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/") and ref not in seen, ref
            target: Any = root
            for part in ref[2:].split("/"):
                target = target[part]
            return _inline(target, root, (*seen, ref))
        return {k: _inline(v, root, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, root, seen) for v in node]
    return node


@cache
def _validator(api: str, path: str, method: str, status: int) -> Any:
    spec = _spec(api)
    response = _inline(spec["paths"][path][method]["responses"][str(status)], spec)
    if "content" not in response:  # OBIE leaves 401/404/405 bodies open; ours are OBErrorResponse1
        return jsonschema_rs.Draft4Validator(_inline(spec["components"]["schemas"]["OBErrorResponse1"], spec),
                                             validate_formats=True)
    schema = response["content"]["application/json; charset=utf-8"]["schema"]
    return jsonschema_rs.Draft4Validator(schema, validate_formats=True)


def check(api: str, path: str, method: str, response: httpx.Response, failures: list[str]) -> None:
    validator = _validator(api, path, method, response.status_code)
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(response.json())]
    if errors:
        failures.append(f"{method.upper()} {path} {response.status_code}: " + "; ".join(errors[:5]))
    if "x-fapi-interaction-id" not in response.headers:
        failures.append(f"{method.upper()} {path}: no x-fapi-interaction-id")


def test_every_implemented_operation_answers_in_obie_v3_1_11_schemas(bank: Bank) -> None:
    failures: list[str] = []
    tpp = bearer(bank.client_token())
    c = bank.client

    # AISP
    created = c.post("/v3.1/aisp/account-access-consents", headers=tpp, json={"Data": {
        "Permissions": ["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail", "ReadTransactionsCredits",
                        "ReadTransactionsDebits"], "ExpirationDateTime": "2027-01-01T00:00:00Z"}, "Risk": {}})
    check("aisp", "/account-access-consents", "post", created, failures)
    consent = created.json()["Data"]["ConsentId"]
    check("aisp", "/account-access-consents/{ConsentId}", "get",
          c.get(f"/v3.1/aisp/account-access-consents/{consent}", headers=tpp), failures)
    psu = bearer(bank.psu_token(consent))
    check("aisp", "/accounts", "get", c.get("/v3.1/aisp/accounts", headers=psu), failures)
    check("aisp", "/accounts/{AccountId}", "get", c.get(f"/v3.1/aisp/accounts/{WALLET}", headers=psu), failures)
    check("aisp", "/accounts/{AccountId}/balances", "get",
          c.get(f"/v3.1/aisp/accounts/{WALLET}/balances", headers=psu), failures)
    check("aisp", "/accounts/{AccountId}/transactions", "get",
          c.get(f"/v3.1/aisp/accounts/{WALLET}/transactions", headers=psu), failures)
    basic = bearer(bank.ais_token(["ReadAccountsBasic", "ReadTransactionsBasic", "ReadTransactionsDebits"]))
    check("aisp", "/accounts/{AccountId}/transactions", "get",
          c.get(f"/v3.1/aisp/accounts/{WALLET}/transactions", headers=basic), failures)
    check("aisp", "/accounts/{AccountId}/balances", "get",
          c.get(f"/v3.1/aisp/accounts/{WALLET}/balances", headers=basic), failures)  # 403
    check("aisp", "/accounts", "get", c.get("/v3.1/aisp/accounts"), failures)  # 401
    check("aisp", "/account-access-consents", "post",
          c.post("/v3.1/aisp/account-access-consents", headers=tpp, json={"Data": {}, "Risk": {}}), failures)  # 400

    # PISP
    payment_consent = bank.payment_consent(bank.initiation(RemittanceInformation={"Reference": "Beans"}))
    check("pisp", "/domestic-payment-consents", "post", payment_consent, failures)
    pdc = payment_consent.json()["Data"]
    check("pisp", "/domestic-payment-consents/{ConsentId}", "get",
          c.get(f"/v3.1/pisp/domestic-payment-consents/{pdc['ConsentId']}", headers=tpp), failures)
    pay = bearer(bank.psu_token(pdc["ConsentId"]))
    check("pisp", "/domestic-payment-consents/{ConsentId}/funds-confirmation", "get",
          c.get(f"/v3.1/pisp/domestic-payment-consents/{pdc['ConsentId']}/funds-confirmation", headers=pay),
          failures)
    paid = c.post("/v3.1/pisp/domestic-payments", headers={**pay, "x-idempotency-key": "schema-1"},
                  json={"Data": {"ConsentId": pdc["ConsentId"], "Initiation": pdc["Initiation"]}, "Risk": {}})
    check("pisp", "/domestic-payments", "post", paid, failures)
    check("pisp", "/domestic-payments/{DomesticPaymentId}", "get",
          c.get(f"/v3.1/pisp/domestic-payments/{paid.json()['Data']['DomesticPaymentId']}", headers=tpp), failures)
    again = c.post("/v3.1/pisp/domestic-payments", headers={**pay, "x-idempotency-key": "schema-2"},
                   json={"Data": {"ConsentId": pdc["ConsentId"], "Initiation": pdc["Initiation"]}, "Risk": {}})
    check("pisp", "/domestic-payments", "post", again, failures)  # 403 consumed

    # CBPII
    funds = c.post("/v3.1/cbpii/funds-confirmation-consents", headers=tpp, json={"Data": {
        "DebtorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": WALLET}}})
    check("cbpii", "/funds-confirmation-consents", "post", funds, failures)
    fcc = funds.json()["Data"]["ConsentId"]
    check("cbpii", "/funds-confirmation-consents/{ConsentId}", "get",
          c.get(f"/v3.1/cbpii/funds-confirmation-consents/{fcc}", headers=tpp), failures)
    cof = bank.psu_token(fcc)
    check("cbpii", "/funds-confirmations", "post", bank.confirm_funds(fcc, cof, "10.00"), failures)

    assert not failures, "\n".join(failures)
