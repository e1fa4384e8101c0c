"""Sandbox Bank's OAuth 2.0 authorization server, on Authlib.

Two grants: `client_credentials` (a TPP's own token, to create and read consents) and
`authorization_code` (the PSU's token, bound to one consent) with PKCE S256 required on every
authorisation request, codes that work once and for ten minutes, and redirect URIs matched
exactly (RFC 9700 §2.1, §4.1.3). Authlib runs the protocol; this module tells it where the bank
keeps clients, codes and tokens, and adds the sandbox's one rule: through the gateway a client is
usable only by the participant it belongs to.

Authlib is framework-neutral: `BankAuthorizationServer` is built per request over that request's
session, clock reading and caller (its look-ups, `query_client` among them, have no other way to
reach them), and answers with plain `OAuthAnswer`s the endpoints turn into responses.
"""

from __future__ import annotations

import hmac
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Payload,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, ClientCredentialsGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from fastapi import Depends, Request
from sqlalchemy import update
from sqlmodel import Session

from services.common.app import ClockDep
from services.common.caller import Caller, CallerDep
from services.common.db import SessionDep
from services.openbanking.auth import (
    ALL_SCOPES,
    CLIENT_TOKEN_TTL,
    CODE_TTL,
    PSU_TOKEN_TTL,
    SCOPE_OF_KIND,
    acts_as,
    digest,
    new_secret,
)
from services.openbanking.models import AccessToken, AuthorizationCode, Consent, Psu, TppClient
from services.openbanking.permissions import is_expired

GRANT_TYPES = ("client_credentials", "authorization_code")
AUTH_METHODS = ("client_secret_basic", "client_secret_post")

# The sandbox speaks plain HTTP, on loopback and behind the gateway; Authlib's documented switch
# lets it run there (it otherwise refuses any request URL that is not https).
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")


@dataclass
class OAuthAnswer:
    """What Authlib answered: a status, a JSON body (or none, for a redirect) and headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def redirect_params(self) -> dict[str, str]:
        """The query of a redirect answer's `Location` (the code and state, or the error)."""
        query = urlsplit(self.headers.get("Location", "")).query
        return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


class BankClient(ClientMixin):
    """A registered TPP, as Authlib asks about it: confidential (a secret), one redirect URI."""

    def __init__(self, row: TppClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_allowed_scope(self, scope: str | None) -> str:
        asked = (scope or "").split() or list(ALL_SCOPES)
        return " ".join(s for s in dict.fromkeys(asked) if s in ALL_SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.row.redirect_uri  # exact: no prefix, no normalisation

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(self.row.secret_hash, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES


@dataclass
class IssuedCode(AuthorizationCodeMixin):
    """An unused authorisation code, with what the token request must match."""

    row: AuthorizationCode
    consent: Consent

    @property
    def code_challenge(self) -> str:
        return self.row.code_challenge

    @property
    def code_challenge_method(self) -> str:
        return self.row.code_challenge_method

    def get_redirect_uri(self) -> str | None:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return SCOPE_OF_KIND[self.consent.kind]


class FormPayload(OAuth2Payload):
    """Request parameters: the last value of each, and every value (Authlib refuses repeats)."""

    def __init__(self, params: list[tuple[str, str]]) -> None:
        self._data = dict(params)
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in params:
            self._datalist[name].append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class BankRequest(OAuth2Request):
    """A token or authorisation request, its parameters already read by the endpoint."""

    def __init__(self, method: str, uri: str, headers: Any, params: list[tuple[str, str]]) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = FormPayload(params)

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return {}


class RequiredS256(CodeChallenge):
    """PKCE on every authorisation request, S256 only (RFC 9700 §2.1.1): a code is then worth
    nothing without the verifier that only the TPP that asked for it holds."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE with S256 is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Send code_challenge_method=S256 (plain is not accepted).")
        super().validate_code_challenge(grant, redirect_uri)


class ConsentCodeGrant(AuthorizationCodeGrant):
    """The authorization-code grant over the bank's consents: the PSU's decision on one consent
    becomes a code, and the code one token bound to that consent."""

    server: BankAuthorizationServer

    def generate_authorization_code(self) -> str:
        return new_secret("sbx_code")

    def save_authorization_code(self, code: str, request: BankRequest) -> None:
        data = request.payload.data
        self.server.session.add(AuthorizationCode(
            code_hash=digest(code), consent_id=data["consent_id"], client_id=request.client.get_client_id(),
            redirect_uri=request.payload.redirect_uri, code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"], expires_at=self.server.now + CODE_TTL))

    def query_authorization_code(self, code: str, client: BankClient) -> IssuedCode | None:
        session = self.server.session
        row = session.get(AuthorizationCode, digest(code))
        if row is None or row.used or row.client_id != client.get_client_id() or is_expired(row.expires_at,
                                                                                           self.server.now):
            return None
        consent = session.get(Consent, row.consent_id)
        return IssuedCode(row, consent) if consent is not None else None

    def delete_authorization_code(self, authorization_code: IssuedCode) -> None:
        # Marked used by a compare-and-set in the token's own transaction: of two requests racing
        # with one code, only one can commit a token.
        spent = self.server.session.execute(
            update(AuthorizationCode).where(AuthorizationCode.code_hash == authorization_code.row.code_hash,
                                            AuthorizationCode.used.is_(False)).values(used=True))
        if spent.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidGrantError("The code was used already.")

    def authenticate_user(self, authorization_code: IssuedCode) -> Consent:
        return authorization_code.consent  # the PSU's grant is the consent the token is bound to


class TppCredentialsGrant(ClientCredentialsGrant):
    """A TPP's own token; the secret may come as HTTP Basic or in the form, as before."""

    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)


class BankAuthorizationServer(AuthorizationServer):
    """One request's authorisation server: its session, its clock reading, its caller."""

    def __init__(self, session: Session, now: datetime, caller: Caller) -> None:
        super().__init__(scopes_supported=list(ALL_SCOPES))
        self.session = session
        self.now = now
        self.caller = caller
        self.register_grant(TppCredentialsGrant)
        self.register_grant(ConsentCodeGrant, [RequiredS256(required=True)])
        self.register_token_generator("default", self._bearer_token)

    # --- what Authlib needs to know -------------------------------------------------------------

    def query_client(self, client_id: str) -> BankClient | None:
        row = self.session.get(TppClient, client_id) if client_id else None
        return BankClient(row) if row is not None else None

    def authenticate_client(self, request: BankRequest, methods: list[str], endpoint: str = "token") -> BankClient:
        client: BankClient = super().authenticate_client(request, methods, endpoint)
        if not acts_as(self.caller, client.row.participant_id):
            # The secret is not enough: through the gateway the client is its participant's alone.
            raise InvalidClientError(status_code=401,
                                     description="This client belongs to another sandbox participant.")
        return client

    def _bearer_token(self, grant_type: str, client: BankClient, user: Consent | None = None,
                      scope: str | None = None, expires_in: int | None = None,
                      include_refresh_token: bool = False) -> dict[str, Any]:
        ttl = PSU_TOKEN_TTL if user is not None else CLIENT_TOKEN_TTL
        token: dict[str, Any] = {"access_token": new_secret("sbx_at"), "token_type": "Bearer",
                                 "expires_in": int(ttl.total_seconds()), "scope": client.get_allowed_scope(scope)}
        if user is not None:
            token["consent_id"] = user.id
        return token

    def save_token(self, token: dict[str, Any], request: BankRequest) -> None:
        self.session.add(AccessToken(
            token_hash=digest(token["access_token"]), client_id=request.client.get_client_id(),
            grant_type=request.payload.grant_type, scopes=token["scope"].split(),
            consent_id=token.get("consent_id"), participant=self.caller.participant_id,
            expires_at=self.now + timedelta(seconds=token["expires_in"])))

    def create_oauth2_request(self, request: BankRequest) -> BankRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuthAnswer:
        return OAuthAnswer(status, body if isinstance(body, dict) else {}, dict(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass  # no listeners

    # --- the bank's two uses --------------------------------------------------------------------

    def token(self, request: BankRequest) -> OAuthAnswer:
        """The token endpoint: a token, or OAuth's error (RFC 6749 §5.2)."""
        return self.create_token_response(request)

    def authorisation(self, request: BankRequest) -> ConsentCodeGrant:
        """Validate the TPP's authorisation request for this consent (client, redirect URI, PKCE)
        before the PSU decides; raises Authlib's OAuth2Error."""
        return self.get_consent_grant(request)  # type: ignore[return-value]

    def decision(self, grant: ConsentCodeGrant, request: BankRequest, psu: Psu | None) -> OAuthAnswer:
        """The redirect back to the TPP: a fresh code if the PSU authorised (None: rejected, so
        access_denied)."""
        return self.create_authorization_response(request, grant_user=psu, grant=grant)


def authorization_server(session: SessionDep, clock: ClockDep, caller: CallerDep) -> BankAuthorizationServer:
    return BankAuthorizationServer(session, clock.now(), caller)


AuthServerDep = Annotated[BankAuthorizationServer, Depends(authorization_server)]


def bank_request(request: Request, params: list[tuple[str, str]]) -> BankRequest:
    return BankRequest(request.method, str(request.url), request.headers, params)


__all__ = ["AuthServerDep", "BankAuthorizationServer", "BankRequest", "OAuth2Error", "OAuthAnswer", "bank_request"]
