"""The pull path: the applicant's cash flow read from Sandbox Bank with an AISP consent."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from services.common.clock import Clock
from services.openbanking.main import OpenBankingSettings
from services.openbanking.main import create_app as create_bank_app
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.credit.conftest import application, credit_app
from tests.support.servers import prefix_router, serve

WANG_FANG = "acc_00000000000000000000000008"


def _consented_token(base: str, account_id: str) -> tuple[str, str]:
    """Run the OBIE journey headlessly as the demo TPP: consent, PSU authorises, code for token."""
    auth = ("tpp_demo", "sbx_demo_tpp_secret")
    client_token = httpx.post(f"{base}/open-banking/oauth2/token", auth=auth,
                              data={"grant_type": "client_credentials", "scope": "accounts"}).json()["access_token"]
    consent = httpx.post(
        f"{base}/open-banking/v3.1/aisp/account-access-consents",
        headers={"Authorization": f"Bearer {client_token}"},
        json={"Data": {"Permissions": ["ReadAccountsBasic", "ReadTransactionsBasic", "ReadTransactionsCredits",
                                       "ReadTransactionsDebits", "ReadTransactionsDetail"]}, "Risk": {}},
    )
    consent.raise_for_status()
    consent_id = consent.json()["Data"]["ConsentId"]
    code = httpx.post(f"{base}/open-banking/authorize", json={
        "consent_id": consent_id, "client_id": "tpp_demo", "psu_id": "wangfang", "otp": "123456",
        "account_ids": [account_id]}).json()["code"]
    token = httpx.post(f"{base}/open-banking/oauth2/token", auth=auth,
                       data={"grant_type": "authorization_code", "code": code}).json()["access_token"]
    return consent_id, token


def test_an_applicant_is_scored_from_transactions_read_with_a_consent(tmp_path: Path) -> None:
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    with serve(prefix_router({"/payments": payments})) as ledger_base:
        bank = create_bank_app(OpenBankingSettings(data_dir=tmp_path / "bank", gateway_url=ledger_base))
        with serve(prefix_router({"/payments": payments, "/open-banking": bank})) as base, TestClient(
            credit_app(tmp_path, httpx.Client(base_url=base), clock=Clock())  # the bank's time
        ) as credit:
            consent_id, token = _consented_token(base, WANG_FANG)
            body = application(applicant_type="individual", applicant_name="Wang Fang", account_id=WANG_FANG,
                               cash_flow={"source": "open_banking", "consent_id": consent_id,
                                          "account_id": WANG_FANG, "access_token": token})
            response = credit.post("/applications", json=body)
            assert response.status_code == 201, response.text
            decided = response.json()
            assert decided["data_source"] == "open_banking"
            inflow = next(p for p in decided["score"]["points"] if p["characteristic"] == "monthly_inflow")
            assert float(inflow["value"]) > 0  # Wang Fang's salary and other credits

            bad = credit.post("/applications", json=body | {"cash_flow": body["cash_flow"] | {"access_token": "nope"}})
            assert bad.status_code == 409
            assert bad.json()["type"].endswith("consent-unusable")
