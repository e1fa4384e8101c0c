"""Consent life cycles: every status transition, made by the TPP, the PSU or the clock."""

from __future__ import annotations

from datetime import timedelta

from tests.openbanking.factories import WALLET, ZHAO, Bank, bearer, error_codes

AAC = "/v3.1/aisp/account-access-consents"


def ais_status(bank: Bank, consent: str) -> str:
    return bank.client.get(f"{AAC}/{consent}", headers=bearer(bank.client_token())).json()["Data"]["Status"]


def test_a_new_consent_awaits_authorisation(bank: Bank) -> None:
    assert ais_status(bank, bank.ais_consent()) == "AwaitingAuthorisation"


def test_the_psu_authorising_makes_it_authorised(bank: Bank) -> None:
    consent = bank.ais_consent()
    decided = bank.authorise(consent, state="xyz")
    assert decided.json()["status"] == "Authorised"
    assert decided.json()["redirect_uri"].startswith("https://tpp.example/callback?code=")
    assert decided.json()["redirect_uri"].endswith("&state=xyz")
    assert ais_status(bank, consent) == "Authorised"


def test_the_psu_rejecting_makes_it_rejected_and_no_code_is_issued(bank: Bank) -> None:
    consent = bank.ais_consent()
    decided = bank.authorise(consent, decision="Reject")
    assert decided.json()["status"] == "Rejected" and "code" not in decided.json()
    assert "error=access_denied" in decided.json()["redirect_uri"]
    assert ais_status(bank, consent) == "Rejected"


def test_the_rejecting_magic_psu_rejects_every_consent(bank: Bank) -> None:
    consent = bank.ais_consent()
    assert bank.authorise(consent, psu="psu-reject").json()["status"] == "Rejected"
    payment = bank.payment_consent().json()["Data"]["ConsentId"]
    assert bank.authorise(payment, psu="psu-reject").json()["status"] == "Rejected"


def test_a_decided_consent_cannot_be_decided_again(bank: Bank) -> None:
    consent = bank.ais_consent()
    bank.authorise(consent)
    again = bank.authorise(consent)
    assert again.status_code == 409 and error_codes(again) == ["UK.OBIE.Resource.InvalidConsentStatus"]


def test_a_wrong_one_time_code_is_refused(bank: Bank) -> None:
    consent = bank.ais_consent()
    wrong = bank.authorise(consent, otp="000000")
    assert wrong.status_code == 403 and ais_status(bank, consent) == "AwaitingAuthorisation"


def test_a_consent_left_until_its_expiry_cannot_be_authorised(bank: Bank) -> None:
    consent = bank.ais_consent(ExpirationDateTime=(bank.clock.now() + timedelta(minutes=5)).isoformat())
    bank.clock.advance(timedelta(minutes=5))
    assert bank.authorise(consent).status_code == 403


def test_an_authorisation_code_works_once(bank: Bank) -> None:
    code = bank.authorise(bank.ais_consent()).json()["code"]
    assert bank.exchange(code).status_code == 200
    reused = bank.exchange(code)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_a_psu_cannot_share_an_account_they_do_not_hold(bank: Bank) -> None:
    refused = bank.authorise(bank.ais_consent(), account_ids=[ZHAO])
    assert refused.status_code == 403


def test_a_payment_consent_naming_another_psus_debtor_account_cannot_be_authorised(bank: Bank) -> None:
    initiation = bank.initiation(DebtorAccount={"SchemeName": "UK.OBIE.BBAN", "Identification": ZHAO})
    consent = bank.payment_consent(initiation).json()["Data"]["ConsentId"]
    assert bank.authorise(consent).status_code == 403
    token_consent = bank.payment_consent(bank.initiation(DebtorAccount={
        "SchemeName": "UK.OBIE.BBAN", "Identification": WALLET}), key="k2").json()["Data"]["ConsentId"]
    assert bank.authorise(token_consent).json()["status"] == "Authorised"


def test_funds_confirmation_consent_goes_awaiting_authorised_revoked(bank: Bank) -> None:
    consent = bank.funds_consent()
    url = f"/v3.1/cbpii/funds-confirmation-consents/{consent}"
    tpp = bearer(bank.client_token())
    assert bank.client.get(url, headers=tpp).json()["Data"]["Status"] == "AwaitingAuthorisation"
    bank.authorise(consent)
    assert bank.client.get(url, headers=tpp).json()["Data"]["Status"] == "Authorised"
    bank.client.post(f"/psu/consents/{consent}/revoke", json={"psu_id": "wangfang", "otp": "123456"})
    assert bank.client.get(url, headers=tpp).json()["Data"]["Status"] == "Revoked"
