"""Presenters: the bank's rows as OBIE shows them, in the `Data`/`Links`/`Meta` envelope.

No rules and no queries: each function turns what the service read or wrote into a response
body, with `Links` built from the URL TPPs reach the bank at (`public_base`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import JSONResponse

from services.common.forwarded import forwarded_origin
from services.openbanking.models import Consent, DomesticPayment, FundsConfirmation
from services.openbanking.schemas import (
    OAuthError,
    OBFundsConfirmationConsentResponse1,
    OBFundsConfirmationConsentResponseData,
    OBFundsConfirmationResponse1,
    OBReadConsentResponse1,
    OBReadConsentResponseData,
    OBWriteDomesticConsentResponse5,
    OBWriteDomesticConsentResponseData,
    OBWriteDomesticResponse5,
)

PAGE_SIZE = 25
_FORWARDED_PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)+$")
# What may stay as it is in a URL path (RFC 3986 pchar and "/", and "%" of escapes already made).
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


# --- URLs -------------------------------------------------------------------------------------

def public_base(request: Request) -> str:
    """The URL TPPs reach the bank at: behind the gateway, its host and `/open-banking` prefix."""
    configured = request.app.state.settings.public_url
    if configured:
        return configured.rstrip("/")
    prefix = request.headers.get("x-forwarded-prefix", "")
    base = forwarded_origin(request) or str(request.base_url).rstrip("/")
    if prefix and _FORWARDED_PREFIX.match(prefix):
        base += prefix
    return base


def own_path(request: Request) -> str:
    """The request's path, percent-encoded: a path with brackets, spaces or control characters
    (a fuzzer sends them) still makes a valid URL in `Links`."""
    return quote(request.url.path, safe=_PATH_SAFE)


def self_link(request: Request, path: str | None = None) -> dict[str, str]:
    return {"Self": public_base(request) + (path or own_path(request))}


def page_url(request: Request, page: int) -> str:
    """The request's URL at another page (page 1 has no `page` parameter)."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    if page > 1:
        query.append(("page", str(page)))
    return public_base(request) + own_path(request) + (f"?{urlencode(query)}" if query else "")


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


# --- authorisation server ---------------------------------------------------------------------

def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    """RFC 6749 §5.2's error answer, never cached."""
    return JSONResponse(OAuthError(error=error, error_description=description).model_dump(exclude_none=True),  # type: ignore[arg-type]
                        status_code=status, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


# --- AISP -------------------------------------------------------------------------------------

def consent_data(consent: Consent) -> dict[str, Any]:
    """A consent's `Data` as its GET shows it, whatever its kind (an event carries it too)."""
    if consent.kind == "account-access":
        return _dump(OBReadConsentResponseData.model_validate(_account_access_data(consent)))
    if consent.kind == "funds-confirmation":
        return _dump(OBFundsConfirmationConsentResponseData.model_validate(_funds_consent_data(consent)))
    return _dump(OBWriteDomesticConsentResponseData.model_validate(_payment_consent_data(consent)))


def _account_access_data(consent: Consent) -> dict[str, Any]:
    return {"ConsentId": consent.id, "CreationDateTime": consent.created_at, "Status": consent.status,
            "StatusUpdateDateTime": consent.status_updated_at, "Permissions": consent.permissions,
            "ExpirationDateTime": consent.expires_at, "TransactionFromDateTime": consent.transactions_from,
            "TransactionToDateTime": consent.transactions_to}


def account_access_consent(request: Request, consent: Consent) -> dict[str, Any]:
    data = _account_access_data(consent)
    return _dump(OBReadConsentResponse1.model_validate({
        "Data": data, "Risk": {}, "Links": self_link(request, f"/v3.1/aisp/account-access-consents/{consent.id}"),
        "Meta": {}}))


def read_envelope(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    """A read that fits one page: accounts, an account, balances."""
    return {"Data": data, "Links": self_link(request), "Meta": {"TotalPages": 1}}


def transactions_page(request: Request, transactions: list[dict[str, Any]], page: int) -> dict[str, Any]:
    """One page of PAGE_SIZE transactions, with First/Prev/Next/Last links and the span in `Meta`."""
    pages = max(1, -(-len(transactions) // PAGE_SIZE))
    links = {"Self": page_url(request, page), "First": page_url(request, 1), "Last": page_url(request, pages)}
    if page > 1:
        links["Prev"] = page_url(request, min(page - 1, pages))
    if page < pages:
        links["Next"] = page_url(request, page + 1)
    meta: dict[str, Any] = {"TotalPages": pages}
    if transactions:
        meta["FirstAvailableDateTime"] = transactions[0]["BookingDateTime"]
        meta["LastAvailableDateTime"] = transactions[-1]["BookingDateTime"]
    shown = transactions[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    return {"Data": {"Transaction": shown}, "Links": links, "Meta": meta}


# --- PISP -------------------------------------------------------------------------------------

def _debtor(consent: Consent) -> dict[str, Any] | None:
    if consent.account_ids and "DebtorAccount" not in consent.data["Initiation"]:
        return {"SchemeName": "UK.OBIE.BBAN", "Identification": consent.account_ids[0]}
    return None


def _payment_consent_data(consent: Consent) -> dict[str, Any]:
    return {"ConsentId": consent.id, "CreationDateTime": consent.created_at, "Status": consent.status,
            "StatusUpdateDateTime": consent.status_updated_at, "Initiation": consent.data["Initiation"],
            "Debtor": _debtor(consent)}


def payment_consent(request: Request, consent: Consent) -> dict[str, Any]:
    data = _payment_consent_data(consent)
    return _dump(OBWriteDomesticConsentResponse5.model_validate({
        "Data": data, "Risk": consent.risk,
        "Links": self_link(request, f"/v3.1/pisp/domestic-payment-consents/{consent.id}"), "Meta": {}}))


def payment_consent_funds(request: Request, available: bool, now: datetime) -> dict[str, Any]:
    return {"Data": {"FundsAvailableResult": {"FundsAvailableDateTime": now, "FundsAvailable": available}},
            "Links": self_link(request), "Meta": {}}


def domestic_payment(request: Request, payment: DomesticPayment, consent: Consent) -> dict[str, Any]:
    data = {"DomesticPaymentId": payment.id, "ConsentId": payment.consent_id,
            "CreationDateTime": payment.created_at, "Status": payment.status,
            "StatusUpdateDateTime": payment.status_updated_at, "Initiation": consent.data["Initiation"],
            "Debtor": _debtor(consent)}
    return _dump(OBWriteDomesticResponse5.model_validate({
        "Data": data, "Links": self_link(request, f"/v3.1/pisp/domestic-payments/{payment.id}"), "Meta": {}}))


# --- CBPII ------------------------------------------------------------------------------------

def _funds_consent_data(consent: Consent) -> dict[str, Any]:
    return {"ConsentId": consent.id, "CreationDateTime": consent.created_at, "Status": consent.status,
            "StatusUpdateDateTime": consent.status_updated_at, "ExpirationDateTime": consent.expires_at,
            "DebtorAccount": consent.data["DebtorAccount"]}


def funds_confirmation_consent(request: Request, consent: Consent) -> dict[str, Any]:
    data = _funds_consent_data(consent)
    return _dump(OBFundsConfirmationConsentResponse1.model_validate({
        "Data": data, "Links": self_link(request, f"/v3.1/cbpii/funds-confirmation-consents/{consent.id}"),
        "Meta": {}}))


def funds_confirmation(request: Request, row: FundsConfirmation) -> dict[str, Any]:
    return _dump(OBFundsConfirmationResponse1.model_validate({
        "Data": {"FundsConfirmationId": row.id, "ConsentId": row.consent_id, "CreationDateTime": row.created_at,
                 "FundsAvailable": row.funds_available, "Reference": row.reference,
                 "InstructedAmount": {"Amount": row.amount, "Currency": row.currency}},
        "Links": self_link(request), "Meta": {}}))
