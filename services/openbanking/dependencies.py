"""What the bank's handlers take from a request: OBIE's headers, the token each API needs, the
idempotency key, the token endpoint's form, and the ledger client.

Bearer-token checks themselves are `auth.py`'s; these are the `Annotated` aliases handlers use.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers

from services.common.caller import caller_of
from services.common.idempotency import Idempotency, fingerprint
from services.common.payments_client import PaymentsClient
from services.openbanking.auth import (
    TokenDep,
    require_client_token,
    require_consent_token,
)
from services.openbanking.models import AccessToken, Consent

# --- OBIE's headers ---------------------------------------------------------------------------

def fapi_headers(
    x_fapi_interaction_id: Annotated[str | None, Header(
        description="An RFC 4122 UUID the TPP uses to correlate; echoed in the response (made up when absent).")] = None,
    x_fapi_auth_date: Annotated[str | None, Header(
        description="When the PSU last logged in with the TPP (RFC 7231 date, e.g. `Sun, 10 Sep 2017 19:43:31 UTC`); not checked.")] = None,
    x_fapi_customer_ip_address: Annotated[str | None, Header(
        description="The PSU's IP address, when the PSU is present.")] = None,
    x_customer_user_agent: Annotated[str | None, Header(description="The PSU's user agent.")] = None,
) -> None:
    """OBIE's request headers; the bank reads none of them beyond the interaction id."""


# --- the ledger -------------------------------------------------------------------------------

def ledger(request: Request) -> PaymentsClient:
    return request.app.state.payments


LedgerDep = Annotated[PaymentsClient, Depends(ledger)]


# --- tokens, per API --------------------------------------------------------------------------

# Consent set-up calls: the TPP's client-credentials token with the API's scope.
AisClient = Annotated[AccessToken, Depends(require_client_token("accounts"))]
PisClient = Annotated[AccessToken, Depends(require_client_token("payments"))]
CofClient = Annotated[AccessToken, Depends(require_client_token("fundsconfirmations"))]
# Calls made for a PSU: the token of an authorised, unexpired consent of the API's kind.
AisConsent = Annotated[tuple[AccessToken, Consent], Depends(require_consent_token("account-access"))]
PisConsent = Annotated[tuple[AccessToken, Consent], Depends(require_consent_token("domestic-payment"))]
CofConsent = Annotated[tuple[AccessToken, Consent], Depends(require_consent_token("funds-confirmation"))]
# Making the payment checks the consent's status itself (service.create_domestic_payment).
PisConsentAnyStatus = Annotated[tuple[AccessToken, Consent],
                                Depends(require_consent_token("domestic-payment", usable_only=False))]


# --- x-idempotency-key ------------------------------------------------------------------------

IDEMPOTENCY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,38}[\x21-\x7e])?$"
IDEMPOTENCY_DOC = ("Every request is processed once per key for 24 hours: a retry with the same key and "
                   "body gets the original resource; another body with the same key is refused.")


async def _idempotency(request: Request, token: AccessToken, key: str | None) -> Idempotency:
    body = await request.body()
    # Keys are the TPP's own, as OBIE scopes them per TPP: through the gateway the participant
    # (each client belongs to one), so the gateway can reconcile by it; on the bank's port the client.
    return Idempotency(request.app.state.idempotency_table, request.app.state.clock, key,
                       scope=caller_of(request).participant_id or f"tpp:{token.client_id}",
                       fingerprint=fingerprint(request.method, request.url.path, body),
                       lease=request.app.state.idempotency_lease)


async def optional_idempotency(
    request: Request, token: TokenDep,
    x_idempotency_key: Annotated[str | None, Header(max_length=40, pattern=IDEMPOTENCY_PATTERN,
                                                    description=IDEMPOTENCY_DOC)] = None,
) -> Idempotency:
    return await _idempotency(request, token, x_idempotency_key)


async def required_idempotency(
    request: Request, token: TokenDep,
    x_idempotency_key: Annotated[str, Header(max_length=40, pattern=IDEMPOTENCY_PATTERN,
                                             description=IDEMPOTENCY_DOC)],
) -> Idempotency:
    return await _idempotency(request, token, x_idempotency_key)


OptionalIdem = Annotated[Idempotency, Depends(optional_idempotency)]
RequiredIdem = Annotated[Idempotency, Depends(required_idempotency)]


# --- the token endpoint's form ----------------------------------------------------------------

SCOPE_PATTERN = r"^(accounts|payments|fundsconfirmations)( (accounts|payments|fundsconfirmations))*$"


class TokenForm(BaseModel):
    """The token request's fields (RFC 6749 §4.1.3 and §4.4.2); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    grant_type: Literal["client_credentials", "authorization_code"]
    client_id: str | None = Field(default=None, description="Or use HTTP Basic client authentication.",
                                  examples=["tpp_demo"])
    client_secret: str | None = Field(default=None, examples=["sbx_demo_tpp_secret"])
    scope: str | None = Field(default=None, pattern=SCOPE_PATTERN,
                              description="client_credentials: space-separated; default all three.")
    code: str | None = Field(default=None, description="authorization_code: the code from /authorize.")
    code_verifier: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._~\-]{43,128}$", description=(
        "authorization_code: the PKCE verifier whose S256 digest was the code_challenge at /authorize."))
    redirect_uri: str | None = Field(default=None, description=(
        "authorization_code: required, and identical, if /authorize named one."))


def _form_schema() -> dict[str, Any]:
    schema = TokenForm.model_json_schema()
    properties = {}
    for name, prop in schema["properties"].items():
        # Form fields are strings or absent; spell them as plain strings for form encoders.
        plain = next((b for b in prop.get("anyOf", []) if b.get("type") == "string"), prop)
        properties[name] = {k: v for k, v in {**prop, **plain}.items() if k not in ("anyOf", "default", "title")}
    return {"type": "object", "required": ["grant_type"], "properties": properties}


# The request body as the OpenAPI document shows it (the handler reads the form itself).
TOKEN_FORM = {
    "required": True,
    "content": {"application/x-www-form-urlencoded": {"schema": _form_schema(), "examples": {
        "client_credentials": {"value": {
            "grant_type": "client_credentials", "client_id": "tpp_demo",
            "client_secret": "sbx_demo_tpp_secret", "scope": "accounts payments fundsconfirmations"}}}}},
}


async def token_form(request: Request) -> list[tuple[str, str]] | None:
    """The token request's form fields (RFC 6749 uses application/x-www-form-urlencoded); None
    when the body is not such a form."""
    raw = await request.body()
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        return None


TokenFormDep = Annotated[list[tuple[str, str]] | None, Depends(token_form)]


def client_auth_headers(request: Request) -> Headers:
    """The request's headers, less HTTP Basic credentials that do not decode (Authlib would fail
    on them): the client then simply has not authenticated."""
    basic = request.headers.get("authorization", "")
    if basic[:6].lower() == "basic ":
        try:
            base64.b64decode(basic[6:].strip(), validate=True).decode("utf-8")
        except ValueError:
            return Headers(raw=[(k, v) for k, v in request.headers.raw if k != b"authorization"])
    return request.headers
