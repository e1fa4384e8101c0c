"""OBIE v3.1.11 request and response models (the subset Sandbox Bank implements).

Names, fields and enums are OBIE's. Request schemas are narrower than OBIE's where the bank
supports less (one account scheme; amounts valid for their currency), so that every request
the schema allows is one the bank can act on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from services.common.fields import TEXT_PATTERN
from services.common.ids import id_pattern
from services.common.money import currency_codes, currency_exponents

_FORBID = ConfigDict(extra="forbid")
ACCOUNT_SCHEME = "UK.OBIE.BBAN"  # the bank's own account number: the ledger account id


def _utc(value: datetime) -> datetime:
    # OBIE: a date-time without an offset is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]


def _text(max_length: int, description: str | None = None, examples: list[str] | None = None, **kw: Any) -> Any:
    return Field(min_length=1, max_length=max_length, pattern=TEXT_PATTERN, description=description,
                 examples=examples, **kw)


# --- permissions ------------------------------------------------------------------------------

Permission = Literal[
    "ReadAccountsBasic", "ReadAccountsDetail", "ReadBalances", "ReadBeneficiariesBasic",
    "ReadBeneficiariesDetail", "ReadDirectDebits", "ReadOffers", "ReadPAN", "ReadParty",
    "ReadPartyPSU", "ReadProducts", "ReadScheduledPaymentsBasic", "ReadScheduledPaymentsDetail",
    "ReadStandingOrdersBasic", "ReadStandingOrdersDetail", "ReadStatementsBasic",
    "ReadStatementsDetail", "ReadTransactionsBasic", "ReadTransactionsCredits",
    "ReadTransactionsDebits", "ReadTransactionsDetail",
]


def _has(permission: str) -> dict[str, Any]:
    return {"contains": {"const": permission}}


TRANSACTION_LEVELS = ("ReadTransactionsBasic", "ReadTransactionsDetail")
TRANSACTION_DIRECTIONS = ("ReadTransactionsCredits", "ReadTransactionsDebits")

# OBIE's permission rules, stated in the schema so any array it allows is one the bank accepts.
PERMISSION_RULES: dict[str, Any] = {
    "allOf": [
        {"anyOf": [_has("ReadAccountsBasic"), _has("ReadAccountsDetail")]},
        {"anyOf": [
            {"not": {"anyOf": [_has(p) for p in TRANSACTION_LEVELS + TRANSACTION_DIRECTIONS]}},
            {"allOf": [{"anyOf": [_has(p) for p in TRANSACTION_LEVELS]},
                       {"anyOf": [_has(p) for p in TRANSACTION_DIRECTIONS]}]},
        ]},
    ]
}


# --- amounts and accounts ---------------------------------------------------------------------

def ob_amount_pattern(exponent: int) -> str:
    """A positive amount within OBIE's 13 integer digits, with at most `exponent` decimals."""
    whole = "[1-9][0-9]{0,12}"
    if exponent == 0:
        return f"^{whole}$"
    fractions = "|".join(f"0{{{z}}}[1-9][0-9]{{0,{exponent - 1 - z}}}" for z in range(exponent))
    return f"^({whole}(\\.[0-9]{{1,{exponent}}})?|0\\.({fractions}))$"


class OBActiveOrHistoricCurrencyAndAmount(BaseModel):
    """An amount as OBIE writes it: a decimal string and an ISO 4217 code."""

    Amount: str = Field(pattern=r"^\d{1,13}$|^\d{1,13}\.\d{1,5}$", examples=["10.00"])
    Currency: str = Field(pattern=r"^[A-Z]{3,3}$", examples=["CNY"])


class InstructedAmount(BaseModel):
    """A positive amount with no more decimals than its currency has (CNY 2, JPY 0)."""

    model_config = _FORBID

    Amount: str
    Currency: str

    @model_validator(mode="after")
    def _valid_for_currency(self) -> InstructedAmount:
        import re

        exponent = currency_exponents().get(self.Currency)
        if exponent is None:
            raise ValueError(f"{self.Currency!r} is not a supported ISO 4217 currency")
        if not re.match(ob_amount_pattern(exponent), self.Amount):
            raise ValueError(f"{self.Amount!r} is not a positive {self.Currency} amount "
                             f"with at most {exponent} decimals")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        by_exponent: dict[int, list[str]] = {}
        for code in currency_codes():
            by_exponent.setdefault(currency_exponents()[code], []).append(code)
        order = sorted(by_exponent, key=lambda exp: (exp != 2, exp))
        return {
            "title": "InstructedAmount",
            "description": "A positive amount; no more decimals than the currency allows.",
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "Amount": {"type": "string", "pattern": ob_amount_pattern(exp)},
                        "Currency": {"type": "string", "enum": by_exponent[exp]},
                    },
                    "required": ["Amount", "Currency"],
                    "additionalProperties": False,
                }
                for exp in order
            ],
            "examples": [{"Amount": "10.00", "Currency": "CNY"}],
        }


class OBCashAccountIn(BaseModel):
    """An account at Sandbox Bank: scheme `UK.OBIE.BBAN`, identification the ledger id `acc_…`."""

    model_config = _FORBID

    SchemeName: Literal["UK.OBIE.BBAN"] = Field(description="The only scheme Sandbox Bank supports.")
    Identification: str = Field(pattern=id_pattern("acc"), examples=["acc_00000000000000000000000008"])
    Name: str | None = _text(350, "The account holder's name.", ["Wang Fang"], default=None)
    SecondaryIdentification: str | None = _text(34, default=None)


class OBCreditorAccountIn(OBCashAccountIn):
    """The payee's account; OBIE requires its name."""

    Name: str = _text(350, "The payee's name.", ["Hutong Coffee"])  # type: ignore[assignment]


class OBCashAccount(BaseModel):
    """An account identification as the bank shows it."""

    SchemeName: str
    Identification: str = Field(min_length=1, max_length=256)
    Name: str | None = Field(default=None, min_length=1, max_length=350)
    SecondaryIdentification: str | None = Field(default=None, min_length=1, max_length=34)


# --- envelope ---------------------------------------------------------------------------------

class Links(BaseModel):
    """Where this response lives, and the other pages of a list."""

    model_config = _FORBID

    Self: str
    First: str | None = None
    Prev: str | None = None
    Next: str | None = None
    Last: str | None = None


class Meta(BaseModel):
    """How many pages a list has, and which period the data covers."""

    model_config = _FORBID

    TotalPages: int | None = None
    FirstAvailableDateTime: datetime | None = None
    LastAvailableDateTime: datetime | None = None


class OBRisk2(BaseModel):
    """The AIS risk block: OBIE defines it as an empty object."""

    model_config = _FORBID


# --- AISP: account-access consents ------------------------------------------------------------

class OBReadConsentData(BaseModel):
    model_config = _FORBID

    Permissions: list[Permission] = Field(
        min_length=1,
        json_schema_extra=PERMISSION_RULES,
        description="Must include ReadAccountsBasic or ReadAccountsDetail; ReadTransactionsBasic/"
        "Detail go with ReadTransactionsCredits and/or Debits, and the other way round.",
        examples=[["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail",
                   "ReadTransactionsCredits", "ReadTransactionsDebits"]],
    )
    ExpirationDateTime: UtcDateTime | None = Field(
        default=None, description="When access ends; none means until revoked.")
    TransactionFromDateTime: UtcDateTime | None = Field(
        default=None, description="Earliest booking time of transactions the TPP may read.")
    TransactionToDateTime: UtcDateTime | None = Field(
        default=None, description="Latest booking time of transactions the TPP may read.")

    @model_validator(mode="after")
    def _permission_rules(self) -> OBReadConsentData:
        # The schema says the same; this holds it for callers that skip the schema.
        perms = set(self.Permissions)
        if not perms & {"ReadAccountsBasic", "ReadAccountsDetail"}:
            raise ValueError("Permissions must include ReadAccountsBasic or ReadAccountsDetail")
        if bool(perms & set(TRANSACTION_LEVELS)) != bool(perms & set(TRANSACTION_DIRECTIONS)):
            raise ValueError("ReadTransactionsBasic/Detail and ReadTransactionsCredits/Debits "
                             "must be requested together")
        return self


class OBReadConsent1(BaseModel):
    """Ask for access to a PSU's accounts: which data clusters, until when, which period."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "Data": {"Permissions": ["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail",
                                 "ReadTransactionsCredits", "ReadTransactionsDebits"]},
        "Risk": {}}]})

    Data: OBReadConsentData
    Risk: OBRisk2


# OBIE v3.1.11's statuses of an account-access or funds-confirmation consent. It has no Expired:
# an expired consent keeps its status, its past ExpirationDateTime says why it no longer works.
ConsentStatus = Literal["Authorised", "AwaitingAuthorisation", "Rejected", "Revoked"]


class OBReadConsentResponseData(BaseModel):
    ConsentId: str = Field(min_length=1, max_length=128)
    CreationDateTime: datetime
    Status: ConsentStatus
    StatusUpdateDateTime: datetime
    Permissions: list[Permission]
    ExpirationDateTime: datetime | None = None
    TransactionFromDateTime: datetime | None = None
    TransactionToDateTime: datetime | None = None


class OBReadConsentResponse1(BaseModel):
    """An account-access consent and its status."""

    Data: OBReadConsentResponseData
    Risk: OBRisk2
    Links: Links
    Meta: Meta


# --- AISP: accounts, balances, transactions ---------------------------------------------------

class OBBranchAndFinancialInstitutionIdentification5(BaseModel):
    SchemeName: str
    Identification: str = Field(min_length=1, max_length=35)


class OBAccount6(BaseModel):
    """An account: Basic fields always; `Account` and `Servicer` only with ReadAccountsDetail."""

    AccountId: str = Field(min_length=1, max_length=40)
    Status: Literal["Deleted", "Disabled", "Enabled", "Pending", "ProForma"] | None = None
    StatusUpdateDateTime: datetime | None = None
    Currency: str = Field(pattern=r"^[A-Z]{3,3}$")
    AccountType: Literal["Business", "Personal"]
    AccountSubType: Literal["ChargeCard", "CreditCard", "CurrentAccount", "EMoney", "Loan",
                            "Mortgage", "PrePaidCard", "Savings"]
    Description: str | None = Field(default=None, min_length=1, max_length=35)
    Nickname: str | None = Field(default=None, min_length=1, max_length=70)
    OpeningDate: datetime | None = None
    Account: list[OBCashAccount] | None = None
    Servicer: OBBranchAndFinancialInstitutionIdentification5 | None = None


class OBReadAccountData(BaseModel):
    Account: list[OBAccount6] = []


class OBReadAccount6(BaseModel):
    """The accounts the consent releases."""

    Data: OBReadAccountData
    Links: Links
    Meta: Meta


BalanceType = Literal["ClosingAvailable", "ClosingBooked", "ClosingCleared", "Expected",
                      "ForwardAvailable", "Information", "InterimAvailable", "InterimBooked",
                      "InterimCleared", "OpeningAvailable", "OpeningBooked", "OpeningCleared",
                      "PreviouslyClosedBooked"]


class OBBalance(BaseModel):
    AccountId: str = Field(min_length=1, max_length=40)
    CreditDebitIndicator: Literal["Credit", "Debit"]
    Type: BalanceType
    DateTime: datetime
    Amount: OBActiveOrHistoricCurrencyAndAmount


class OBReadBalanceData(BaseModel):
    Balance: list[OBBalance] = Field(min_length=1)


class OBReadBalance1(BaseModel):
    """An account's balances (needs ReadBalances)."""

    Data: OBReadBalanceData
    Links: Links
    Meta: Meta


class OBTransactionCashBalance(BaseModel):
    CreditDebitIndicator: Literal["Credit", "Debit"]
    Type: BalanceType
    Amount: OBActiveOrHistoricCurrencyAndAmount


class ProprietaryBankTransactionCodeStructure1(BaseModel):
    Code: str = Field(min_length=1, max_length=35)
    Issuer: str | None = Field(default=None, min_length=1, max_length=35)


class OBTransaction6(BaseModel):
    """One booked ledger entry. Detail-only fields: TransactionInformation, Balance,
    ChargeAmount, CreditorAccount, DebtorAccount."""

    AccountId: str = Field(min_length=1, max_length=40)
    TransactionId: str | None = Field(default=None, min_length=1, max_length=210)
    TransactionReference: str | None = Field(default=None, min_length=1, max_length=210)
    CreditDebitIndicator: Literal["Credit", "Debit"]
    Status: Literal["Booked", "Pending", "Rejected"]
    TransactionMutability: Literal["Mutable", "Immutable"] | None = None
    BookingDateTime: datetime
    ValueDateTime: datetime | None = None
    TransactionInformation: str | None = Field(default=None, min_length=1, max_length=500)
    Amount: OBActiveOrHistoricCurrencyAndAmount
    ChargeAmount: OBActiveOrHistoricCurrencyAndAmount | None = None
    ProprietaryBankTransactionCode: ProprietaryBankTransactionCodeStructure1 | None = None
    Balance: OBTransactionCashBalance | None = None
    CreditorAccount: OBCashAccount | None = None
    DebtorAccount: OBCashAccount | None = None


class OBReadTransactionData(BaseModel):
    Transaction: list[OBTransaction6] = []


class OBReadTransaction6(BaseModel):
    """One page of an account's transactions; `Links.Next` fetches the next."""

    Data: OBReadTransactionData
    Links: Links
    Meta: Meta


# --- PISP -------------------------------------------------------------------------------------

class OBRemittanceInformation(BaseModel):
    model_config = _FORBID

    Unstructured: str | None = _text(140, "Free text for the payee.", default=None)
    Reference: str | None = _text(35, "The payee's reference.", ["INV-2026-001"], default=None)


LocalInstrumentCode = Literal[
    "UK.OBIE.BACS", "UK.OBIE.BalanceTransfer", "UK.OBIE.CHAPS", "UK.OBIE.Euro1", "UK.OBIE.FPS",
    "UK.OBIE.Link", "UK.OBIE.MoneyTransfer", "UK.OBIE.Paym", "UK.OBIE.SEPACreditTransfer",
    "UK.OBIE.SEPAInstantCreditTransfer", "UK.OBIE.SWIFT", "UK.OBIE.Target2",
]


class OBPostalAddress6(BaseModel):
    """Where the creditor is (OBIE's OBPostalAddress6): the gateway screens its `Country`."""

    model_config = _FORBID

    AddressType: Literal["Business", "Correspondence", "DeliveryTo", "MailTo", "POBox", "Postal",
                         "Residential", "Statement"] | None = None
    Department: str | None = Field(default=None, min_length=1, max_length=70)
    SubDepartment: str | None = Field(default=None, min_length=1, max_length=70)
    StreetName: str | None = Field(default=None, min_length=1, max_length=70)
    BuildingNumber: str | None = Field(default=None, min_length=1, max_length=16)
    PostCode: str | None = Field(default=None, min_length=1, max_length=16)
    TownName: str | None = Field(default=None, min_length=1, max_length=35)
    CountrySubDivision: str | None = Field(default=None, min_length=1, max_length=35)
    Country: str | None = Field(default=None, pattern=r"^[A-Z]{2,2}$", examples=["GB"])
    AddressLine: list[Annotated[str, Field(min_length=1, max_length=70)]] | None = Field(default=None, max_length=7)


class OBDomesticInitiation(BaseModel):
    """What to pay, to whom, from where (DebtorAccount optional: the PSU picks at the bank)."""

    model_config = _FORBID

    InstructionIdentification: str = _text(35, "The TPP's id for this instruction.", ["ACME412"])
    EndToEndIdentification: str = _text(35, "Travels with the payment to the payee.", ["FRESCO.21302.GFX.20"])
    LocalInstrument: LocalInstrumentCode | None = None
    InstructedAmount: InstructedAmount
    DebtorAccount: OBCashAccountIn | None = None
    CreditorAccount: OBCreditorAccountIn
    CreditorPostalAddress: OBPostalAddress6 | None = None
    RemittanceInformation: OBRemittanceInformation | None = None


class OBRisk1(BaseModel):
    """What the TPP knows about the payment's context (for the bank's fraud checks)."""

    model_config = _FORBID

    PaymentContextCode: Literal[
        "BillingGoodsAndServicesInAdvance", "BillingGoodsAndServicesInArrears", "PispPayee",
        "EcommerceMerchantInitiatedPayment", "FaceToFacePointOfSale", "TransferToSelf",
        "TransferToThirdParty", "BillPayment", "EcommerceGoods", "EcommerceServices", "Other",
        "PartyToParty"] | None = None
    MerchantCategoryCode: str | None = Field(default=None, pattern=r"^[0-9]{3,4}$")
    MerchantCustomerIdentification: str | None = _text(70, default=None)
    ContractPresentIndicator: bool | None = None
    BeneficiaryPrepopulatedIndicator: bool | None = None
    PaymentPurposeCode: str | None = Field(default=None, pattern=r"^[A-Z]{3,4}$")
    BeneficiaryAccountType: Literal[
        "Business", "BusinessSavingsAccount", "Charity", "Collection", "Corporate", "Ewallet",
        "Government", "Investment", "ISA", "JointPersonal", "Pension", "Personal",
        "PersonalSavingsAccount", "Premier", "Wealth"] | None = None


_PAYMENT_EXAMPLE = {
    "InstructionIdentification": "INSTR-0001",
    "EndToEndIdentification": "E2E-0001",
    "InstructedAmount": {"Amount": "25.00", "Currency": "CNY"},
    "CreditorAccount": {"SchemeName": "UK.OBIE.BBAN",
                        "Identification": "acc_00000000000000000000000b04", "Name": "Hutong Coffee"},
    "RemittanceInformation": {"Reference": "Coffee beans"},
}


class OBWriteDomesticConsentData(BaseModel):
    model_config = _FORBID

    Initiation: OBDomesticInitiation


class OBWriteDomesticConsent4(BaseModel):
    """Ask the PSU to approve one domestic payment."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "Data": {"Initiation": _PAYMENT_EXAMPLE}, "Risk": {"PaymentContextCode": "PartyToParty"}}]})

    Data: OBWriteDomesticConsentData
    Risk: OBRisk1


class OBCashAccountDebtor4(BaseModel):
    SchemeName: str | None = None
    Identification: str | None = None
    Name: str | None = None


class OBDomesticInitiationOut(BaseModel):
    InstructionIdentification: str
    EndToEndIdentification: str
    LocalInstrument: str | None = None
    InstructedAmount: OBActiveOrHistoricCurrencyAndAmount
    DebtorAccount: OBCashAccount | None = None
    CreditorAccount: OBCashAccount
    CreditorPostalAddress: OBPostalAddress6 | None = None
    RemittanceInformation: dict[str, str] | None = None


class OBRisk1Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class OBWriteDomesticConsentResponseData(BaseModel):
    ConsentId: str = Field(min_length=1, max_length=128)
    CreationDateTime: datetime
    Status: Literal["Authorised", "AwaitingAuthorisation", "Consumed", "Rejected"]
    StatusUpdateDateTime: datetime
    Initiation: OBDomesticInitiationOut
    Debtor: OBCashAccountDebtor4 | None = None


class OBWriteDomesticConsentResponse5(BaseModel):
    """A domestic payment consent and its status."""

    Data: OBWriteDomesticConsentResponseData
    Risk: OBRisk1Out
    Links: Links
    Meta: Meta


class OBFundsAvailableResult(BaseModel):
    FundsAvailableDateTime: datetime
    FundsAvailable: bool


class OBWriteFundsConfirmationResponseData(BaseModel):
    FundsAvailableResult: OBFundsAvailableResult | None = None


class OBWriteFundsConfirmationResponse1(BaseModel):
    """Whether the debtor account could pay the consent's amount now."""

    Data: OBWriteFundsConfirmationResponseData
    Links: Links
    Meta: Meta


class OBWriteDomesticData(BaseModel):
    model_config = _FORBID

    ConsentId: str = Field(pattern=id_pattern("pdc"), examples=["pdc_01jd3k8m9q2w4e6r8t0y2v4x6z"])
    Initiation: OBDomesticInitiation


class OBWriteDomestic2(BaseModel):
    """Execute the payment an authorised consent describes (Initiation and Risk must match)."""

    model_config = _FORBID

    Data: OBWriteDomesticData
    Risk: OBRisk1


DomesticPaymentStatus = Literal["AcceptedCreditSettlementCompleted", "AcceptedSettlementCompleted",
                                "AcceptedSettlementInProcess", "AcceptedWithoutPosting", "Pending",
                                "Rejected"]


class OBWriteDomesticResponseData(BaseModel):
    DomesticPaymentId: str = Field(min_length=1, max_length=40)
    ConsentId: str = Field(min_length=1, max_length=128)
    CreationDateTime: datetime
    Status: DomesticPaymentStatus
    StatusUpdateDateTime: datetime
    Initiation: OBDomesticInitiationOut
    Debtor: OBCashAccountDebtor4 | None = None


class OBWriteDomesticResponse5(BaseModel):
    """A domestic payment and where it is in OBIE's status flow."""

    Data: OBWriteDomesticResponseData
    Links: Links
    Meta: Meta


# --- CBPII ------------------------------------------------------------------------------------

class OBFundsConfirmationConsentData(BaseModel):
    model_config = _FORBID

    ExpirationDateTime: UtcDateTime | None = None
    DebtorAccount: OBCashAccountIn


class OBFundsConfirmationConsent1(BaseModel):
    """Ask the PSU to let a card issuer check funds on one account."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"Data": {
        "DebtorAccount": {"SchemeName": "UK.OBIE.BBAN",
                          "Identification": "acc_00000000000000000000000008"}}}]})

    Data: OBFundsConfirmationConsentData


class OBFundsConfirmationConsentResponseData(BaseModel):
    ConsentId: str = Field(min_length=1, max_length=128)
    CreationDateTime: datetime
    Status: ConsentStatus
    StatusUpdateDateTime: datetime
    ExpirationDateTime: datetime | None = None
    DebtorAccount: OBCashAccount


class OBFundsConfirmationConsentResponse1(BaseModel):
    """A funds-confirmation consent and its status."""

    Data: OBFundsConfirmationConsentResponseData
    Links: Links
    Meta: Meta


class OBFundsConfirmationData(BaseModel):
    model_config = _FORBID

    ConsentId: str = Field(pattern=id_pattern("fcc"), examples=["fcc_01jd3k8m9q2w4e6r8t0y2v4x6z"])
    Reference: str = _text(35, "The card issuer's reference.", ["Purchase01"])
    InstructedAmount: InstructedAmount


class OBFundsConfirmation1(BaseModel):
    """Could the PSU pay this amount from the consented account now?"""

    model_config = _FORBID

    Data: OBFundsConfirmationData


class OBFundsConfirmationResponseData(BaseModel):
    FundsConfirmationId: str = Field(min_length=1, max_length=40)
    ConsentId: str = Field(min_length=1, max_length=128)
    CreationDateTime: datetime
    FundsAvailable: bool
    Reference: str
    InstructedAmount: OBActiveOrHistoricCurrencyAndAmount


class OBFundsConfirmationResponse1(BaseModel):
    """The bank's yes or no; it moves no money and holds none."""

    Data: OBFundsConfirmationResponseData
    Links: Links
    Meta: Meta


# --- authorisation server ---------------------------------------------------------------------

Scope = Literal["accounts", "payments", "fundsconfirmations"]


class TokenResponse(BaseModel):
    """An OAuth2 bearer token (RFC 6749 §5.1)."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    scope: str
    consent_id: str | None = Field(default=None, description="The consent an authorization-code token is bound to.")


class OAuthError(BaseModel):
    """An OAuth2 error (RFC 6749 §5.2)."""

    error: Literal["invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                   "unsupported_grant_type", "invalid_scope"]
    error_description: str | None = None
    error_uri: str | None = None


class AuthorizeRequest(BaseModel):
    """The PSU's decision at the bank, made by a script: log in with the test one-time code,
    then authorise (optionally choosing accounts) or reject."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "consent_id": "aac_01jd3k8m9q2w4e6r8t0y2v4x6z", "client_id": "tpp_demo",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
        "psu_id": "wangfang", "otp": "123456", "decision": "Authorise"}]})

    consent_id: str = Field(pattern=id_pattern("(aac|pdc|fcc)"), description="The ConsentId the TPP got.")
    client_id: str = Field(pattern=r"^tpp_[a-z0-9_]{1,36}$", description="The TPP asking.", examples=["tpp_demo"])
    # PKCE (RFC 7636), required: the TPP keeps a random verifier and sends its S256 digest here,
    # then the verifier with the code; a code without its verifier is worth nothing.
    code_challenge: str = Field(pattern=r"^[A-Za-z0-9._~\-]{43,128}$", description=(
        "BASE64URL(SHA256(code_verifier)) without padding; the verifier goes to /oauth2/token with the code."),
        examples=["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"])
    code_challenge_method: Literal["S256"] = Field(description="Only S256 (plain is refused).")
    # Printable, no quote or backslash: a refused one is quoted back in the error.
    redirect_uri: str | None = Field(
        default=None, max_length=300, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$",
        description="Optional; if sent, exactly the client's registered one, and then the token request must "
        "repeat it.", examples=["https://tpp.example/callback"])
    psu_id: str = Field(pattern=r"^[a-z0-9-]{1,40}$", description="The PSU's login. Magic: `psu-reject` "
                        "rejects, `psu-expire` authorises for 60 seconds.", examples=["wangfang"])
    otp: str = Field(pattern=r"^[0-9]{6}$", description="The one-time code; in the sandbox always 123456.",
                     examples=["123456"])
    decision: Literal["Authorise", "Reject"] = "Authorise"
    account_ids: list[Annotated[str, Field(pattern=id_pattern("acc"))]] | None = Field(
        default=None, max_length=20,
        description="AIS: the accounts to share (default all the PSU's); PIS/CBPII without a "
        "DebtorAccount: the first is the account to pay from.")
    state: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")


class AuthorizeResponse(BaseModel):
    """Where the PSU's browser would go back to: the TPP's redirect URI with the code."""

    consent_id: str
    status: str = Field(description="The consent's status after the decision.")
    code: str | None = Field(default=None, description="Swap it at /oauth2/token (authorization_code grant).")
    state: str | None = None
    redirect_uri: str


class ClientRegistration(BaseModel):
    """Register a TPP client (a simplified dynamic client registration)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "client_name": "My Budget App", "redirect_uri": "https://budget.example/callback"}]})

    client_name: str = _text(100, "Shown to PSUs when they authorise.", ["My Budget App"])
    # A host name (no IPv6 literal) and an optional port, then anything printable: every value
    # the pattern admits is a URL a client can parse (`http://[` was admitted, and echoed back).
    redirect_uri: str = Field(pattern=r"^https?://[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?([/?#][\x21-\x7e]{0,280})?$",
                              max_length=300, examples=["https://budget.example/callback"])


class ClientRegistered(BaseModel):
    """The new client's credentials; the secret is shown once."""

    client_id: str
    client_secret: str
    client_name: str
    redirect_uri: str
    scope: str
    participant_id: str | None = Field(description=(
        "The sandbox participant the client belongs to (the gateway key that registered it): through the "
        "gateway only that participant may use it. null: registered on the bank's own port."))


class PsuRevocation(BaseModel):
    """The PSU, logged in at the bank, revokes a consent they gave."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"psu_id": "wangfang", "otp": "123456"}]})

    psu_id: str = Field(pattern=r"^[a-z0-9-]{1,40}$", examples=["wangfang"])
    otp: str = Field(pattern=r"^[0-9]{6}$", examples=["123456"])
