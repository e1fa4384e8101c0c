"""Credit as a TPP at Sandbox Bank: its consents, and the bank's errors in the lender's words.

Credit creates the account-access consent with its own client credentials, relays the
applicant's decision with its PKCE challenge, and at application time swaps the bank's code for
the applicant's token and reads the credits. What the bank (or the gateway in front of it)
answers becomes a problem a lender can act on: a consent that cannot release anything now is a
409 naming why (`consent-expired`, `consent-revoked`, ...); a failure that is not about the
applicant's consent (the bank unreachable, credit's own client refused) is a 503.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlmodel import Session

from services.common.caller import Caller
from services.common.clock import wire_time
from services.common.problems import Problem, not_found
from services.credit.bank import ClientRejected, SandboxBank
from services.credit.gateway import Refused, Unavailable
from services.credit.models import BankConsentLink
from services.credit.repository import BankConsentLinksRepository
from services.credit.schemas import (
    BankConsentPublic,
    OpenBankingCashFlow,
    PsuAuthorisation,
    PsuDecision,
    PsuDecisionPublic,
)


def owner_of(caller: Caller) -> str | None:
    """Who owns what this caller creates, and whom credit's hops for it name: its participant;
    nobody for a direct caller (or the gateway's look-ups), whose resources stay open to all."""
    return caller.participant_id if caller.restricted else None


CONSENT_TTL = timedelta(days=1)  # long enough for the applicant to authorise, no standing access
PKCE_VERIFIER_LENGTH = 64  # RFC 7636 allows 43-128 characters
OB_PROBLEM = "urn:fintech-sandbox:problem:"  # problem types the gateway itself answers with


def _aware_iso(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bank_message(problem: dict[str, Any]) -> str:
    # OBIE errors carry their words in Errors[].Message, OAuth errors in error_description,
    # the gateway's problems in title/detail.
    errors = problem.get("Errors") or []
    if errors and isinstance(errors[0], dict):
        message = f"{errors[0].get('ErrorCode')}: {errors[0].get('Message')}"
    elif "error" in problem:
        message = f"{problem['error']}: {problem.get('error_description', '')}"
    else:
        message = f"{problem.get('title')}: {problem.get('detail', '')}"
    return message.rstrip(". ")


def _bank_error_code(problem: dict[str, Any]) -> str:
    errors = problem.get("Errors") or []
    return str(errors[0].get("ErrorCode", "")) if errors and isinstance(errors[0], dict) else ""


def _bank_down(exc: Exception) -> Problem:
    return Problem(503, "open-banking-unavailable", "Open banking is unavailable",
                   f"Sandbox Bank could not be reached through the gateway: {exc}. Nothing was stored; "
                   "retry later.")


def _gateway_refused_credit(refused: Refused) -> bool:
    """The gateway refused credit's own call (its key, limits): not the applicant's doing."""
    return str(refused.problem.get("type", "")).startswith(OB_PROBLEM)


def _bank_call(call: Any, *args: Any) -> Any:
    """Run a bank call; the failures that are not about the applicant's consent become 503s."""
    try:
        return call(*args)
    except Unavailable as down:
        raise _bank_down(down) from None
    except ClientRejected as rejected:
        raise _bank_down(rejected) from None
    except Refused as refused:
        if _gateway_refused_credit(refused):
            raise _bank_down(Exception(f"the gateway answered {refused.status} {_bank_message(refused.problem)}")) \
                from None
        raise


def _consent_problem(slug: str, title: str, detail: str, consent_id: str, **extras: Any) -> Problem:
    """A 409: the application cannot be decided with this consent (nothing is stored)."""
    return Problem(409, slug, title, detail, consent_id=consent_id, **extras)


def refused_read(refused: Refused, consent_id: str) -> Problem:
    """The bank would not release the data to the PSU's token: say why in the lender's words."""
    message = _bank_message(refused.problem)
    code = _bank_error_code(refused.problem)
    if code == "UK.OBIE.Resource.InvalidConsentStatus":
        if "expired" in message:
            return _consent_problem("consent-expired", "The consent has expired",
                                    f"Sandbox Bank says: {message}. Ask the applicant to authorise a new "
                                    "consent.", consent_id, bank_error=refused.body)
        if "deleted" in message or "Revoked" in message:
            return _consent_problem("consent-revoked", "The consent was revoked",
                                    f"Sandbox Bank says: {message}.", consent_id, bank_error=refused.body)
    return _consent_problem("consent-unusable", "The bank would not release the transactions",
                            f"Sandbox Bank answered {refused.status}: {message}.", consent_id,
                            bank_error=refused.body)


def no_such_consent(consent_id: str) -> Problem:
    # One answer for a consent the bank does not know and another lender's: existence is not disclosed.
    return _consent_problem("consent-not-found", "No such consent",
                            f"Sandbox Bank has no consent {consent_id} that the credit service created for "
                            "you. Create one with POST /open-banking/consents.", consent_id)


def _check_consent(consent: dict[str, Any], consent_id: str, now: datetime) -> None:
    """Refuse, in plain words, a consent that cannot release anything now."""
    status = consent.get("Status")
    if status == "AwaitingAuthorisation":
        raise _consent_problem("consent-not-authorised", "The applicant has not authorised the consent",
                               f"Consent {consent_id} is still AwaitingAuthorisation: the applicant logs in "
                               "at Sandbox Bank and authorises it, and the bank's code comes with the "
                               "application.", consent_id, consent_status=status)
    if status == "Rejected":
        raise _consent_problem("consent-rejected", "The applicant rejected the consent",
                               f"The applicant rejected consent {consent_id} at the bank; apply with inline "
                               "data or a new consent.", consent_id, consent_status=status)
    if status == "Revoked":
        raise _consent_problem("consent-revoked", "The consent was revoked",
                               f"The applicant revoked consent {consent_id} at the bank; nothing more can be "
                               "read with it.", consent_id, consent_status=status)
    expires_at = _aware_iso(consent.get("ExpirationDateTime"))
    if status == "Authorised" and expires_at is not None and now >= expires_at:
        raise _consent_problem("consent-expired", "The consent has expired",
                               f"Consent {consent_id} expired at {wire_time(expires_at)}; ask the applicant "
                               "to authorise a new one.", consent_id, consent_status=status,
                               expired_at=wire_time(expires_at))
    if status != "Authorised":
        raise _consent_problem("consent-unusable", "The consent cannot be used",
                               f"Consent {consent_id} is {status}.", consent_id, consent_status=status)


def _own_consent(bank: SandboxBank, consent_id: str) -> dict[str, Any]:
    """The consent as the bank reports it to credit; only consents credit created are visible."""
    try:
        return _bank_call(bank.consent, consent_id)
    except Refused as refused:
        if refused.status == 404:  # the bank does not disclose another TPP's consents either
            raise no_such_consent(consent_id) from None
        raise refused_read(refused, consent_id) from None


def pull_transactions(
    bank: SandboxBank, flow: OpenBankingCashFlow, now: datetime, code_verifier: str | None
) -> list[dict[str, Any]]:
    """The OBIE AISP journey's last leg, as a TPP makes it: check the consent, swap the code (and
    the consent's PKCE verifier) for the PSU's token with credit's own client credentials, check
    the token is for this consent, check the account was shared, read its credits. The token is
    dropped afterwards."""
    consent_id = flow.consent_id
    _check_consent(_own_consent(bank, consent_id), consent_id, now)
    try:
        granted = _bank_call(bank.redeem_code, flow.authorization_code, code_verifier)
    except Refused as refused:
        raise _consent_problem(
            "authorization-code-invalid", "The authorisation code was not accepted",
            f"Sandbox Bank answered {_bank_message(refused.problem)}. A code works once, for 10 minutes, "
            "and only for the credit service's own consents; ask the applicant to authorise again.",
            consent_id, bank_error=refused.body) from None
    if granted.get("consent_id") != consent_id:
        raise _consent_problem(
            "authorization-code-mismatch", "The code is for another consent",
            f"The authorisation code was issued for consent {granted.get('consent_id')}, not {consent_id}.",
            consent_id)
    token = str(granted["access_token"])
    try:
        shared = sorted(str(a.get("AccountId")) for a in _bank_call(bank.accounts, token))
        if flow.account_id not in shared:  # authorised by another PSU than the account's holder
            raise _consent_problem(
                "account-not-in-consent", "The applicant did not share this account",
                f"The PSU who authorised consent {consent_id} shared {', '.join(shared) or 'no account'}, not "
                f"{flow.account_id}: only the account's holder can release its transactions.",
                consent_id, shared_account_ids=shared)
        return _bank_call(bank.transactions, token, flow.account_id, now - timedelta(days=365))
    except Refused as refused:
        raise refused_read(refused, consent_id) from None


def _authorisation_url(public_base: str, consent_id: str) -> str:
    return f"{public_base.rstrip('/')}/credit/open-banking/consents/{consent_id}/authorisation"


def bank_consent_public(
    consent: dict[str, Any], client_id: str, public_base: str, link: BankConsentLink | None
) -> BankConsentPublic:
    status = consent["Status"]
    # Only a consent credit holds the PKCE verifier of can be authorised through credit.
    waiting = status == "AwaitingAuthorisation" and link is not None
    steps = {
        "AwaitingAuthorisation": "The applicant authorises the consent at the bank (psu_authorisation). Then apply "
                                 "with cash_flow {source: open_banking, consent_id, authorization_code: the "
                                 "bank's code, account_id: the account shared}.",
        "Authorised": "Authorised: apply with the bank's authorisation code, within 10 minutes of the "
                      "applicant's decision.",
        "Rejected": "The applicant rejected it; create a new consent or apply with inline data.",
        "Revoked": "The applicant revoked it; create a new consent or apply with inline data.",
    }
    return BankConsentPublic(
        consent_id=consent["ConsentId"],
        client_id=client_id,
        status=status,
        permissions=list(consent.get("Permissions", [])),
        transactions_from=_aware_iso(consent.get("TransactionFromDateTime")),
        expires_at=_aware_iso(consent.get("ExpirationDateTime")),
        created_at=_aware_iso(consent["CreationDateTime"]),  # type: ignore[arg-type]
        status_updated_at=_aware_iso(consent["StatusUpdateDateTime"]),  # type: ignore[arg-type]
        psu_authorisation=PsuAuthorisation(url=_authorisation_url(public_base, consent["ConsentId"]), body={
            "psu_id": "<the applicant's bank login>", "otp": "<one-time code: 123456 in the sandbox>",
            "decision": "Authorise",
        }) if waiting else None,
        next_step=steps.get(status, ""),
    )


def consent_link(
    session: Session, consent_id: str, caller: Caller, not_yours: Callable[[str], Problem]
) -> BankConsentLink | None:
    """Credit's record of a consent it created (None: credit has none, the bank will answer);
    another participant's is refused with `not_yours`, as the bank refuses another TPP's."""
    link = BankConsentLinksRepository(session).get(consent_id)
    if link is not None and not caller.may_use(link.participant_id):
        raise not_yours(consent_id)
    return link


def create_bank_consent(
    session: Session, bank: SandboxBank, now: datetime, public_base: str, caller: Caller
) -> BankConsentPublic:
    """Credit creates the account-access consent itself, with its own client-credentials token,
    and keeps which participant asked for it and a fresh PKCE verifier for its code."""
    owner = owner_of(caller)
    try:
        consent = _bank_call(bank.acting_for(owner).create_consent, now - timedelta(days=365), now + CONSENT_TTL)
    except Refused as refused:
        raise _bank_down(Exception(f"the bank refused the consent: {_bank_message(refused.problem)}")) from None
    link = BankConsentLink(consent_id=consent["ConsentId"], participant_id=owner,
                           code_verifier=generate_token(PKCE_VERIFIER_LENGTH), created_at=now)
    BankConsentLinksRepository(session).add(link)
    return bank_consent_public(consent, bank.client_id, public_base, link)


def get_bank_consent(
    session: Session, bank: SandboxBank, consent_id: str, public_base: str, caller: Caller
) -> BankConsentPublic:
    # Another lender's consent is a 404, as another TPP's is below.
    link = consent_link(session, consent_id, caller, lambda cid: not_found("Consent", cid))
    try:
        consent = _bank_call(bank.acting_for(owner_of(caller)).consent, consent_id)
    except Refused as refused:
        if refused.status in (403, 404):  # another TPP's consent is none of credit's business
            raise not_found("Consent", consent_id) from None
        raise _bank_down(Exception(f"the bank answered {refused.status} {_bank_message(refused.problem)}")) \
            from None
    return bank_consent_public(consent, bank.client_id, public_base, link)


def authorise_bank_consent(
    session: Session, bank: SandboxBank, consent_id: str, decision: PsuDecision, caller: Caller
) -> PsuDecisionPublic:
    """Relay the applicant's decision to the bank as credit's authorisation request (its client,
    the PKCE challenge of the verifier credit keeps for this consent): the sandbox's headless
    stand-in for the applicant's browser at the bank."""
    link = consent_link(session, consent_id, caller, lambda cid: not_found("Consent", cid))
    if link is None:  # not created through credit: credit holds no verifier for it
        raise not_found("Consent", consent_id)
    request = {"consent_id": consent_id, "client_id": bank.client_id,
               "code_challenge": create_s256_code_challenge(link.code_verifier), "code_challenge_method": "S256",
               **decision.model_dump(exclude_none=True)}
    try:
        answer = _bank_call(bank.acting_for(owner_of(caller)).authorise, request)
    except Refused as refused:
        if refused.status == 404:
            raise not_found("Consent", consent_id) from None
        raise _consent_problem("psu-authorisation-refused", "The bank refused the applicant's decision",
                               f"Sandbox Bank says: {_bank_message(refused.problem)}.", consent_id,
                               bank_error=refused.body) from None
    return PsuDecisionPublic.model_validate(answer)
