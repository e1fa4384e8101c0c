"""A TPP's moves against Sandbox Bank, one method each, so tests read like the journey."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from services.common.clock import Clock
from services.common.demo import SERVICE_PARTICIPANT_KEYS
from services.common.payments_client import PaymentsClient
from services.openbanking.main import OpenBankingSettings
from services.openbanking.main import create_app as create_bank_app
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.servers import serve

DEMO = ("tpp_demo", "sbx_demo_tpp_secret")
OTHER = ("tpp_other", "sbx_other_tpp_secret")
WALLET = "acc_00000000000000000000000008"
SAVINGS = "acc_00000000000000000000000b01"
ZHAO = "acc_00000000000000000000000b02"
SUN = "acc_00000000000000000000000b03"
COFFEE = "acc_00000000000000000000000b04"
ALL_AIS = ["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail", "ReadTransactionsCredits",
           "ReadTransactionsDebits"]


# The TPP's PKCE verifier: its S256 digest goes to /authorize, the verifier with the code.
VERIFIER = "dBjftJeZ4CVP-mB92K9uhvvaDfYZ0FSrTwNdxSpIRVk"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Bank:
    def __init__(self, client: TestClient, clock: Clock, ledger_url: str) -> None:
        self.client = client
        self.clock = clock
        # A generous timeout: on a loaded 2-core machine a real server's answer can take seconds.
        self.ledger = httpx.Client(base_url=ledger_url + "/payments", timeout=30)

    # --- tokens ---
    def client_token(self, tpp: tuple[str, str] = DEMO, scope: str = "accounts payments fundsconfirmations") -> str:
        response = self.client.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": tpp[0],
                                                           "client_secret": tpp[1], "scope": scope})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def exchange(self, code: str, tpp: tuple[str, str] = DEMO, **extra: str) -> httpx.Response:
        """The authorization_code grant; `code_verifier` is the factory's unless given (None: left out)."""
        form = {"grant_type": "authorization_code", "code": code, "code_verifier": VERIFIER, **extra}
        return self.client.post("/oauth2/token", data={k: v for k, v in form.items() if v is not None}, auth=tpp)

    def authorise(self, consent_id: str, psu: str = "wangfang", tpp: tuple[str, str] = DEMO,
                  **extra: Any) -> httpx.Response:
        return self.client.post("/authorize", json={
            "consent_id": consent_id, "client_id": tpp[0], "psu_id": psu, "otp": "123456",
            "code_challenge": s256(VERIFIER), "code_challenge_method": "S256", **extra})

    def psu_token(self, consent_id: str, psu: str = "wangfang", tpp: tuple[str, str] = DEMO, **extra: Any) -> str:
        decided = self.authorise(consent_id, psu, tpp, **extra)
        assert decided.status_code == 200, decided.text
        token = self.exchange(decided.json()["code"], tpp)
        assert token.status_code == 200, token.text
        return token.json()["access_token"]

    # --- AISP ---
    def ais_consent(self, permissions: list[str] | None = None, tpp: tuple[str, str] = DEMO, **data: Any) -> str:
        response = self.client.post("/v3.1/aisp/account-access-consents", headers=bearer(self.client_token(tpp)),
                                    json={"Data": {"Permissions": permissions or ALL_AIS, **data}, "Risk": {}})
        assert response.status_code == 201, response.text
        return response.json()["Data"]["ConsentId"]

    def ais_token(self, permissions: list[str] | None = None, psu: str = "wangfang", **data: Any) -> str:
        return self.psu_token(self.ais_consent(permissions, **data), psu)

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return self.client.get(path, headers=bearer(token), params=params)

    # --- PISP ---
    def initiation(self, amount: str = "25.00", creditor: str = COFFEE, **extra: Any) -> dict[str, Any]:
        return {"InstructionIdentification": "INSTR-1", "EndToEndIdentification": "E2E-1",
                "InstructedAmount": {"Amount": amount, "Currency": "CNY"},
                "CreditorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": creditor, "Name": "Payee"},
                **extra}

    def payment_consent(self, initiation: dict[str, Any] | None = None, tpp: tuple[str, str] = DEMO,
                        key: str = "consent-key-1") -> httpx.Response:
        return self.client.post("/v3.1/pisp/domestic-payment-consents",
                                headers={**bearer(self.client_token(tpp)), "x-idempotency-key": key},
                                json={"Data": {"Initiation": initiation or self.initiation()}, "Risk": {}})

    def pay(self, consent_id: str, token: str, initiation: dict[str, Any] | None = None,
            key: str = "payment-key-1") -> httpx.Response:
        return self.client.post("/v3.1/pisp/domestic-payments", headers={**bearer(token), "x-idempotency-key": key},
                                json={"Data": {"ConsentId": consent_id, "Initiation": initiation or self.initiation()},
                                      "Risk": {}})

    # --- CBPII ---
    def funds_consent(self, account: str = WALLET, tpp: tuple[str, str] = DEMO, **data: Any) -> str:
        response = self.client.post("/v3.1/cbpii/funds-confirmation-consents", headers=bearer(self.client_token(tpp)),
                                    json={"Data": {"DebtorAccount": {"SchemeName": "UK.OBIE.BBAN",
                                                                     "Identification": account}, **data}})
        assert response.status_code == 201, response.text
        return response.json()["Data"]["ConsentId"]

    def confirm_funds(self, consent_id: str, token: str, amount: str) -> httpx.Response:
        return self.client.post("/v3.1/cbpii/funds-confirmations", headers=bearer(token), json={"Data": {
            "ConsentId": consent_id, "Reference": "Purchase01",
            "InstructedAmount": {"Amount": amount, "Currency": "CNY"}}})

    # --- the ledger, as a user would check it ---
    def balance(self, account_id: str) -> str:
        return self.ledger.get(f"/accounts/{account_id}").json()["balance"]["amount"]

    def ledger_transfer(self, source: str, target: str, amount: str, description: str) -> None:
        response = self.ledger.post("/transfers", json={"from_account_id": source, "to_account_id": target,
                                                        "amount": {"amount": amount, "currency": "CNY"},
                                                        "description": description})
        assert response.status_code == 201, response.text


def error_codes(response: httpx.Response) -> list[str]:
    return [e["ErrorCode"] for e in response.json()["Errors"]]


@contextmanager
def bank_behind_gateway(tmp_path: Path) -> Iterator[str]:
    """The real gateway in front of the bank and payments, served on a loopback port (its URL);
    the bank reaches the ledger back through it with its own service key, as in `make run`."""
    from sandbox.gateway.main import GatewaySettings
    from sandbox.gateway.main import create_app as create_gateway_app

    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    bank = create_bank_app(OpenBankingSettings(data_dir=tmp_path / "bank"),
                           payments_client=PaymentsClient("http://127.0.0.1:9", None))
    gateway = create_gateway_app(GatewaySettings(data_dir=tmp_path / "gateway"), transports={
        "payments": httpx.ASGITransport(app=payments), "openbanking": httpx.ASGITransport(app=bank)})
    with serve(gateway) as base:
        bank.state.payments = PaymentsClient(base, SERVICE_PARTICIPANT_KEYS["openbanking"])
        yield base
