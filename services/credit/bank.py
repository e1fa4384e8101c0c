"""Credit as a TPP at Sandbox Bank (OBIE AISP), every call through the gateway with credit's own key.

Credit has its own client registration at the bank (`tpp_credit`). It gets its own
client-credentials token to create and read consents, and swaps the authorisation code the PSU's
decision produced for the PSU's access token itself. Because every one of those calls carries the
credit service's key, the gateway names credit's participant to the bank, and the bank's rule
that a token works only for the participant that obtained it holds. The PSU's token is used for
one application's reads and never stored. Calls made for a lender name it (`acting_for`), so the
gateway logs and limits them as that lender's.
"""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta
from typing import Any

from services.common.clock import Clock
from services.credit.gateway import Gateway, Refused

PREFIX = "/open-banking"
CONSENTS = f"{PREFIX}/v3.1/aisp/account-access-consents"
# Data minimisation: the accounts list and the credits, no debits, balances or details.
PERMISSIONS = ("ReadAccountsBasic", "ReadTransactionsBasic", "ReadTransactionsCredits")
MAX_PAGES = 40


class _CachedToken:
    """Credit's client-credentials token and its end, shared by every `acting_for` view."""

    def __init__(self) -> None:
        self.value: tuple[str, datetime] | None = None
        self.lock = threading.Lock()


class ClientRejected(Exception):
    """The bank refused credit's own client credentials: a configuration fault, not the PSU's."""


class SandboxBank:
    def __init__(self, gateway: Gateway, client_id: str, client_secret: str, clock: Clock) -> None:
        self.gateway = gateway
        self.client_id = client_id
        self._secret = client_secret
        self.clock = clock
        self._token = _CachedToken()

    def acting_for(self, participant_id: str | None) -> SandboxBank:
        """The same registration and token cache, every call naming the participant credit serves."""
        view = copy.copy(self)
        view.gateway = self.gateway.acting_for(participant_id)
        return view

    # --- tokens ---------------------------------------------------------------------------------

    def forget_token(self) -> None:
        """Drop the cached client token (the sandbox's reset: the bank no longer knows it)."""
        with self._token.lock:
            self._token.value = None

    def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        """POST /oauth2/token with client_secret_basic authentication."""
        try:
            return self.gateway.send("POST", f"{PREFIX}/oauth2/token", data=form,
                                     auth=(self.client_id, self._secret), headers=self.gateway.headers())
        except Refused as refused:
            if refused.problem.get("error") == "invalid_client":
                raise ClientRejected(
                    f"Sandbox Bank does not accept the credit service's client {self.client_id!r} "
                    "(CREDIT_OB_CLIENT_ID / CREDIT_OB_CLIENT_SECRET)") from None
            raise

    def client_token(self, fresh: bool = False) -> str:
        """Credit's client-credentials token (scope `accounts`), reused until shortly before it ends."""
        now = self.clock.now()
        with self._token.lock:
            cached = self._token.value
            if cached and not fresh and now < cached[1]:
                return cached[0]
        body = self._token_request({"grant_type": "client_credentials", "scope": "accounts"})
        token = str(body["access_token"])
        lifetime = max(int(body.get("expires_in", 0)) - 60, 0)
        with self._token.lock:
            self._token.value = (token, now + timedelta(seconds=lifetime))
        return token

    def _as_client(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A consent call with credit's client token; once more with a new token if the bank
        no longer knows the cached one (it expired by the bank's clock, or the bank was reset)."""
        for attempt in (1, 2):
            token = self.client_token(fresh=attempt == 2)
            try:
                return self.gateway.send(method, path, headers=self.gateway.headers(
                    {"Authorization": f"Bearer {token}"}), **kwargs)
            except Refused as refused:
                if refused.status != 401 or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def redeem_code(self, code: str, code_verifier: str | None) -> dict[str, Any]:
        """The authorization_code grant, with the PKCE verifier of the consent's challenge: the
        PSU's access token, bound to one consent."""
        form = {"grant_type": "authorization_code", "code": code}
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self._token_request(form)

    # --- consents -------------------------------------------------------------------------------

    def create_consent(self, transactions_from: datetime, expires_at: datetime) -> dict[str, Any]:
        """POST account-access-consents: the consent the PSU will be asked to authorise."""
        body = self._as_client("POST", CONSENTS, json={"Data": {
            "Permissions": list(PERMISSIONS),
            "TransactionFromDateTime": transactions_from.isoformat(),
            "ExpirationDateTime": expires_at.isoformat(),
        }, "Risk": {}})
        return body["Data"]

    def consent(self, consent_id: str) -> dict[str, Any]:
        return self._as_client("GET", f"{CONSENTS}/{consent_id}")["Data"]

    def authorise(self, request: dict[str, Any]) -> dict[str, Any]:
        """The bank's headless authorise step: credit's authorisation request with the PSU's decision."""
        return self.gateway.send("POST", f"{PREFIX}/authorize", json=request, headers=self.gateway.headers())

    # --- the PSU's data -------------------------------------------------------------------------

    def _as_psu(self, access_token: str, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.gateway.send("GET", path, params=params, headers=self.gateway.headers(
            {"Authorization": f"Bearer {access_token}"}))

    def accounts(self, access_token: str) -> list[dict[str, Any]]:
        return self._as_psu(access_token, f"{PREFIX}/v3.1/aisp/accounts").get("Data", {}).get("Account", [])

    def transactions(self, access_token: str, account_id: str, since: datetime) -> list[dict[str, Any]]:
        """Every page of the account's transactions booked since `since`."""
        transactions: list[dict[str, Any]] = []
        page, pages = 1, 1
        while page <= min(pages, MAX_PAGES):
            body = self._as_psu(access_token, f"{PREFIX}/v3.1/aisp/accounts/{account_id}/transactions",
                                {"fromBookingDateTime": since.strftime("%Y-%m-%dT%H:%M:%S"), "page": page})
            transactions += body.get("Data", {}).get("Transaction", [])
            pages = int(body.get("Meta", {}).get("TotalPages", 1))
            page += 1
        return transactions
