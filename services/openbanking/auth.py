"""The bank's bearer tokens as its APIs check them: the token of the call, the caller it must
belong to, and what each OBIE operation needs of it. (Issuing tokens is `oauth.py`'s.)"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from services.common.app import ClockDep
from services.common.caller import Caller, caller_of
from services.common.clock import wire_time
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
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sandbox-bank"'}


def digest(secret: str) -> str:
    """Secrets, codes and tokens are stored as SHA-256 digests, never in the clear."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


def acts_as(caller: Caller, holder: str | None) -> bool:
    """Whether the caller may act as a client (or use a token) that participant `holder` holds.

    The very participant only, not one it acts for: the credit service uses its own client while
    it serves a lender. Direct callers (the bank's own port) and the gateway's look-ups may, and
    a client bound to nobody (registered on the bank's own port) is anyone's who has its secret."""
    return not caller.restricted or holder is None or holder == caller.participant_id


def client_holder(session: Session, client_id: str) -> str | None:
    client = session.get(TppClient, client_id)
    return client.participant_id if client is not None else None


def current_token(request: Request, session: SessionDep, clock: ClockDep) -> AccessToken:
    """The request's bearer token, still valid, and used by the participant its client belongs to."""
    header = request.headers.get("authorization")
    if not header:
        raise OBIEError(401, "UK.OBIE.Header.Missing", "Send `Authorization: Bearer <access token>`.",
                        "Authorization", _CHALLENGE)
    scheme, _, value = header.partition(" ")
    token = session.get(AccessToken, digest(value.strip())) if scheme.lower() == "bearer" and value else None
    if token is None or is_expired(token.expires_at, clock.now()):
        raise OBIEError(401, "UK.OBIE.Header.Invalid", "The access token is unknown or has expired.",
                        "Authorization", {"WWW-Authenticate": 'Bearer realm="sandbox-bank", error="invalid_token"'})
    # Held by whoever obtained it, and within that by the client's participant (a token obtained
    # on the bank's own port for a bound client is still that participant's alone).
    if not acts_as(caller_of(request), token.participant or client_holder(session, token.client_id)):
        raise OBIEError(403, "UK.OBIE.Header.Invalid",
                        "This access token belongs to another sandbox participant's client.", "Authorization")
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
    # Expiry first: the same answer before and after the bank's due work marks the consent expired.
    if is_expired(consent.expires_at, now):
        raise OBIEError(403, "UK.OBIE.Resource.InvalidConsentStatus",
                        f"Consent {consent.id} expired at {wire_time(consent.expires_at)}.")  # type: ignore[union-attr]
    if consent.status != "Authorised":
        raise OBIEError(403, "UK.OBIE.Resource.InvalidConsentStatus",
                        f"Consent {consent.id} is {consent.status}, not Authorised.")
