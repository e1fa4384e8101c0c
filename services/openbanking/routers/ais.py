"""AISP, account information: account-access consents, then the accounts, balances and
transactions the PSU shared."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from services.common.app import ClockDep
from services.common.db import SessionDep
from services.common.fields import IdPath
from services.openbanking import presenters, service
from services.openbanking.dependencies import (
    AisClient,
    AisConsent,
    LedgerDep,
    OptionalIdem,
    fapi_headers,
)
from services.openbanking.routers.openapi import responses, security
from services.openbanking.schemas import (
    OBReadAccount6,
    OBReadBalance1,
    OBReadConsent1,
    OBReadConsentResponse1,
    OBReadTransaction6,
)

router = APIRouter(prefix="/v3.1/aisp", dependencies=[Depends(fapi_headers)])
AacId = Annotated[str, IdPath("aac", "ConsentId")]
AccountId = Annotated[str, IdPath("acc", "AccountId (the ledger account id)")]

AAC_LINKS = {
    "GetConsent": {"operationId": "get_account_access_consent",
                   "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}},
    "DeleteConsent": {"operationId": "delete_account_access_consent",
                      "parameters": {"ConsentId": "$response.body#/Data/ConsentId"}},
}


@router.post(
    "/account-access-consents",
    status_code=201,
    tags=["account access"],
    operation_id="create_account_access_consent",
    response_model=OBReadConsentResponse1,
    responses=responses(400, 401, 403, 409, created=OBReadConsentResponse1, links=AAC_LINKS),
    openapi_extra=security("tpp", "accounts"),
)
def create_account_access_consent(body: OBReadConsent1, request: Request, session: SessionDep, clock: ClockDep,
                                  token: AisClient, idem: OptionalIdem) -> Response:
    """Create an account-access consent; the PSU then authorises it at the bank."""
    return idem.run(session, lambda: presenters.account_access_consent(
        request, service.create_account_access_consent(session, token.client_id, body, clock.now())))


@router.get(
    "/account-access-consents/{ConsentId}",
    tags=["account access"],
    operation_id="get_account_access_consent",
    response_model=OBReadConsentResponse1,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 404),
    openapi_extra=security("tpp", "accounts"),
)
def get_account_access_consent(ConsentId: AacId, request: Request, session: SessionDep,
                               token: AisClient) -> dict[str, Any]:
    """An account-access consent and its status."""
    return presenters.account_access_consent(
        request, service.consent_of_client(session, ConsentId, "account-access", token.client_id))


@router.delete(
    "/account-access-consents/{ConsentId}",
    status_code=204,
    tags=["account access"],
    operation_id="delete_account_access_consent",
    responses=responses(400, 401, 403, 404),
    openapi_extra=security("tpp", "accounts"),
)
def delete_account_access_consent(ConsentId: AacId, session: SessionDep, clock: ClockDep,
                                  token: AisClient) -> Response:
    """Delete the consent: its tokens stop working at once."""
    consent = service.consent_of_client(session, ConsentId, "account-access", token.client_id)
    service.delete_consent(session, consent, clock.now())
    return Response(status_code=204)


@router.get(
    "/accounts",
    tags=["accounts"],
    operation_id="get_accounts",
    response_model=OBReadAccount6,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 503),
    openapi_extra=security("psu", "accounts"),
)
def get_accounts(request: Request, session: SessionDep, ledger: LedgerDep, grant: AisConsent) -> dict[str, Any]:
    """The accounts the PSU shared (Detail adds account numbers and the servicer)."""
    _token, consent = grant
    service.ensure_demo_history(session, ledger)
    accounts = [service.account_view(session, ledger, consent, a) for a in consent.account_ids]
    return presenters.read_envelope(request, {"Account": accounts})


@router.get(
    "/accounts/{AccountId}",
    tags=["accounts"],
    operation_id="get_account",
    response_model=OBReadAccount6,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 404, 503),
    openapi_extra=security("psu", "accounts"),
)
def get_account(AccountId: AccountId, request: Request, session: SessionDep, ledger: LedgerDep,
                grant: AisConsent) -> dict[str, Any]:
    """One shared account."""
    _token, consent = grant
    service.ensure_account_in_consent(consent, AccountId)
    return presenters.read_envelope(request, {"Account": [service.account_view(session, ledger, consent, AccountId)]})


@router.get(
    "/accounts/{AccountId}/balances",
    tags=["balances"],
    operation_id="get_account_balances",
    response_model=OBReadBalance1,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 404, 503),
    openapi_extra=security("psu", "accounts"),
)
def get_account_balances(AccountId: AccountId, request: Request, session: SessionDep, ledger: LedgerDep,
                         clock: ClockDep, grant: AisConsent) -> dict[str, Any]:
    """The account's balances (needs ReadBalances)."""
    _token, consent = grant
    service.require_cluster(consent, "balances")
    service.ensure_account_in_consent(consent, AccountId)
    service.ensure_demo_history(session, ledger)
    return presenters.read_envelope(request, {"Balance": service.balance_view(ledger, AccountId, clock.now())})


def _as_utc_wall_time(value: datetime | None) -> datetime | None:
    # OBIE: "If the Date Time contains a timezone, the ASPSP must ignore the timezone component."
    return value.replace(tzinfo=UTC) if value is not None else None


@router.get(
    "/accounts/{AccountId}/transactions",
    tags=["transactions"],
    operation_id="get_account_transactions",
    response_model=OBReadTransaction6,
    response_model_exclude_none=True,
    responses=responses(400, 401, 403, 404, 503),
    openapi_extra=security("psu", "accounts"),
)
def get_account_transactions(
    AccountId: AccountId,
    request: Request, session: SessionDep, ledger: LedgerDep, grant: AisConsent,
    fromBookingDateTime: Annotated[datetime | None, Query(
        description="Transactions booked at or after this time (UTC; a zone is ignored).")] = None,
    toBookingDateTime: Annotated[datetime | None, Query(
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
    return presenters.transactions_page(request, transactions, page)
