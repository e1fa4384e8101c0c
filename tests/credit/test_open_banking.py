"""The pull path through the real gateway: credit is a TPP at Sandbox Bank with its own client.

Credit creates the account-access consent with its own client-credentials token, the applicant
(the PSU) authorises it at the bank (credit relays the decision with its PKCE challenge), and the
application carries the consent id and the bank's code. Credit swaps the code with its own client
credentials and the consent's PKCE verifier, and reads with its own gateway key, so the bank's
rule that a token works only for the participant that obtained it holds.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

import httpx
import pytest

from services.common.demo import DEMO_PARTICIPANTS, SERVICE_PARTICIPANT_KEYS
from services.credit.gateway import Refused
from services.credit.consents import refused_read
from tests.credit.conftest import (
    CREDIT_PARTICIPANT,
    LENDER_KEY,
    TPP_KEY,
    application,
    sandbox_through_gateway,
)

WANG_FANG = "acc_00000000000000000000000008"  # PSU wangfang's everyday wallet at Sandbox Bank
WANG_FANG_SAVINGS = "acc_00000000000000000000000b01"
ZHAO_LEI = "acc_00000000000000000000000b02"  # PSU zhaolei
SUN_YUE = "acc_00000000000000000000000b03"  # magic PSU psu-expire: consents end 60 s after authorising
LI_WEI = "acc_00000000000000000000000001"  # a wallet that pays Wang Fang
WALLET_KEY = "sbx_demo_wallet_key"
LENDER_PARTICIPANT = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == LENDER_KEY)


def new_consent(lender: httpx.Client) -> dict[str, Any]:
    """(a) The lender's front end asks credit for a consent; credit creates it at the bank."""
    response = lender.post("/open-banking/consents")
    assert response.status_code == 201, response.text
    return response.json()


def psu_decides(lender: httpx.Client, consent: dict[str, Any], psu_id: str, **extra: Any) -> dict[str, Any]:
    """(b) The applicant logs in at the bank and decides, as credit's instructions say (credit
    relays it to the bank with its PKCE challenge)."""
    step = consent["psu_authorisation"]
    response = lender.post(step["url"], json={**step["body"], "psu_id": psu_id, "otp": "123456", **extra})
    assert response.status_code == 200, response.text
    return response.json()


def ob_application(consent_id: str, code: str, account_id: str = WANG_FANG) -> dict[str, Any]:
    """(c) The application carries the consent and the bank's code, never a token."""
    return application(applicant_type="individual", applicant_name="Wang Fang", account_id=account_id,
                       cash_flow={"source": "open_banking", "consent_id": consent_id,
                                  "authorization_code": code, "account_id": account_id})


def _monthly_flow(credits_by_month: list[Decimal]) -> tuple[str, str]:
    """What the scorecard should see: the average monthly credit and its coefficient of variation."""
    minor = [int(c * 100) for c in credits_by_month]
    average = mean(minor)
    return f"{Decimal(int(average)).scaleb(-2):.2f}", str(round(100 * pstdev(minor) / average))


def test_credit_reads_the_applicants_transactions_as_a_tpp_through_the_gateway(tmp_path: Path) -> None:
    with sandbox_through_gateway(tmp_path) as sandbox, sandbox.client(LENDER_KEY, "/credit") as lender, \
            sandbox.client(WALLET_KEY, "/payments") as wallet:
        # Three months of Wang Fang's history: her opening balance in January (the clock starts on
        # 5 January 2026), then money from Li Wei in February and March.
        for days, paid in ((31, "2000.00"), (28, "3000.00")):
            sandbox.clock.advance(timedelta(days=days))
            sent = wallet.post("/transfers", headers={"Idempotency-Key": f"li-wei-{days}"}, json={
                "from_account_id": LI_WEI, "to_account_id": WANG_FANG,
                "amount": {"amount": paid, "currency": "CNY"}, "description": "Wages"})
            assert sent.status_code == 201, sent.text

        consent = new_consent(lender)
        assert consent["status"] == "AwaitingAuthorisation"
        assert consent["client_id"] == "tpp_credit"
        assert consent["permissions"] == ["ReadAccountsBasic", "ReadTransactionsBasic", "ReadTransactionsCredits"]
        assert consent["psu_authorisation"]["url"] == (
            f"{sandbox.base}/credit/open-banking/consents/{consent['consent_id']}/authorisation")

        decided = psu_decides(lender, consent, "wangfang", account_ids=[WANG_FANG])
        assert decided["status"] == "Authorised"
        assert decided["redirect_uri"].startswith("https://lender.example/open-banking/callback?code=")
        shown = lender.get(f"/open-banking/consents/{consent['consent_id']}").json()
        assert (shown["status"], shown["psu_authorisation"]) == ("Authorised", None)

        response = lender.post("/applications", json=ob_application(consent["consent_id"], decided["code"]))
        assert response.status_code == 201, response.text
        app = response.json()
        assert app["data_source"] == "open_banking"
        # The figures come from the booked credits: 32,000.00 opening balance (January), 2,000.00
        # (February), 3,000.00 + the bank's demo red packet of 88.88 from Zhao Lei (March).
        inflow, volatility = _monthly_flow([Decimal("32000.00"), Decimal("2000.00"), Decimal("3088.88")])
        assert (inflow, volatility) == ("12362.96", "112")
        points = {p["characteristic"]: p["value"] for p in app["score"]["points"]}
        assert (points["monthly_inflow"], points["inflow_volatility_pct"]) == (inflow, volatility)
        assert app["decision"]["outcome"] in ("approve", "refer", "decline")

        # The gateway's audit log: credit's own key made every call to the bank, each on the
        # lender's behalf (the lender is the participant counted, credit the hop's sender).
        entries = sandbox.audit(service="open-banking")
        by_credit = [(e["method"], e["path"], e["status"]) for e in entries
                     if (e["participant_id"], e["via"]) == (LENDER_PARTICIPANT, CREDIT_PARTICIPANT)]
        cid = consent["consent_id"]
        assert by_credit == [
            ("POST", "/open-banking/oauth2/token", 200),  # client credentials
            ("POST", "/open-banking/v3.1/aisp/account-access-consents", 201),
            ("POST", "/open-banking/authorize", 200),  # the applicant's decision, with credit's PKCE challenge
            ("GET", f"/open-banking/v3.1/aisp/account-access-consents/{cid}", 200),  # the status shown above
            ("GET", f"/open-banking/v3.1/aisp/account-access-consents/{cid}", 200),  # checked before use
            ("POST", "/open-banking/oauth2/token", 200),  # the code swapped for the PSU's token
            ("GET", "/open-banking/v3.1/aisp/accounts", 200),
            ("GET", f"/open-banking/v3.1/aisp/accounts/{WANG_FANG}/transactions", 200),
        ]
        # Nobody else touched the bank, and the lender's front end only ever called credit: it
        # never held a token of the applicant's.
        assert {(e["participant_id"], e["via"]) for e in entries} == {(LENDER_PARTICIPANT, CREDIT_PARTICIPANT)}
        assert all(e["path"].startswith("/credit/")
                   for e in sandbox.audit(participant_id=LENDER_PARTICIPANT) if e["via"] is None)


def test_every_refusal_names_its_reason_and_stores_nothing(tmp_path: Path) -> None:
    with sandbox_through_gateway(tmp_path) as sandbox, sandbox.client(LENDER_KEY, "/credit") as lender:
        def refused(body: dict[str, Any]) -> dict[str, Any]:
            response = lender.post("/applications", json=body)
            assert response.status_code == 409, response.text
            problem = response.json()
            assert problem["type"].startswith("urn:fintech-sandbox:problem:")
            return problem

        # Not yet authorised: the applicant has not been to the bank.
        waiting = new_consent(lender)
        problem = refused(ob_application(waiting["consent_id"], "sbx_code_not-yet"))
        assert problem["type"].endswith(":consent-not-authorised")
        assert problem["consent_status"] == "AwaitingAuthorisation"

        # The bank refuses the applicant's login: credit says so, and the consent still waits.
        wrong = lender.post(waiting["psu_authorisation"]["url"], json={"psu_id": "wangfang", "otp": "000000"})
        assert (wrong.status_code, wrong.json()["type"]) == (409, "urn:fintech-sandbox:problem:psu-authorisation-refused")
        assert "wrong one-time code" in wrong.json()["detail"]
        assert lender.get(f"/open-banking/consents/{waiting['consent_id']}").json()["status"] == "AwaitingAuthorisation"

        # Rejected by the applicant (the magic PSU rejects everything).
        rejected = new_consent(lender)
        assert psu_decides(lender, rejected, "psu-reject")["status"] == "Rejected"
        assert refused(ob_application(rejected["consent_id"], "sbx_code_none"))["type"].endswith(":consent-rejected")

        # Wrong PSU: Zhao Lei authorised it, so Wang Fang's account is not released.
        zhao = new_consent(lender)
        code = psu_decides(lender, zhao, "zhaolei")["code"]
        problem = refused(ob_application(zhao["consent_id"], code, WANG_FANG))
        assert problem["type"].endswith(":account-not-in-consent")
        assert problem["shared_account_ids"] == [ZHAO_LEI]

        # Revoked at the bank by the applicant after authorising.
        revoked = new_consent(lender)
        code = psu_decides(lender, revoked, "wangfang")["code"]
        # (The bank takes a PSU's revocation through the gateway only from its client's holder.)
        with sandbox.client(SERVICE_PARTICIPANT_KEYS["credit"], "/open-banking") as bank_app:
            bank_app.post(f"/psu/consents/{revoked['consent_id']}/revoke",
                          json={"psu_id": "wangfang", "otp": "123456"}).raise_for_status()
        assert refused(ob_application(revoked["consent_id"], code))["type"].endswith(":consent-revoked")

        # Expired: the magic PSU's consents end 60 seconds after she authorises.
        expiring = new_consent(lender)
        code = psu_decides(lender, expiring, "psu-expire")["code"]
        sandbox.clock.advance(timedelta(seconds=61))
        assert refused(ob_application(expiring["consent_id"], code, SUN_YUE))["type"].endswith(":consent-expired")

        # A code for another consent (the bank refuses it: credit sends the first consent's PKCE
        # verifier, which is not the one the code was issued against), and a code used twice.
        first, second = new_consent(lender), new_consent(lender)
        first_code = psu_decides(lender, first, "wangfang")["code"]
        second_code = psu_decides(lender, second, "wangfang")["code"]
        problem = refused(ob_application(first["consent_id"], second_code))
        assert problem["type"].endswith(":authorization-code-invalid")
        assert lender.post("/applications", json=ob_application(first["consent_id"], first_code)).status_code == 201
        assert refused(ob_application(first["consent_id"], first_code))["type"].endswith(
            ":authorization-code-invalid")

        # A consent credit did not create: another TPP's, or none at all.
        with sandbox.client(TPP_KEY, "/open-banking") as tpp:
            token = tpp.post("/oauth2/token", auth=("tpp_demo", "sbx_demo_tpp_secret"),
                             data={"grant_type": "client_credentials", "scope": "accounts"}).json()["access_token"]
            theirs = tpp.post("/v3.1/aisp/account-access-consents", headers={"Authorization": f"Bearer {token}"},
                              json={"Data": {"Permissions": ["ReadAccountsBasic"]}, "Risk": {}}).json()
        theirs_id = theirs["Data"]["ConsentId"]
        assert refused(ob_application(theirs_id, "sbx_code_x"))["type"].endswith(":consent-not-found")
        assert lender.get(f"/open-banking/consents/{theirs_id}").status_code == 404
        unknown = "aac_00000000000000000000000000"
        assert refused(ob_application(unknown, "sbx_code_x"))["type"].endswith(":consent-not-found")

        # The caller's bearer token is not an input any more: credit gets its own.
        borrowed = ob_application(first["consent_id"], first_code)
        borrowed["cash_flow"]["access_token"] = "sbx_at_someone-elses"
        assert lender.post("/applications", json=borrowed).status_code == 422

        stored = lender.get("/applications").json()["data"]
        assert len(stored) == 1  # only the one good application was decided and stored
        assert stored[0]["data_source"] == "open_banking"


@pytest.mark.parametrize(("message", "slug"), [
    ("Consent aac_x expired at 2026-01-05T09:01:00Z.", "consent-expired"),
    ("Consent aac_x is Revoked, not Authorised.", "consent-revoked"),
    ("Consent aac_x was deleted by the TPP.", "consent-revoked"),
    ("Consent aac_x is Rejected, not Authorised.", "consent-unusable"),
])
def test_a_read_the_bank_refuses_is_explained(message: str, slug: str) -> None:
    # The bank's clock can run ahead of credit's: then the bank, not credit, finds the consent expired.
    problem = {"Code": "403", "Errors": [{"ErrorCode": "UK.OBIE.Resource.InvalidConsentStatus", "Message": message}]}
    explained = refused_read(Refused(403, problem), "aac_x")
    assert (explained.status, explained.slug, explained.extras["consent_id"]) == (409, slug, "aac_x")
    assert explained.extras["bank_error"] == problem
