"""Sandbox Bank's rules: consents and their life cycle, the PSU's decision, and what each
consent releases from the payments ledger. Functions work in the caller's session and never
commit: the request's unit of work commits once, in the kit (services/common/db.py), and the one
early commit, a payment's intent before its money moves, is `record_first`."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from services.common.caller import Caller
from services.common.db import record_first
from services.common.demo import (
    DEMO_ACCOUNTS,
    DEMO_PSUS,
    DEMO_TPP_CLIENTS,
    OPENBANKING_DEMO_TRANSFERS,
    OPENBANKING_TEST_OTP,
)
from services.common.ids import new_id
from services.common.money import Money, to_minor
from services.common.outbox import record_event
from services.common.payments_client import (
    PaymentRefused,
    PaymentsClient,
    PaymentsUnavailable,
)
from services.openbanking import permissions as rules
from services.openbanking.auth import (
    ALL_SCOPES,
    SCOPE_OF_KIND,
    acts_as,
    client_holder,
    digest,
    ensure_usable,
    new_secret,
)
from services.openbanking.errors import OBIEError, not_found
from services.openbanking.models import (
    BankState,
    Consent,
    DomesticPayment,
    Events,
    FundsConfirmation,
    Psu,
    PsuAccount,
    TppClient,
)
from services.openbanking.oauth import BankAuthorizationServer, BankRequest, OAuth2Error
from services.openbanking.presenters import consent_data
from services.openbanking.schemas import (
    ACCOUNT_SCHEME,
    AuthorizeRequest,
    AuthorizeResponse,
    ClientRegistered,
    ClientRegistration,
    OBFundsConfirmation1,
    OBFundsConfirmationConsent1,
    OBReadConsent1,
    OBWriteDomestic2,
    OBWriteDomesticConsent4,
)

log = logging.getLogger("sandbox.openbanking")

LIVE_CONSENT_STATUSES = ("Authorised", "AwaitingAuthorisation")  # what can still be decided, used or revoked
EXPIRING_PSU_SECONDS = 60  # the `expire` magic PSU's consents last this long after authorising
SERVICER_BIC = "SBXBCNSHXXX"  # Sandbox Bank's made-up BIC
# Which sandbox participant each demo client belongs to: through the gateway, only that one's key
# may authenticate as the client (the credit service's registration is the service's own).
DEMO_CLIENT_PARTICIPANTS = {client.client_id: client.participant_id for client in DEMO_TPP_CLIENTS}


# --- seeding ----------------------------------------------------------------------------------

def seed_bank(session: Session, now: datetime) -> None:
    """PSUs, their accounts and the demo TPP clients, once (they are the bank's identity data)."""
    if session.get(Psu, DEMO_PSUS[0].id) is None:
        for psu in DEMO_PSUS:
            session.add(Psu(id=psu.id, name=psu.name, behaviour=psu.behaviour))
            for account_id in psu.account_ids:
                demo = next(a for a in DEMO_ACCOUNTS if a.id == account_id)
                savings = "savings" in demo.role.lower()
                session.add(PsuAccount(account_id=account_id, psu_id=psu.id,
                                       nickname=("Savings" if savings else "Everyday wallet"),
                                       sub_type="Savings" if savings else "EMoney", opened_at=now))
    for client in DEMO_TPP_CLIENTS:
        row = session.get(TppClient, client.client_id)
        if row is None:
            row = TppClient(client_id=client.client_id, secret_hash=digest(client.client_secret),
                            name=client.name, redirect_uri=client.redirect_uri, created_at=now)
        row.participant_id = DEMO_CLIENT_PARTICIPANTS.get(client.client_id)  # bound even in older databases
        session.add(row)


def ensure_demo_history(session: Session, ledger: PaymentsClient) -> None:
    """Write the demo PSUs' history into the ledger once, idempotently, when it is first needed."""
    if session.get(BankState, "demo_history") is not None:
        return
    try:
        for key, source, target, amount, description in OPENBANKING_DEMO_TRANSFERS:
            try:
                ledger.transfer(from_account=source, to_account=target, amount=Money(amount=amount, currency="CNY"),
                                key=key, description=description, on_behalf_of=None)
            except PaymentRefused as refusal:  # e.g. a ledger that predates these demo accounts
                log.warning("demo transfer %s refused: %s", key, refusal)
    except PaymentsUnavailable:
        return  # try again on the next call
    session.add(BankState(key="demo_history", value="written"))


# --- TPP clients and tokens -------------------------------------------------------------------

def register_client(session: Session, body: ClientRegistration, caller: Caller, now: datetime) -> ClientRegistered:
    """A new client, bound to the participant that registered it through the gateway (direct: nobody)."""
    client_id = new_id("tpp")
    secret = new_secret("sbx_tpp_secret")
    participant = caller.participant_id if caller.restricted else None
    session.add(TppClient(client_id=client_id, secret_hash=digest(secret), name=body.client_name,
                          redirect_uri=body.redirect_uri, participant_id=participant, created_at=now))
    return ClientRegistered(client_id=client_id, client_secret=secret, client_name=body.client_name,
                            redirect_uri=body.redirect_uri, scope=" ".join(ALL_SCOPES), participant_id=participant)


# --- consents ---------------------------------------------------------------------------------

def _new_consent(kind: str, prefix: str, client_id: str, now: datetime, **fields: Any) -> Consent:
    return Consent(id=new_id(prefix), kind=kind, client_id=client_id, status="AwaitingAuthorisation",
                   created_at=now, status_updated_at=now, **fields)


def create_account_access_consent(session: Session, client_id: str, body: OBReadConsent1, now: datetime) -> Consent:
    data = body.Data
    errors = rules.permission_errors(list(data.Permissions))
    if errors:  # the schema already says so; kept for callers that skip it
        raise OBIEError(400, "UK.OBIE.Field.Invalid", " ".join(errors), "Data.Permissions")
    consent = _new_consent("account-access", "aac", client_id, now,
                           permissions=list(dict.fromkeys(data.Permissions)),
                           expires_at=data.ExpirationDateTime, transactions_from=data.TransactionFromDateTime,
                           transactions_to=data.TransactionToDateTime)
    session.add(consent)
    return consent


def create_payment_consent(session: Session, client_id: str, body: OBWriteDomesticConsent4, now: datetime) -> Consent:
    initiation = body.Data.Initiation.model_dump(exclude_none=True)
    consent = _new_consent("domestic-payment", "pdc", client_id, now, data={"Initiation": initiation},
                           risk=body.Risk.model_dump(exclude_none=True))
    session.add(consent)
    return consent


def create_funds_consent(session: Session, client_id: str, body: OBFundsConfirmationConsent1, now: datetime) -> Consent:
    consent = _new_consent("funds-confirmation", "fcc", client_id, now,
                           expires_at=body.Data.ExpirationDateTime,
                           data={"DebtorAccount": body.Data.DebtorAccount.model_dump(exclude_none=True)})
    session.add(consent)
    return consent


def consent_of_client(session: Session, consent_id: str, kind: str, client_id: str) -> Consent:
    """The TPP's own consent: another TPP's is not found (its existence is not disclosed), nor
    is a deleted one."""
    consent = session.get(Consent, consent_id)
    if consent is None or consent.kind != kind or consent.deleted or consent.client_id != client_id:
        raise not_found(f"{kind} consent", consent_id)
    return consent


def delete_consent(session: Session, consent: Consent, now: datetime) -> None:
    """The TPP deletes the consent: it leaves the API and every token bound to it stops working."""
    consent.deleted = True
    consent.status_updated_at = now
    session.add(consent)


def revoke_consent(session: Session, consent: Consent, now: datetime) -> None:
    """The PSU revokes at the bank: the consent stays visible with status Revoked."""
    if consent.kind == "domestic-payment":
        raise OBIEError(409, "UK.OBIE.Resource.InvalidConsentStatus",
                        "A payment consent cannot be revoked; it is used once or left to lapse.")
    if consent.status not in LIVE_CONSENT_STATUSES:
        raise OBIEError(409, "UK.OBIE.Resource.InvalidConsentStatus",
                        f"Consent {consent.id} is {consent.status}; only a live consent can be revoked.")
    _set_status(consent, "Revoked", now)
    session.add(consent)
    record_consent_event(session, consent, "revoked", now)


def _set_status(consent: Consent, status: str, now: datetime) -> None:
    consent.status = status
    consent.status_updated_at = now


# What OBIE's Event Notification API calls each change: a consent the PSU revoked has its own type;
# any other change of a consent resource's status is a resource update.
OBIE_EVENT_TYPES = {
    "authorised": "urn:uk:org:openbanking:events:resource-update",
    "rejected": "urn:uk:org:openbanking:events:resource-update",
    "revoked": "urn:uk:org:openbanking:events:consent-authorization-revoked",
    "expired": "urn:uk:org:openbanking:events:resource-update",
}


def record_consent_event(session: Session, consent: Consent, what: str, now: datetime) -> None:
    """`openbanking.consent.<what>` in the caller's unit of work, for the participant holding the
    consent's TPP client: the consent's Data as its GET shows it, with OBIE's event type."""
    record_event(session, Events, f"openbanking.consent.{what}", subject_id=consent.id,
                 participant_id=client_holder(session, consent.client_id), occurred_at=now,
                 data={**consent_data(consent), "obie_event_type": OBIE_EVENT_TYPES[what]})


def expire_consents(session: Session, now: datetime) -> int:
    """Live consents whose ExpirationDateTime has passed by the bank's clock are marked expired,
    each with its event; a conditional update, so a second runner at the same moment finds none
    left. Their OBIE status stays (v3.1.11 has no Expired); every use is refused by its time."""
    due = session.execute(select(Consent).where(
        Consent.expires_at.is_not(None), Consent.expires_at <= now, Consent.deleted.is_(False),
        Consent.expired_at.is_(None), Consent.status.in_(LIVE_CONSENT_STATUSES))
        .order_by(Consent.expires_at)).scalars().all()
    expired = 0
    for consent in due:
        moved = session.execute(update(Consent).where(Consent.id == consent.id, Consent.expired_at.is_(None))
                                .values(expired_at=now)).rowcount
        if moved != 1:
            continue
        session.refresh(consent)
        record_consent_event(session, consent, "expired", now)
        expired += 1
    return expired


# --- the PSU's decision -----------------------------------------------------------------------

def login_psu(session: Session, psu_id: str, otp: str) -> Psu:
    psu = session.get(Psu, psu_id)
    if psu is None or otp != OPENBANKING_TEST_OTP:
        raise OBIEError(403, "UK.OBIE.Reauthenticate",
                        f"Unknown PSU or wrong one-time code (the sandbox code is {OPENBANKING_TEST_OTP}).",
                        "otp")
    return psu


def psu_account_ids(session: Session, psu_id: str) -> list[str]:
    rows = session.execute(select(PsuAccount.account_id).where(PsuAccount.psu_id == psu_id)
                           .order_by(PsuAccount.account_id)).scalars()
    return list(rows)


def authorisation_params(body: AuthorizeRequest, consent: Consent) -> list[tuple[str, str]]:
    """The authorisation request (RFC 6749 §4.1.1 with RFC 7636) the headless step stands for."""
    params = [("response_type", "code"), ("client_id", body.client_id), ("scope", SCOPE_OF_KIND[consent.kind]),
              ("code_challenge", body.code_challenge), ("code_challenge_method", body.code_challenge_method),
              ("consent_id", consent.id)]
    params += [(name, value) for name, value in (("redirect_uri", body.redirect_uri), ("state", body.state)) if value]
    return params


def authorise(session: Session, server: BankAuthorizationServer, body: AuthorizeRequest, url: str,
              now: datetime) -> AuthorizeResponse:
    """The TPP's authorisation request is checked (its client, redirect URI, PKCE challenge), then
    the PSU logs in (fixed test code) and authorises or rejects; magic PSUs decide for themselves."""
    consent = session.get(Consent, body.consent_id)
    # Another client's consent, or one whose client belongs to another participant, is not found.
    if consent is None or consent.deleted or consent.client_id != body.client_id \
            or not acts_as(server.caller, client_holder(session, consent.client_id)):
        raise not_found("consent", body.consent_id, "consent_id")
    request = BankRequest("POST", url, {}, authorisation_params(body, consent))
    try:
        grant = server.authorisation(request)
    except OAuth2Error as error:
        raise OBIEError(400, "UK.OBIE.Field.Invalid", f"{error.error}: {error.description}") from None
    psu = login_psu(session, body.psu_id, body.otp)
    # Expiry first: the same 403 whether or not the bank's due work has marked it expired yet.
    if rules.is_expired(consent.expires_at, now):
        raise OBIEError(403, "UK.OBIE.Resource.InvalidConsentStatus",
                        f"Consent {consent.id} expired before the PSU decided.")
    if consent.status != "AwaitingAuthorisation":
        raise OBIEError(409, "UK.OBIE.Resource.InvalidConsentStatus",
                        f"Consent {consent.id} is {consent.status}; only AwaitingAuthorisation can be decided.")
    if psu.behaviour == "reject" or body.decision == "Reject":
        _set_status(consent, "Rejected", now)
        session.add(consent)
        record_consent_event(session, consent, "rejected", now)
        refused = server.decision(grant, request, None)
        return AuthorizeResponse(consent_id=consent.id, status="Rejected", state=body.state,
                                 redirect_uri=refused.headers["Location"])
    consent.psu_id = psu.id
    consent.account_ids = _chosen_accounts(session, consent, psu, body.account_ids)
    if psu.behaviour == "expire":
        short = now + timedelta(seconds=EXPIRING_PSU_SECONDS)
        consent.expires_at = min(consent.expires_at, short) if consent.expires_at else short
    _set_status(consent, "Authorised", now)
    session.add(consent)
    granted = server.decision(grant, request, psu)
    record_consent_event(session, consent, "authorised", now)
    return AuthorizeResponse(consent_id=consent.id, status="Authorised", code=granted.redirect_params["code"],
                             state=body.state, redirect_uri=granted.headers["Location"])


def _chosen_accounts(session: Session, consent: Consent, psu: Psu, asked: list[str] | None) -> list[str]:
    own = psu_account_ids(session, psu.id)
    if asked and not set(asked) <= set(own):
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                        "The PSU can only share or pay from accounts they hold.", "account_ids")
    if consent.kind == "account-access":
        chosen = list(dict.fromkeys(asked)) if asked else own
    else:
        named = consent.data.get("Initiation", consent.data).get("DebtorAccount")
        if named:
            if named["Identification"] not in own:
                raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                                "The consent's DebtorAccount is not an account of this PSU.", "DebtorAccount")
            chosen = [named["Identification"]]
        else:
            chosen = (asked or own)[:1]
    if not chosen:
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch", "This PSU holds no account at the bank.")
    return chosen


# --- AISP -------------------------------------------------------------------------------------

def _ledger_call(call, *args):  # type: ignore[no-untyped-def]
    try:
        return call(*args)
    except PaymentsUnavailable as exc:
        raise OBIEError(503, "UK.OBIE.UnexpectedError", "The bank's ledger is unavailable; retry later.") from exc


def ensure_account_in_consent(consent: Consent, account_id: str) -> None:
    if account_id not in consent.account_ids:
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                        f"Account {account_id} is not covered by consent {consent.id}.", "AccountId")


def require_cluster(consent: Consent, cluster: str) -> None:
    if not rules.consent_allows(consent.permissions, cluster):
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                        f"Consent {consent.id} does not grant access to {cluster}.")


def account_view(session: Session, ledger: PaymentsClient, consent: Consent, account_id: str) -> dict[str, Any]:
    account = _ledger_call(ledger.account, account_id)
    if account is None:
        raise not_found("account", account_id, "AccountId")
    held = session.get(PsuAccount, account_id)
    view: dict[str, Any] = {
        "AccountId": account_id,
        "Status": "Enabled",
        "StatusUpdateDateTime": account["created_at"],
        "Currency": account["currency"],
        "AccountType": "Business" if account["kind"] == "merchant" else "Personal",
        "AccountSubType": held.sub_type if held else "EMoney",
        "Nickname": held.nickname if held else None,
        "OpeningDate": account["created_at"],
    }
    if rules.releases_account_detail(consent.permissions):
        view["Account"] = [{"SchemeName": ACCOUNT_SCHEME, "Identification": account_id,
                            "Name": account["owner_name"]}]
        view["Servicer"] = {"SchemeName": "UK.OBIE.BICFI", "Identification": SERVICER_BIC}
    return view


def _amount(money: dict[str, str]) -> dict[str, str]:
    return {"Amount": money["amount"].lstrip("-"), "Currency": money["currency"]}


def _is_negative(money: dict[str, str]) -> bool:
    return money["amount"].startswith("-")


def balance_view(ledger: PaymentsClient, account_id: str, now: datetime) -> list[dict[str, Any]]:
    account = _ledger_call(ledger.account, account_id)
    if account is None:
        raise not_found("account", account_id, "AccountId")
    balance = account["balance"]
    indicator = "Debit" if _is_negative(balance) else "Credit"
    return [{"AccountId": account_id, "CreditDebitIndicator": indicator, "Type": kind, "DateTime": now,
             "Amount": _amount(balance)} for kind in ("InterimAvailable", "InterimBooked")]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def transactions_view(ledger: PaymentsClient, consent: Consent, account_id: str,
                      asked_from: datetime | None, asked_to: datetime | None) -> list[dict[str, Any]]:
    """Every transaction the consent releases: only its directions, only inside its window, and
    detail fields only with ReadTransactionsDetail."""
    lower, upper = rules.booking_window(consent.transactions_from, consent.transactions_to, asked_from, asked_to)
    detail = rules.releases_transaction_detail(consent.permissions)
    out = []
    # Ledger ids carry a kind prefix (tr_, pay_…), so order by booking time, not by id.
    journals = sorted(_ledger_call(ledger.journals, account_id), key=lambda j: _parse(j["created_at"]))
    for journal in journals:
        booked = _parse(journal["created_at"])
        if not rules.in_window(booked, lower, upper):
            continue
        for posting in journal["postings"]:
            if posting["account_id"] != account_id:
                continue
            credit = not _is_negative(posting["amount"])
            if not rules.releases_direction(consent.permissions, credit):
                continue
            tx: dict[str, Any] = {
                "AccountId": account_id,
                "TransactionId": journal["id"],
                "CreditDebitIndicator": "Credit" if credit else "Debit",
                "Status": "Booked",
                "TransactionMutability": "Immutable",
                "BookingDateTime": booked,
                "ValueDateTime": booked,
                "Amount": _amount(posting["amount"]),
                "ProprietaryBankTransactionCode": {"Code": journal["kind"], "Issuer": "SandboxBank"},
            }
            if detail:
                tx["TransactionInformation"] = journal.get("description") or journal["kind"].capitalize()
                after = posting["balance_after"]
                tx["Balance"] = {"CreditDebitIndicator": "Debit" if _is_negative(after) else "Credit",
                                 "Type": "InterimBooked", "Amount": _amount(after)}
                fee = journal.get("fee") or {}
                if credit and fee and Decimal(fee["amount"]) > 0:
                    tx["ChargeAmount"] = _amount(fee)
                counterparty = journal.get("from_account_id") if credit else journal.get("to_account_id")
                if counterparty:
                    key = "DebtorAccount" if credit else "CreditorAccount"
                    tx[key] = {"SchemeName": ACCOUNT_SCHEME, "Identification": counterparty}
            out.append(tx)
    return out


# --- PISP -------------------------------------------------------------------------------------

def funds_available(ledger: PaymentsClient, account_id: str, amount: str, currency: str) -> bool:
    account = _ledger_call(ledger.account, account_id)
    if account is None or account["currency"] != currency:
        return False
    return to_minor(account["balance"]["amount"], currency) >= to_minor(amount, currency)


def create_domestic_payment(session: Session, ledger: PaymentsClient, consent: Consent,
                            body: OBWriteDomestic2, now: datetime) -> DomesticPayment:
    """Consume the consent, record the order, then settle it in the ledger (idempotently)."""
    if body.Data.ConsentId != consent.id:
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                        f"The access token is bound to consent {consent.id}, not {body.Data.ConsentId}.",
                        "Data.ConsentId")
    ensure_usable(consent, now)
    if body.Data.Initiation.model_dump(exclude_none=True) != consent.data["Initiation"] or \
            body.Risk.model_dump(exclude_none=True) != consent.risk:
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                        "Initiation and Risk must be exactly those of the authorised consent.", "Data.Initiation")
    initiation = consent.data["Initiation"]
    amount = initiation["InstructedAmount"]
    payment = DomesticPayment(
        id=new_id("dp"), consent_id=consent.id, client_id=consent.client_id, status="Pending",
        debtor_account_id=consent.account_ids[0],
        creditor_account_id=initiation["CreditorAccount"]["Identification"],
        amount_minor=to_minor(amount["Amount"], amount["Currency"]), currency=amount["Currency"],
        created_at=now, status_updated_at=now)
    _set_status(consent, "Consumed", now)
    session.add(consent)
    session.add(payment)
    record_first(session, "the payment is recorded before any money moves: its id is the transfer's key")
    settle(session, ledger, payment, consent, now)
    return payment


def settle(session: Session, ledger: PaymentsClient, payment: DomesticPayment, consent: Consent, now: datetime) -> None:
    """Make the ledger transfer for a Pending payment. The key is the payment's id, so retrying
    after a lost answer can never pay twice."""
    if payment.status != "Pending":
        return
    initiation = consent.data["Initiation"]
    amount = initiation["InstructedAmount"]
    remittance = initiation.get("RemittanceInformation", {})
    description = remittance.get("Reference") or remittance.get("Unstructured") or \
        f"Open banking payment {initiation['EndToEndIdentification']}"
    try:
        # For the TPP that initiated it: the gateway counts and screens the movement as that
        # participant's; the debit is the bank's own customer's, under the PSU's consent.
        journal = ledger.transfer(from_account=payment.debtor_account_id, to_account=payment.creditor_account_id,
                                  amount=Money(amount=amount["Amount"], currency=amount["Currency"]),
                                  key=f"ob-{payment.id}", description=description,
                                  on_behalf_of=client_holder(session, payment.client_id))
    except PaymentRefused as refusal:
        payment.status, payment.reject_reason = "Rejected", str(refusal)[:300]
    except PaymentsUnavailable as exc:
        log.warning("payment %s stays Pending: %s", payment.id, exc)
        return
    else:
        payment.status, payment.journal_id = "AcceptedCreditSettlementCompleted", journal["id"]
    payment.status_updated_at = now
    session.add(payment)


def payment_of_client(session: Session, payment_id: str, client_id: str) -> DomesticPayment:
    payment = session.get(DomesticPayment, payment_id)
    if payment is None or payment.client_id != client_id:  # another TPP's is not disclosed
        raise not_found("domestic payment", payment_id, "DomesticPaymentId")
    return payment


# --- CBPII ------------------------------------------------------------------------------------

def confirm_funds(session: Session, ledger: PaymentsClient, consent: Consent, body: OBFundsConfirmation1,
                  now: datetime) -> FundsConfirmation:
    if body.Data.ConsentId != consent.id:
        raise OBIEError(403, "UK.OBIE.Resource.ConsentMismatch",
                        f"The access token is bound to consent {consent.id}, not {body.Data.ConsentId}.",
                        "Data.ConsentId")
    amount = body.Data.InstructedAmount
    row = FundsConfirmation(id=new_id("fc"), consent_id=consent.id, reference=body.Data.Reference,
                            amount=amount.Amount, currency=amount.Currency,
                            funds_available=funds_available(ledger, consent.account_ids[0], amount.Amount,
                                                            amount.Currency),
                            created_at=now)
    session.add(row)
    return row
