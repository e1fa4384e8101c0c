"""PISP, payment initiation: domestic payment consents, then the payment itself, a ledger
transfer through the gateway."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from services.common.app import ClockDep
from services.common.db import SessionDep
from services.common.fields import IdPath
from services.openbanking import presenters, service
from services.openbanking.dependencies import (
    LedgerDep,
    PisClient,
    PisConsent,
    PisConsentAnyStatus,
    RequiredIdem,
    fapi_headers,
)
from services.openbanking.errors import OBIEError
from services.openbanking.models import Consent
from services.openbanking.routers.openapi import responses, security
from services.openbanking.schemas import (
    OBWriteDomestic2,
    OBWriteDomesticConsent4,
    OBWriteDomesticConsentResponse5,
    OBWriteDomesticResponse5,
    OBWriteFundsConfirmationResponse1,
)

router = APIRouter(prefix="/v3.1/pisp", dependencies=[Depends(fapi_headers)])
PdcId = Annotated[str, IdPath("pdc", "ConsentId")]
PaymentId = Annotated[str, IdPath("dp", "DomesticPaymentId")]

PDC_LINKS = {"GetConsent": {"operationId": "get_domestic_payment_consent",
                            "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}}}
DP_LINKS = {"GetPayment": {"operationId": "get_domestic_payment",
                           "parameters": {"DomesticPaymentId": "$response.body#/Data/DomesticPaymentId"}}}


@router.post(
    "/domestic-payment-consents",
    status_code=201,
    tags=["domestic payments"],
    operation_id="create_domestic_payment_consent",
    response_model=OBWriteDomesticConsentResponse5,
    responses=responses(400, 401, 403, 409, created=OBWriteDomesticConsentResponse5, links=PDC_LINKS),
    openapi_extra=security("tpp", "payments"),
)
def create_domestic_payment_consent(body: OBWriteDomesticConsent4, request: Request, session: SessionDep,
                                    clock: ClockDep, token: PisClient, idem: RequiredIdem) -> Response:
    """Create a domestic payment consent; the PSU then authorises it at the bank."""
    return idem.run(session, lambda: presenters.payment_consent(
        request, service.create_payment_consent(session, token.client_id, body, clock.now())))


@router.get(
    "/domestic-payment-consents/{ConsentId}",
    tags=["domestic payments"],
    operation_id="get_domestic_payment_consent",
    response_model=OBWriteDomesticConsentResponse5,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 404),
    openapi_extra=security("tpp", "payments"),
)
def get_domestic_payment_consent(ConsentId: PdcId, request: Request, session: SessionDep,
                                 token: PisClient) -> dict[str, Any]:
    """A domestic payment consent and its status."""
    return presenters.payment_consent(
        request, service.consent_of_client(session, ConsentId, "domestic-payment", token.client_id))


@router.get(
    "/domestic-payment-consents/{ConsentId}/funds-confirmation",
    tags=["domestic payments"],
    operation_id="get_domestic_payment_consent_funds_confirmation",
    response_model=OBWriteFundsConfirmationResponse1,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 404, 503),
    openapi_extra=security("psu", "payments"),
)
def get_domestic_payment_consent_funds_confirmation(
    ConsentId: PdcId, request: Request, ledger: LedgerDep, clock: ClockDep, grant: PisConsent,
) -> dict[str, Any]:
    """Could the debtor account pay the consent's amount now?"""
    _token, consent = grant
    if consent.id != ConsentId:
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                        f"The access token is bound to consent {consent.id}.", "ConsentId")
    amount = consent.data["Initiation"]["InstructedAmount"]
    available = service.funds_available(ledger, consent.account_ids[0], amount["Amount"], amount["Currency"])
    return presenters.payment_consent_funds(request, available, clock.now())


@router.post(
    "/domestic-payments",
    status_code=201,
    tags=["domestic payments"],
    operation_id="create_domestic_payment",
    response_model=OBWriteDomesticResponse5,
    responses=responses(400, 401, 403, 409, created=OBWriteDomesticResponse5, links=DP_LINKS),
    openapi_extra=security("psu", "payments"),
)
def create_domestic_payment(body: OBWriteDomestic2, request: Request, session: SessionDep, clock: ClockDep,
                            ledger: LedgerDep, grant: PisConsentAnyStatus, idem: RequiredIdem) -> Response:
    """Execute the authorised payment: a ledger transfer through the gateway; the consent is Consumed."""
    _token, consent = grant

    def work() -> dict[str, Any]:
        payment = service.create_domestic_payment(session, ledger, consent, body, clock.now())
        return presenters.domestic_payment(request, payment, consent)

    return idem.run(session, work)


@router.get(
    "/domestic-payments/{DomesticPaymentId}",
    tags=["domestic payments"],
    operation_id="get_domestic_payment",
    response_model=OBWriteDomesticResponse5,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 404),
    openapi_extra=security("tpp", "payments"),
)
def get_domestic_payment(DomesticPaymentId: PaymentId, request: Request, session: SessionDep,
                         clock: ClockDep, ledger: LedgerDep, token: PisClient) -> dict[str, Any]:
    """A domestic payment and its status (a Pending one is retried, safely, on each read)."""
    payment = service.payment_of_client(session, DomesticPaymentId, token.client_id)
    consent = session.get(Consent, payment.consent_id)
    assert consent is not None
    if payment.status == "Pending":
        service.settle(session, ledger, payment, consent, clock.now())
    return presenters.domestic_payment(request, payment, consent)
