"""The authorisation server: OAuth2 tokens, client registration, and the PSU's steps at the
bank (authorising a consent, revoking one)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.common.app import ClockDep
from services.common.caller import CallerDep
from services.common.db import SessionDep
from services.common.fields import IdPath
from services.openbanking import service
from services.openbanking.auth import acts_as, client_holder
from services.openbanking.dependencies import (
    TOKEN_FORM,
    TokenForm,
    TokenFormDep,
    client_auth_headers,
)
from services.openbanking.errors import OBIEError
from services.openbanking.models import Consent
from services.openbanking.oauth import GRANT_TYPES, AuthServerDep, BankRequest
from services.openbanking.presenters import oauth_error
from services.openbanking.routers.openapi import responses
from services.openbanking.schemas import (
    AuthorizeRequest,
    AuthorizeResponse,
    ClientRegistered,
    ClientRegistration,
    OAuthError,
    PsuRevocation,
    TokenResponse,
)

router = APIRouter(tags=["authorisation"])


@router.post(
    "/oauth2/token",
    operation_id="issue_token",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses={400: {"model": OAuthError, "description": "invalid_request, invalid_grant, invalid_scope, "
                     "unsupported_grant_type"},
               401: {"model": OAuthError, "description": "invalid_client"}},
    openapi_extra={"requestBody": TOKEN_FORM},
)
def issue_token(request: Request, server: AuthServerDep, form: TokenFormDep) -> Any:
    """Get an access token: client_credentials (to create consents) or authorization_code (with the PKCE verifier)."""
    fields = dict(form or [])
    if "grant_type" not in fields:
        return oauth_error(400, "invalid_request", "Send a form-encoded body with grant_type.")
    if fields["grant_type"] not in GRANT_TYPES:  # answered here: Authlib would quote the value back unchecked
        return oauth_error(400, "unsupported_grant_type", "Use client_credentials or authorization_code.")
    try:  # the documented field formats first, as every other operation checks its schema
        TokenForm.model_validate(fields)
    except ValidationError as exc:
        where = ", ".join(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))
        return oauth_error(400, "invalid_scope" if where == "scope" else "invalid_request", f"Invalid: {where}.")
    answer = server.token(BankRequest(request.method, str(request.url), client_auth_headers(request), form or []))
    if answer.status != 200:
        server.session.rollback()  # e.g. a code spent by a concurrent request: nothing is kept
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


@router.post(
    "/register",
    status_code=201,
    operation_id="register_client",
    response_model=ClientRegistered,
    responses=responses(400),
)
def register_client(body: ClientRegistration, session: SessionDep, clock: ClockDep,
                    caller: CallerDep) -> ClientRegistered:
    """Register a TPP client and get its id and secret (a simplified dynamic registration)."""
    return service.register_client(session, body, caller, clock.now())


@router.post(
    "/authorize",
    operation_id="authorize_consent",
    response_model=AuthorizeResponse,
    response_model_exclude_none=True,
    responses=responses(400, 403, 404, 409),
)
def authorize_consent(body: AuthorizeRequest, request: Request, session: SessionDep, clock: ClockDep,
                      server: AuthServerDep) -> AuthorizeResponse:
    """The PSU's step at the bank, headless: the TPP's authorisation request (PKCE), then the PSU's login and decision."""
    return service.authorise(session, server, body, str(request.url), clock.now())


@router.post(
    "/psu/consents/{ConsentId}/revoke",
    operation_id="revoke_consent",
    status_code=204,
    responses=responses(400, 403, 404, 409),
)
def revoke_consent(
    ConsentId: Annotated[str, IdPath("aac|fcc", "An account-access or funds-confirmation ConsentId.")],
    body: PsuRevocation, session: SessionDep, clock: ClockDep, caller: CallerDep,
) -> Response:
    """The PSU revokes a consent at the bank (its status becomes Revoked)."""
    psu = service.login_psu(session, body.psu_id, body.otp)
    consent = session.get(Consent, ConsentId)
    if consent is None or consent.deleted or consent.psu_id != psu.id \
            or not acts_as(caller, client_holder(session, consent.client_id)):
        raise OBIEError(404, "UK.OBIE.Resource.NotFound", f"PSU {psu.id} has no consent {ConsentId}.", "ConsentId")
    service.revoke_consent(session, consent, clock.now())
    return Response(status_code=204)
