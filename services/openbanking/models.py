"""Tables of Sandbox Bank. Money and history stay in the payments ledger; the bank keeps who may
see and move what: PSUs, TPP clients, consents, tokens, payment orders."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field

from services.common.db import UTCDateTime, model_base
from services.common.idempotency import idempotency_table
from services.common.outbox import outbox_table

BankModel = model_base("BankModel")
IdempotencyKeys = idempotency_table(BankModel.metadata)
# Consents authorised, rejected, revoked and expired, recorded with the change (GET /_sandbox/events).
Events = outbox_table(BankModel.metadata)


class Psu(BankModel, table=True):
    """A bank customer (Payment Service User) who logs in to authorise consents."""

    __tablename__ = "psus"

    id: str = Field(primary_key=True, max_length=40)  # the login name
    name: str = Field(max_length=100)
    behaviour: str = Field(default="normal", max_length=10)  # normal | reject | expire


class PsuAccount(BankModel, table=True):
    """An account a PSU holds: the ledger account in payments, as the bank presents it."""

    __tablename__ = "psu_accounts"

    account_id: str = Field(primary_key=True, max_length=40)  # acc_… in payments
    psu_id: str = Field(foreign_key="psus.id", index=True, max_length=40)
    nickname: str = Field(max_length=70)
    sub_type: str = Field(max_length=20)  # OBIE AccountSubType
    opened_at: datetime = Field(sa_type=UTCDateTime())


class TppClient(BankModel, table=True):
    """A third-party provider registered with the bank's authorisation server."""

    __tablename__ = "tpp_clients"

    client_id: str = Field(primary_key=True, max_length=40)
    secret_hash: str = Field(max_length=64)
    name: str = Field(max_length=100)
    redirect_uri: str = Field(max_length=300)  # the only one: authorisation requests must name it exactly
    # The sandbox participant (gateway key) the client belongs to: through the gateway only that
    # participant may authenticate as this client or use its tokens and consents. None: registered
    # on the bank's own port, bound to nobody.
    participant_id: str | None = Field(default=None, max_length=60, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime())


class Consent(BankModel, table=True):
    """An account-access, domestic-payment or funds-confirmation consent (OBIE's intent)."""

    __tablename__ = "consents"

    id: str = Field(primary_key=True, max_length=40)
    kind: str = Field(max_length=20, index=True)  # account-access | domestic-payment | funds-confirmation
    client_id: str = Field(foreign_key="tpp_clients.client_id", index=True, max_length=40)
    status: str = Field(max_length=30)
    psu_id: str | None = Field(default=None, max_length=40)
    # Ledger accounts the PSU released (AIS) or pays from (PIS, CBPII).
    account_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    permissions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    transactions_from: datetime | None = Field(default=None, sa_type=UTCDateTime())
    transactions_to: datetime | None = Field(default=None, sa_type=UTCDateTime())
    # The request's Data and Risk as sent, echoed back as OBIE requires (PIS, CBPII).
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    risk: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    deleted: bool = False  # the TPP deleted it: gone from the API, and every token with it
    created_at: datetime = Field(sa_type=UTCDateTime())
    status_updated_at: datetime = Field(sa_type=UTCDateTime())
    # When the bank's due work saw its ExpirationDateTime pass (and recorded the event). OBIE
    # v3.1.11 has no Expired status: the consent keeps its status, and every use is refused.
    expired_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class AuthorizationCode(BankModel, table=True):
    """Issued when the PSU authorises; the TPP swaps it once for an access token."""

    __tablename__ = "authorization_codes"

    code_hash: str = Field(primary_key=True, max_length=64)
    consent_id: str = Field(foreign_key="consents.id", max_length=40)
    client_id: str = Field(max_length=40)
    # The redirect URI the authorisation request named, if any: the token request must repeat it.
    redirect_uri: str | None = Field(default=None, max_length=300)
    # PKCE (RFC 7636): the token request must bring the verifier whose S256 digest this is.
    code_challenge: str = Field(default="", max_length=128)
    code_challenge_method: str = Field(default="S256", max_length=10)
    expires_at: datetime = Field(sa_type=UTCDateTime())
    used: bool = False


class AccessToken(BankModel, table=True):
    """A bearer token: one TPP, and (authorization code grant) one consent."""

    __tablename__ = "access_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(foreign_key="tpp_clients.client_id", index=True, max_length=40)
    grant_type: str = Field(max_length=20)  # client_credentials | authorization_code
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    consent_id: str | None = Field(default=None, foreign_key="consents.id", max_length=40)
    # The gateway participant that obtained the token: the token is refused to any other.
    participant: str | None = Field(default=None, max_length=60)
    expires_at: datetime = Field(sa_type=UTCDateTime())


class DomesticPayment(BankModel, table=True):
    """A payment order made under a consumed consent; the ledger transfer is its settlement."""

    __tablename__ = "domestic_payments"

    id: str = Field(primary_key=True, max_length=40)
    consent_id: str = Field(foreign_key="consents.id", unique=True, max_length=40)
    client_id: str = Field(max_length=40, index=True)
    status: str = Field(max_length=40)
    debtor_account_id: str = Field(max_length=40)
    creditor_account_id: str = Field(max_length=40)
    amount_minor: int
    currency: str = Field(max_length=3)
    journal_id: str | None = Field(default=None, max_length=40)  # the ledger transfer, once made
    reject_reason: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(sa_type=UTCDateTime())
    status_updated_at: datetime = Field(sa_type=UTCDateTime())


class FundsConfirmation(BankModel, table=True):
    """One CBPII question, 'could the PSU pay this now?', and the bank's yes or no."""

    __tablename__ = "funds_confirmations"

    id: str = Field(primary_key=True, max_length=40)
    consent_id: str = Field(foreign_key="consents.id", index=True, max_length=40)
    reference: str = Field(max_length=35)
    amount: str = Field(max_length=20)
    currency: str = Field(max_length=3)
    funds_available: bool
    created_at: datetime = Field(sa_type=UTCDateTime())


class BankState(BankModel, table=True):
    """One-off facts about this bank's database (e.g. the demo history was written)."""

    __tablename__ = "bank_state"

    key: str = Field(primary_key=True, max_length=40)
    value: str = Field(max_length=200)
