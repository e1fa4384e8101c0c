"""Thin HTTP handlers for Sandbox Bank: the authorisation server, AISP, PISP and CBPII.

Service-local paths; at the gateway they live under `/open-banking`, so `/v3.1/aisp/accounts`
here is OBIE's `/open-banking/v3.1/aisp/accounts` there.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers

from services.common.app import ClockDep
from services.common.caller import CallerDep, caller_of
from services.common.db import SessionDep
from services.common.fields import IdPath
from services.common.idempotency import Idempotency, fingerprint
from services.openbanking import service
from services.openbanking.auth import TokenDep, acts_as, client_holder, require_client_token, require_consent_token
from services.openbanking.errors import OBIEError
from services.openbanking.models import AccessToken, Consent, DomesticPayment, FundsConfirmation
from services.openbanking.oauth import GRANT_TYPES, AuthServerDep, BankRequest
from services.openbanking.payments_client import PaymentsClient
from services.openbanking.schemas import (
    AuthorizeRequest,
    AuthorizeResponse,
    ClientRegistered,
    ClientRegistration,
    OAuthError,
    OBFundsConfirmation1,
    OBFundsConfirmationConsent1,
    OBFundsConfirmationConsentResponse1,
    OBFundsConfirmationResponse1,
    OBReadAccount6,
    OBReadBalance1,
    OBReadConsent1,
    OBReadConsentResponse1,
    OBReadTransaction6,
    OBWriteDomestic2,
    OBWriteDomesticConsent4,
    OBWriteDomesticConsentResponse5,
    OBWriteDomesticResponse5,
    OBWriteFundsConfirmationResponse1,
    PsuRevocation,
    TokenResponse,
)

PAGE_SIZE = 25
_FORWARDED_PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)+$")
_FORWARDED_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")


# --- shared dependencies ----------------------------------------------------------------------

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


def ledger(request: Request) -> PaymentsClient:
    return request.app.state.payments


LedgerDep = Annotated[PaymentsClient, Depends(ledger)]


def public_base(request: Request) -> str:
    """The URL TPPs reach the bank at: behind the gateway, its host and `/open-banking` prefix."""
    configured = request.app.state.settings.public_url
    if configured:
        return configured.rstrip("/")
    host = request.headers.get("x-forwarded-host")
    proto = request.headers.get("x-forwarded-proto")
    prefix = request.headers.get("x-forwarded-prefix", "")
    base = str(request.base_url).rstrip("/")
    if host and _FORWARDED_HOST.match(host):
        base = f"{proto if proto in ('http', 'https') else 'http'}://{host}"
    if prefix and _FORWARDED_PREFIX.match(prefix):
        base += prefix
    return base


# What may stay as it is in a URL path (RFC 3986 pchar and "/", and "%" of escapes already made).
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


def own_path(request: Request) -> str:
    """The request's path, percent-encoded: a path with brackets, spaces or control characters
    (a fuzzer sends them) still makes a valid URL in `Links`."""
    return quote(request.url.path, safe=_PATH_SAFE)


def self_link(request: Request, path: str | None = None) -> dict[str, str]:
    return {"Self": public_base(request) + (path or own_path(request))}


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


def _security(kind: str, scope: str) -> dict[str, Any]:
    scheme = "TPPOAuth2Security" if kind == "tpp" else "PSUOAuth2Security"
    return {"security": [{scheme: [scope]}]}


def _responses(*statuses: int, links: dict[str, Any] | None = None, created: Any = None) -> dict[int | str, Any]:
    out: dict[int | str, Any] = {s: {"description": _DESCRIPTIONS[s]} for s in statuses}
    if created is not None:
        out[201] = {"model": created, "description": "Created", **({"links": links} if links else {})}
    return out


_DESCRIPTIONS = {
    400: "Bad request: the request does not match the schema",
    401: "No access token, or an unknown or expired one",
    403: "The token or consent does not allow this (wrong TPP, status, permission or expiry)",
    404: "No such resource",
    409: "Refused by the resource's state, or an idempotency conflict",
    503: "The bank's ledger is unavailable",
}


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


# --- authorisation server ---------------------------------------------------------------------

auth_router = APIRouter(tags=["authorisation"])

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


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(OAuthError(error=error, error_description=description).model_dump(exclude_none=True),  # type: ignore[arg-type]
                        status_code=status, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _client_auth_headers(request: Request) -> Headers:
    """The request's headers, less HTTP Basic credentials that do not decode (Authlib would fail
    on them): the client then simply has not authenticated."""
    basic = request.headers.get("authorization", "")
    if basic[:6].lower() == "basic ":
        try:
            base64.b64decode(basic[6:].strip(), validate=True).decode("utf-8")
        except ValueError:
            return Headers(raw=[(k, v) for k, v in request.headers.raw if k != b"authorization"])
    return request.headers


@auth_router.post(
    "/oauth2/token",
    operation_id="issue_token",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses={400: {"model": OAuthError, "description": "invalid_request, invalid_grant, invalid_scope, "
                     "unsupported_grant_type"},
               401: {"model": OAuthError, "description": "invalid_client"}},
    openapi_extra={"requestBody": TOKEN_FORM},
)
def issue_token(request: Request, server: AuthServerDep,
                form: Annotated[list[tuple[str, str]] | None, Depends(token_form)]) -> Any:
    """Get an access token: client_credentials (to create consents) or authorization_code (with the PKCE verifier)."""
    fields = dict(form or [])
    if "grant_type" not in fields:
        return _oauth_error(400, "invalid_request", "Send a form-encoded body with grant_type.")
    if fields["grant_type"] not in GRANT_TYPES:  # answered here: Authlib would quote the value back unchecked
        return _oauth_error(400, "unsupported_grant_type", "Use client_credentials or authorization_code.")
    try:  # the documented field formats first, as every other operation checks its schema
        TokenForm.model_validate(fields)
    except ValidationError as exc:
        where = ", ".join(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))
        return _oauth_error(400, "invalid_scope" if where == "scope" else "invalid_request", f"Invalid: {where}.")
    answer = server.token(BankRequest(request.method, str(request.url), _client_auth_headers(request), form or []))
    if answer.status == 200:
        server.session.commit()
    else:
        server.session.rollback()  # e.g. a code spent by a concurrent request: no token
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


@auth_router.post(
    "/register",
    status_code=201,
    operation_id="register_client",
    response_model=ClientRegistered,
    responses=_responses(400),
)
def register_client(body: ClientRegistration, session: SessionDep, clock: ClockDep,
                    caller: CallerDep) -> ClientRegistered:
    """Register a TPP client and get its id and secret (a simplified dynamic registration)."""
    registered = service.register_client(session, body, caller, clock.now())
    session.commit()
    return registered


@auth_router.post(
    "/authorize",
    operation_id="authorize_consent",
    response_model=AuthorizeResponse,
    response_model_exclude_none=True,
    responses=_responses(400, 403, 404, 409),
)
def authorize_consent(body: AuthorizeRequest, request: Request, session: SessionDep, clock: ClockDep,
                      server: AuthServerDep) -> AuthorizeResponse:
    """The PSU's step at the bank, headless: the TPP's authorisation request (PKCE), then the PSU's login and decision."""
    decided = service.authorise(session, server, body, str(request.url), clock.now())
    session.commit()
    return decided


@auth_router.post(
    "/psu/consents/{ConsentId}/revoke",
    operation_id="revoke_consent",
    status_code=204,
    responses=_responses(400, 403, 404, 409),
)
def revoke_consent(
    ConsentId: Annotated[str, IdPath("aac|fcc", "An account-access or funds-confirmation ConsentId.")],  # noqa: N803
    body: PsuRevocation, session: SessionDep, clock: ClockDep, caller: CallerDep,
) -> Response:
    """The PSU revokes a consent at the bank (its status becomes Revoked)."""
    psu = service.login_psu(session, body.psu_id, body.otp)
    consent = session.get(Consent, ConsentId)
    if consent is None or consent.deleted or consent.psu_id != psu.id \
            or not acts_as(caller, client_holder(session, consent.client_id)):
        raise OBIEError(404, "UK.OBIE.Resource.NotFound", f"PSU {psu.id} has no consent {ConsentId}.", "ConsentId")
    service.revoke_consent(session, consent, clock.now())
    session.commit()
    return Response(status_code=204)


# --- AISP -------------------------------------------------------------------------------------

aisp = APIRouter(prefix="/v3.1/aisp", dependencies=[Depends(fapi_headers)])
AacId = Annotated[str, IdPath("aac", "ConsentId")]
AccountId = Annotated[str, IdPath("acc", "AccountId (the ledger account id)")]
AisClient = Annotated[AccessToken, Depends(require_client_token("accounts"))]
AisConsent = Annotated[tuple[AccessToken, Consent], Depends(require_consent_token("account-access"))]


def _ais_consent_body(request: Request, consent: Consent) -> dict[str, Any]:
    data = {"ConsentId": consent.id, "CreationDateTime": consent.created_at, "Status": consent.status,
            "StatusUpdateDateTime": consent.status_updated_at, "Permissions": consent.permissions,
            "ExpirationDateTime": consent.expires_at, "TransactionFromDateTime": consent.transactions_from,
            "TransactionToDateTime": consent.transactions_to}
    return _dump(OBReadConsentResponse1.model_validate({
        "Data": data, "Risk": {}, "Links": self_link(request, f"/v3.1/aisp/account-access-consents/{consent.id}"),
        "Meta": {}}))


AAC_LINKS = {
    "GetConsent": {"operationId": "get_account_access_consent",
                   "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}},
    "DeleteConsent": {"operationId": "delete_account_access_consent",
                      "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}},
}


@aisp.post(
    "/account-access-consents",
    status_code=201,
    tags=["account access"],
    operation_id="create_account_access_consent",
    response_model=OBReadConsentResponse1,
    responses=_responses(400, 401, 403, 409, created=OBReadConsentResponse1, links=AAC_LINKS),
    openapi_extra=_security("tpp", "accounts"),
)
def create_account_access_consent(body: OBReadConsent1, request: Request, session: SessionDep, clock: ClockDep,
                                  token: AisClient, idem: OptionalIdem) -> Response:
    """Create an account-access consent; the PSU then authorises it at the bank."""
    return idem.run(session, lambda: _ais_consent_body(
        request, service.create_account_access_consent(session, token.client_id, body, clock.now())))


@aisp.get(
    "/account-access-consents/{ConsentId}",
    tags=["account access"],
    operation_id="get_account_access_consent",
    response_model=OBReadConsentResponse1,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 404),
    openapi_extra=_security("tpp", "accounts"),
)
def get_account_access_consent(ConsentId: AacId, request: Request, session: SessionDep,  # noqa: N803
                               token: AisClient) -> dict[str, Any]:
    """An account-access consent and its status."""
    return _ais_consent_body(request, service.consent_of_client(session, ConsentId, "account-access", token.client_id))


@aisp.delete(
    "/account-access-consents/{ConsentId}",
    status_code=204,
    tags=["account access"],
    operation_id="delete_account_access_consent",
    responses=_responses(400, 401, 403, 404),
    openapi_extra=_security("tpp", "accounts"),
)
def delete_account_access_consent(ConsentId: AacId, session: SessionDep, clock: ClockDep,  # noqa: N803
                                  token: AisClient) -> Response:
    """Delete the consent: its tokens stop working at once."""
    consent = service.consent_of_client(session, ConsentId, "account-access", token.client_id)
    service.delete_consent(session, consent, clock.now())
    session.commit()
    return Response(status_code=204)


def _read_envelope(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    return {"Data": data, "Links": self_link(request), "Meta": {"TotalPages": 1}}


@aisp.get(
    "/accounts",
    tags=["accounts"],
    operation_id="get_accounts",
    response_model=OBReadAccount6,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 503),
    openapi_extra=_security("psu", "accounts"),
)
def get_accounts(request: Request, session: SessionDep, ledger: LedgerDep, grant: AisConsent) -> dict[str, Any]:
    """The accounts the PSU shared (Detail adds account numbers and the servicer)."""
    _token, consent = grant
    service.ensure_demo_history(session, ledger)
    accounts = [service.account_view(session, ledger, consent, a) for a in consent.account_ids]
    return _read_envelope(request, {"Account": accounts})


@aisp.get(
    "/accounts/{AccountId}",
    tags=["accounts"],
    operation_id="get_account",
    response_model=OBReadAccount6,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 404, 503),
    openapi_extra=_security("psu", "accounts"),
)
def get_account(AccountId: AccountId, request: Request, session: SessionDep, ledger: LedgerDep,  # noqa: N803
                grant: AisConsent) -> dict[str, Any]:
    """One shared account."""
    _token, consent = grant
    service.ensure_account_in_consent(consent, AccountId)
    return _read_envelope(request, {"Account": [service.account_view(session, ledger, consent, AccountId)]})


@aisp.get(
    "/accounts/{AccountId}/balances",
    tags=["balances"],
    operation_id="get_account_balances",
    response_model=OBReadBalance1,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 404, 503),
    openapi_extra=_security("psu", "accounts"),
)
def get_account_balances(AccountId: AccountId, request: Request, session: SessionDep, ledger: LedgerDep,  # noqa: N803
                         clock: ClockDep, grant: AisConsent) -> dict[str, Any]:
    """The account's balances (needs ReadBalances)."""
    _token, consent = grant
    service.require_cluster(consent, "balances")
    service.ensure_account_in_consent(consent, AccountId)
    service.ensure_demo_history(session, ledger)
    return _read_envelope(request, {"Balance": service.balance_view(ledger, AccountId, clock.now())})


def _as_utc_wall_time(value: datetime | None) -> datetime | None:
    # OBIE: "If the Date Time contains a timezone, the ASPSP must ignore the timezone component."
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None else None


def _page_url(request: Request, page: int) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    if page > 1:
        query.append(("page", str(page)))
    return public_base(request) + own_path(request) + (f"?{urlencode(query)}" if query else "")


@aisp.get(
    "/accounts/{AccountId}/transactions",
    tags=["transactions"],
    operation_id="get_account_transactions",
    response_model=OBReadTransaction6,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 404, 503),
    openapi_extra=_security("psu", "accounts"),
)
def get_account_transactions(
    AccountId: AccountId,  # noqa: N803
    request: Request, session: SessionDep, ledger: LedgerDep, grant: AisConsent,
    fromBookingDateTime: Annotated[datetime | None, Query(  # noqa: N803
        description="Transactions booked at or after this time (UTC; a zone is ignored).")] = None,
    toBookingDateTime: Annotated[datetime | None, Query(  # noqa: N803
        description="Transactions booked at or before this time (UTC; a zone is ignored).")] = None,
    page: Annotated[int, Query(ge=1, le=100000, description="The page `Links.Next` points at.")] = 1,
) -> dict[str, Any]:
    """The account's transactions the consent releases, 25 a page, oldest first."""
    _token, consent = grant
    service.require_cluster(consent, "transactions")
    service.ensure_account_in_consent(consent, AccountId)
    service.ensure_demo_history(session, ledger)
    transactions = service.transactions_view(ledger, consent, AccountId, _as_utc_wall_time(fromBookingDateTime),
                                             _as_utc_wall_time(toBookingDateTime))
    pages = max(1, -(-len(transactions) // PAGE_SIZE))
    links = {"Self": _page_url(request, page), "First": _page_url(request, 1), "Last": _page_url(request, pages)}
    if page > 1:
        links["Prev"] = _page_url(request, min(page - 1, pages))
    if page < pages:
        links["Next"] = _page_url(request, page + 1)
    meta: dict[str, Any] = {"TotalPages": pages}
    if transactions:
        meta["FirstAvailableDateTime"] = transactions[0]["BookingDateTime"]
        meta["LastAvailableDateTime"] = transactions[-1]["BookingDateTime"]
    shown = transactions[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    return {"Data": {"Transaction": shown}, "Links": links, "Meta": meta}


# --- PISP -------------------------------------------------------------------------------------

pisp = APIRouter(prefix="/v3.1/pisp", dependencies=[Depends(fapi_headers)])
PdcId = Annotated[str, IdPath("pdc", "ConsentId")]
PaymentId = Annotated[str, IdPath("dp", "DomesticPaymentId")]
PisClient = Annotated[AccessToken, Depends(require_client_token("payments"))]
PisConsent = Annotated[tuple[AccessToken, Consent], Depends(require_consent_token("domestic-payment"))]
PisConsentAnyStatus = Annotated[tuple[AccessToken, Consent],
                                Depends(require_consent_token("domestic-payment", usable_only=False))]


def _debtor(consent: Consent) -> dict[str, Any] | None:
    if consent.account_ids and "DebtorAccount" not in consent.data["Initiation"]:
        return {"SchemeName": "UK.OBIE.BBAN", "Identification": consent.account_ids[0]}
    return None


def _payment_consent_body(request: Request, consent: Consent) -> dict[str, Any]:
    data = {"ConsentId": consent.id, "CreationDateTime": consent.created_at, "Status": consent.status,
            "StatusUpdateDateTime": consent.status_updated_at, "Initiation": consent.data["Initiation"],
            "Debtor": _debtor(consent)}
    return _dump(OBWriteDomesticConsentResponse5.model_validate({
        "Data": data, "Risk": consent.risk,
        "Links": self_link(request, f"/v3.1/pisp/domestic-payment-consents/{consent.id}"), "Meta": {}}))


PDC_LINKS = {"GetConsent": {"operationId": "get_domestic_payment_consent",
                            "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}}}


@pisp.post(
    "/domestic-payment-consents",
    status_code=201,
    tags=["domestic payments"],
    operation_id="create_domestic_payment_consent",
    response_model=OBWriteDomesticConsentResponse5,
    responses=_responses(400, 401, 403, 409, created=OBWriteDomesticConsentResponse5, links=PDC_LINKS),
    openapi_extra=_security("tpp", "payments"),
)
def create_domestic_payment_consent(body: OBWriteDomesticConsent4, request: Request, session: SessionDep,
                                    clock: ClockDep, token: PisClient, idem: RequiredIdem) -> Response:
    """Create a domestic payment consent; the PSU then authorises it at the bank."""
    return idem.run(session, lambda: _payment_consent_body(
        request, service.create_payment_consent(session, token.client_id, body, clock.now())))


@pisp.get(
    "/domestic-payment-consents/{ConsentId}",
    tags=["domestic payments"],
    operation_id="get_domestic_payment_consent",
    response_model=OBWriteDomesticConsentResponse5,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 404),
    openapi_extra=_security("tpp", "payments"),
)
def get_domestic_payment_consent(ConsentId: PdcId, request: Request, session: SessionDep,  # noqa: N803
                                 token: PisClient) -> dict[str, Any]:
    """A domestic payment consent and its status."""
    return _payment_consent_body(
        request, service.consent_of_client(session, ConsentId, "domestic-payment", token.client_id))


@pisp.get(
    "/domestic-payment-consents/{ConsentId}/funds-confirmation",
    tags=["domestic payments"],
    operation_id="get_domestic_payment_consent_funds_confirmation",
    response_model=OBWriteFundsConfirmationResponse1,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 404, 503),
    openapi_extra=_security("psu", "payments"),
)
def get_domestic_payment_consent_funds_confirmation(
    ConsentId: PdcId, request: Request, ledger: LedgerDep, clock: ClockDep, grant: PisConsent,  # noqa: N803
) -> dict[str, Any]:
    """Could the debtor account pay the consent's amount now?"""
    _token, consent = grant
    if consent.id != ConsentId:
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                        f"The access token is bound to consent {consent.id}.", "ConsentId")
    amount = consent.data["Initiation"]["InstructedAmount"]
    available = service.funds_available(ledger, consent.account_ids[0], amount["Amount"], amount["Currency"])
    return {"Data": {"FundsAvailableResult": {"FundsAvailableDateTime": clock.now(), "FundsAvailable": available}},
            "Links": self_link(request), "Meta": {}}


def _payment_body(request: Request, payment: DomesticPayment, consent: Consent) -> dict[str, Any]:
    data = {"DomesticPaymentId": payment.id, "ConsentId": payment.consent_id,
            "CreationDateTime": payment.created_at, "Status": payment.status,
            "StatusUpdateDateTime": payment.status_updated_at, "Initiation": consent.data["Initiation"],
            "Debtor": _debtor(consent)}
    return _dump(OBWriteDomesticResponse5.model_validate({
        "Data": data, "Links": self_link(request, f"/v3.1/pisp/domestic-payments/{payment.id}"), "Meta": {}}))


DP_LINKS = {"GetPayment": {"operationId": "get_domestic_payment",
                           "parameters": {"DomesticPaymentId": "$response.body#/Data/DomesticPaymentId"}}}


@pisp.post(
    "/domestic-payments",
    status_code=201,
    tags=["domestic payments"],
    operation_id="create_domestic_payment",
    response_model=OBWriteDomesticResponse5,
    responses=_responses(400, 401, 403, 409, created=OBWriteDomesticResponse5, links=DP_LINKS),
    openapi_extra=_security("psu", "payments"),
)
def create_domestic_payment(body: OBWriteDomestic2, request: Request, session: SessionDep, clock: ClockDep,
                            ledger: LedgerDep, grant: PisConsentAnyStatus, idem: RequiredIdem) -> Response:
    """Execute the authorised payment: a ledger transfer through the gateway; the consent is Consumed."""
    _token, consent = grant

    def work() -> dict[str, Any]:
        payment = service.create_domestic_payment(session, ledger, consent, body, clock.now())
        return _payment_body(request, payment, consent)

    return idem.run(session, work)


@pisp.get(
    "/domestic-payments/{DomesticPaymentId}",
    tags=["domestic payments"],
    operation_id="get_domestic_payment",
    response_model=OBWriteDomesticResponse5,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 404),
    openapi_extra=_security("tpp", "payments"),
)
def get_domestic_payment(DomesticPaymentId: PaymentId, request: Request, session: SessionDep,  # noqa: N803
                         clock: ClockDep, ledger: LedgerDep, token: PisClient) -> dict[str, Any]:
    """A domestic payment and its status (a Pending one is retried, safely, on each read)."""
    payment = service.payment_of_client(session, DomesticPaymentId, token.client_id)
    consent = session.get(Consent, payment.consent_id)
    assert consent is not None
    if payment.status == "Pending":
        service.settle(session, ledger, payment, consent, clock.now())
        session.commit()
    return _payment_body(request, payment, consent)


# --- CBPII ------------------------------------------------------------------------------------

cbpii = APIRouter(prefix="/v3.1/cbpii", dependencies=[Depends(fapi_headers)])
FccId = Annotated[str, IdPath("fcc", "ConsentId")]
CofClient = Annotated[AccessToken, Depends(require_client_token("fundsconfirmations"))]
CofConsent = Annotated[tuple[AccessToken, Consent], Depends(require_consent_token("funds-confirmation"))]


def _funds_consent_body(request: Request, consent: Consent) -> dict[str, Any]:
    data = {"ConsentId": consent.id, "CreationDateTime": consent.created_at, "Status": consent.status,
            "StatusUpdateDateTime": consent.status_updated_at, "ExpirationDateTime": consent.expires_at,
            "DebtorAccount": consent.data["DebtorAccount"]}
    return _dump(OBFundsConfirmationConsentResponse1.model_validate({
        "Data": data, "Links": self_link(request, f"/v3.1/cbpii/funds-confirmation-consents/{consent.id}"),
        "Meta": {}}))


FCC_LINKS = {
    "GetConsent": {"operationId": "get_funds_confirmation_consent",
                   "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}},
    "DeleteConsent": {"operationId": "delete_funds_confirmation_consent",
                      "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}},
}


@cbpii.post(
    "/funds-confirmation-consents",
    status_code=201,
    tags=["funds confirmation"],
    operation_id="create_funds_confirmation_consent",
    response_model=OBFundsConfirmationConsentResponse1,
    responses=_responses(400, 401, 403, 409, created=OBFundsConfirmationConsentResponse1, links=FCC_LINKS),
    openapi_extra=_security("tpp", "fundsconfirmations"),
)
def create_funds_confirmation_consent(body: OBFundsConfirmationConsent1, request: Request, session: SessionDep,
                                      clock: ClockDep, token: CofClient, idem: OptionalIdem) -> Response:
    """Create a funds-confirmation consent for one account; the PSU then authorises it."""
    return idem.run(session, lambda: _funds_consent_body(
        request, service.create_funds_consent(session, token.client_id, body, clock.now())))


@cbpii.get(
    "/funds-confirmation-consents/{ConsentId}",
    tags=["funds confirmation"],
    operation_id="get_funds_confirmation_consent",
    response_model=OBFundsConfirmationConsentResponse1,
    response_model_exclude_none=True,
    responses=_responses(400, 401, 403, 404),
    openapi_extra=_security("tpp", "fundsconfirmations"),
)
def get_funds_confirmation_consent(ConsentId: FccId, request: Request, session: SessionDep,  # noqa: N803
                                   token: CofClient) -> dict[str, Any]:
    """A funds-confirmation consent and its status."""
    return _funds_consent_body(
        request, service.consent_of_client(session, ConsentId, "funds-confirmation", token.client_id))


@cbpii.delete(
    "/funds-confirmation-consents/{ConsentId}",
    status_code=204,
    tags=["funds confirmation"],
    operation_id="delete_funds_confirmation_consent",
    responses=_responses(400, 401, 403, 404),
    openapi_extra=_security("tpp", "fundsconfirmations"),
)
def delete_funds_confirmation_consent(ConsentId: FccId, session: SessionDep, clock: ClockDep,  # noqa: N803
                                      token: CofClient) -> Response:
    """Delete the consent: its tokens stop working at once."""
    consent = service.consent_of_client(session, ConsentId, "funds-confirmation", token.client_id)
    service.delete_consent(session, consent, clock.now())
    session.commit()
    return Response(status_code=204)


@cbpii.post(
    "/funds-confirmations",
    status_code=201,
    tags=["funds confirmation"],
    operation_id="create_funds_confirmation",
    response_model=OBFundsConfirmationResponse1,
    responses=_responses(400, 401, 403, 409, 503, created=OBFundsConfirmationResponse1),
    openapi_extra=_security("psu", "fundsconfirmations"),
)
def create_funds_confirmation(body: OBFundsConfirmation1, request: Request, session: SessionDep, clock: ClockDep,
                              ledger: LedgerDep, grant: CofConsent, idem: OptionalIdem) -> Response:
    """Could the PSU pay this amount now? A yes or no; no money is held."""
    _token, consent = grant

    def work() -> dict[str, Any]:
        row = service.confirm_funds(session, ledger, consent, body, clock.now())
        return _funds_confirmation_body(request, row)

    return idem.run(session, work)


def _funds_confirmation_body(request: Request, row: FundsConfirmation) -> dict[str, Any]:
    return _dump(OBFundsConfirmationResponse1.model_validate({
        "Data": {"FundsConfirmationId": row.id, "ConsentId": row.consent_id, "CreationDateTime": row.created_at,
                 "FundsAvailable": row.funds_available, "Reference": row.reference,
                 "InstructedAmount": {"Amount": row.amount, "Currency": row.currency}},
        "Links": self_link(request), "Meta": {}}))



