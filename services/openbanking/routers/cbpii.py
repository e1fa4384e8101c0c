"""CBPII, confirmation of funds: funds-confirmation consents, then yes-or-no answers on whether
the PSU could pay an amount now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from services.common.app import ClockDep
from services.common.db import SessionDep
from services.common.fields import IdPath
from services.openbanking import presenters, service
from services.openbanking.dependencies import (
    CofClient,
    CofConsent,
    LedgerDep,
    OptionalIdem,
    fapi_headers,
)
from services.openbanking.routers.openapi import responses, security
from services.openbanking.schemas import (
    OBFundsConfirmation1,
    OBFundsConfirmationConsent1,
    OBFundsConfirmationConsentResponse1,
    OBFundsConfirmationResponse1,
)

router = APIRouter(prefix="/v3.1/cbpii", dependencies=[Depends(fapi_headers)])
FccId = Annotated[str, IdPath("fcc", "ConsentId")]

FCC_LINKS = {
    "GetConsent": {"operationId": "get_funds_confirmation_consent",
                   "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}},
    "DeleteConsent": {"operationId": "delete_funds_confirmation_consent",
                      "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}},
}


@router.post(
    "/funds-confirmation-consents",
    status_code=201,
    tags=["funds confirmation"],
    operation_id="create_funds_confirmation_consent",
    response_model=OBFundsConfirmationConsentResponse1,
    responses=responses(400, 401, 403, 409, created=OBFundsConfirmationConsentResponse1, links=FCC_LINKS),
    openapi_extra=security("tpp", "fundsconfirmations"),
)
def create_funds_confirmation_consent(body: OBFundsConfirmationConsent1, request: Request, session: SessionDep,
                                      clock: ClockDep, token: CofClient, idem: OptionalIdem) -> Response:
    """Create a funds-confirmation consent for one account; the PSU then authorises it."""
    return idem.run(session, lambda: presenters.funds_confirmation_consent(
        request, service.create_funds_consent(session, token.client_id, body, clock.now())))


@router.get(
    "/funds-confirmation-consents/{ConsentId}",
    tags=["funds confirmation"],
    operation_id="get_funds_confirmation_consent",
    response_model=OBFundsConfirmationConsentResponse1,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 404),
    openapi_extra=security("tpp", "fundsconfirmations"),
)
def get_funds_confirmation_consent(ConsentId: FccId, request: Request, session: SessionDep,
                                   token: CofClient) -> dict[str, Any]:
    """A funds-confirmation consent and its status."""
    return presenters.funds_confirmation_consent(
        request, service.consent_of_client(session, ConsentId, "funds-confirmation", token.client_id))


@router.delete(
    "/funds-confirmation-consents/{ConsentId}",
    status_code=204,
    tags=["funds confirmation"],
    operation_id="delete_funds_confirmation_consent",
    responses=responses(400, 401, 403, 404),
    openapi_extra=security("tpp", "fundsconfirmations"),
)
def delete_funds_confirmation_consent(ConsentId: FccId, session: SessionDep, clock: ClockDep,
                                      token: CofClient) -> Response:
    """Delete the consent: its tokens stop working at once."""
    consent = service.consent_of_client(session, ConsentId, "funds-confirmation", token.client_id)
    service.delete_consent(session, consent, clock.now())
    return Response(status_code=204)


@router.post(
    "/funds-confirmations",
    status_code=201,
    tags=["funds confirmation"],
    operation_id="create_funds_confirmation",
    response_model=OBFundsConfirmationResponse1,
    responses=responses(400, 401, 403, 409, 503, created=OBFundsConfirmationResponse1),
    openapi_extra=security("psu", "fundsconfirmations"),
)
def create_funds_confirmation(body: OBFundsConfirmation1, request: Request, session: SessionDep, clock: ClockDep,
                              ledger: LedgerDep, grant: CofConsent, idem: OptionalIdem) -> Response:
    """Could the PSU pay this amount now? A yes or no; no money is held."""
    _token, consent = grant

    def work() -> dict[str, Any]:
        row = service.confirm_funds(session, ledger, consent, body, clock.now())
        return presenters.funds_confirmation(request, row)

    return idem.run(session, work)
