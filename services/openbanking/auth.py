"""The bank's authorisation server: client authentication, bearer tokens, and the checks every
OBIE operation makes on the token it is called with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from services.common.app import ClockDep
from services.common.db import SessionDep
from services.openbanking.errors import OBIEError
from services.openbanking.models import AccessToken, Consent, TppClient
from services.openbanking.permissions import is_expired

CLIENT_TOKEN_TTL = timedelta(hours=1)
PSU_TOKEN_TTL = timedelta(days=90)  # OBIE: the PSU reauthenticates every 90 days; consents may end sooner
CODE_TTL = timedelta(minutes=10)
ALL_SCOPES = ("accounts", "payments", "fundsconfirmations")
SCOPE_OF_KIND = {"account-access": "accounts", "domestic-payment": "payments",
                 "funds-confirmation": "fundsconfirmations"}
PARTICIPANT_HEADER = "x-sandbox-participant"  # set by the gateway: who holds the API key
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sandbox-bank"'}


def digest(secret: str) -> str:
    """Secrets, codes and tokens are stored as SHA-256 digests, never in the clear."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


def authenticate_client(session: Session, client_id: str | None, client_secret: str | None) -> TppClient | None:
    if not client_id or not client_secret:
        return None
    client = session.get(TppClient, client_id)
    if client is None or not hmac.compare_digest(client.secret_hash, digest(client_secret)):
        return None
    return client


def basic_credentials(request: Request) -> tuple[str | None, str | None]:
    """client_secret_basic: `Authorization: Basic base64(id:secret)`."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except ValueError:
        return None, None
    client_id, _, secret = decoded.partition(":")
    return client_id or None, secret or None


def current_token(request: Request, session: SessionDep, clock: ClockDep) -> AccessToken:
    """The request's bearer token, still valid and held by the TPP it was issued to."""
    header = request.headers.get("authorization")
    if not header:
        raise OBIEError(401, "UK.OBIE.Header.Missing", "Send `Authorization: Bearer <access token>`.",
                        "Authorization", _CHALLENGE)
    scheme, _, value = header.partition(" ")
    token = session.get(AccessToken, digest(value.strip())) if scheme.lower() == "bearer" and value else None
    if token is None or is_expired(token.expires_at, clock.now()):
        raise OBIEError(401, "UK.OBIE.Header.Invalid", "The access token is unknown or has expired.",
                        "Authorization", {"WWW-Authenticate": 'Bearer realm="sandbox-bank", error="invalid_token"'})
    participant = request.headers.get(PARTICIPANT_HEADER)
    if token.participant and participant and participant != token.participant:
        raise OBIEError(403, "UK.OBIE.Header.Invalid",
                        "This access token was issued to another TPP; it is bound to the TPP that obtained it.",
                        "Authorization")
    return token


TokenDep = Annotated[AccessToken, Depends(current_token)]


def require_client_token(scope: str) -> Callable[..., AccessToken]:
    """Consent set-up calls: a client-credentials token with the API's scope."""

    def dependency(token: TokenDep) -> AccessToken:
        if token.grant_type != "client_credentials" or scope not in token.scopes:
            raise OBIEError(403, "UK.OBIE.Header.Invalid",
                            f"This call needs a client-credentials token with scope `{scope}`.", "Authorization")
        return token

    return dependency


def require_consent_token(kind: str, usable_only: bool = True) -> Callable[..., tuple[AccessToken, Consent]]:
    """Calls made for a PSU: an authorization-code token bound to a consent of this kind, and
    (unless the handler checks it itself) that consent still authorised and unexpired."""
    scope = SCOPE_OF_KIND[kind]

    def dependency(token: TokenDep, session: SessionDep, clock: ClockDep) -> tuple[AccessToken, Consent]:
        consent = session.get(Consent, token.consent_id) if token.consent_id else None
        if token.grant_type != "authorization_code" or scope not in token.scopes or consent is None \
                or consent.kind != kind:
            raise OBIEError(403, "UK.OBIE.Header.Invalid",
                            f"This call needs the access token of an authorised {kind} consent "
                            "(authorization_code grant).", "Authorization")
        if usable_only:
            ensure_usable(consent, clock.now())
        return token, consent

    return dependency


def ensure_usable(consent: Consent, now) -> None:  # type: ignore[no-untyped-def]
    """403 unless the consent is authorised, not deleted and not expired (OBIE's rule)."""
    if consent.deleted:
        raise OBIEError(403, "UK.OBIE.Resource.InvalidConsentStatus",
                        f"Consent {consent.id} was deleted by the TPP.")
    if consent.status != "Authorised":
        raise OBIEError(403, "UK.OBIE.Resource.InvalidConsentStatus",
                        f"Consent {consent.id} is {consent.status}, not Authorised.")
    if is_expired(consent.expires_at, now):
        raise OBIEError(403, "UK.OBIE.Resource.InvalidConsentStatus",
                        f"Consent {consent.id} expired at {consent.expires_at.isoformat()}.")  # type: ignore[union-attr]
