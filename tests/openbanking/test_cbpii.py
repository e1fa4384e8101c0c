"""Confirmation of funds: a yes or no on one consented account; nothing is held."""

from __future__ import annotations

from datetime import timedelta

from tests.openbanking.factories import WALLET, ZHAO, Bank, bearer, error_codes


def test_funds_are_confirmed_up_to_the_balance(bank: Bank) -> None:
    consent = bank.funds_consent()
    token = bank.psu_token(consent)
    yes = bank.confirm_funds(consent, token, "100.00")
    assert yes.status_code == 201 and yes.json()["Data"]["FundsAvailable"] is True
    no = bank.confirm_funds(consent, token, "999999.00")
    assert no.json()["Data"]["FundsAvailable"] is False
    assert bank.balance(WALLET) == "32000.00"  # a confirmation holds nothing


def test_a_low_balance_customer_gets_a_no(bank: Bank) -> None:
    consent = bank.funds_consent(ZHAO)
    token = bank.psu_token(consent, psu="zhaolei")
    assert bank.confirm_funds(consent, token, "500.00").json()["Data"]["FundsAvailable"] is False


def test_a_deleted_funds_consent_refuses_confirmations(bank: Bank) -> None:
    consent = bank.funds_consent()
    token = bank.psu_token(consent)
    deleted = bank.client.delete(f"/v3.1/cbpii/funds-confirmation-consents/{consent}",
                                 headers=bearer(bank.client_token()))
    assert deleted.status_code == 204
    refused = bank.confirm_funds(consent, token, "1.00")
    assert refused.status_code == 403 and error_codes(refused) == ["UK.OBIE.Resource.InvalidConsentStatus"]


def test_an_expired_funds_consent_refuses_confirmations(bank: Bank) -> None:
    consent = bank.funds_consent(ExpirationDateTime=(bank.clock.now() + timedelta(days=1)).isoformat())
    token = bank.psu_token(consent)
    bank.clock.advance(timedelta(days=1))
    assert bank.confirm_funds(consent, token, "1.00").status_code == 403
