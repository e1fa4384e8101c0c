"""Payment initiation: a consent, the PSU's yes, one real ledger transfer through the gateway."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlmodel import Session, select

from services.common.payments_client import PaymentsClient
from services.openbanking.models import DomesticPayment
from tests.openbanking.factories import COFFEE, WALLET, ZHAO, Bank, bearer, error_codes


def authorised_payment(bank: Bank, amount: str = "25.00", psu: str = "wangfang") -> tuple[str, str]:
    consent = bank.payment_consent(bank.initiation(amount)).json()["Data"]["ConsentId"]
    return consent, bank.psu_token(consent, psu)


def payment_consent_status(bank: Bank, consent: str) -> str:
    response = bank.client.get(f"/v3.1/pisp/domestic-payment-consents/{consent}", headers=bearer(bank.client_token()))
    return response.json()["Data"]["Status"]


def test_a_payment_moves_money_in_the_ledger_and_consumes_the_consent(bank: Bank) -> None:
    before_payer, before_payee = bank.balance(WALLET), bank.balance(COFFEE)
    consent, token = authorised_payment(bank)
    paid = bank.pay(consent, token)
    assert paid.status_code == 201 and paid.json()["Data"]["Status"] == "AcceptedCreditSettlementCompleted"
    assert Decimal(bank.balance(WALLET)) == Decimal(before_payer) - Decimal("25.00")
    # The coffee shop is a merchant: it receives 25.00 less the 0.6% fee (0.15).
    assert Decimal(bank.balance(COFFEE)) == Decimal(before_payee) + Decimal("24.85")
    assert payment_consent_status(bank, consent) == "Consumed"


def test_a_consumed_consent_cannot_pay_again(bank: Bank) -> None:
    consent, token = authorised_payment(bank)
    bank.pay(consent, token, key="first")
    again = bank.pay(consent, token, key="second")
    assert again.status_code == 403 and error_codes(again) == ["UK.OBIE.Resource.InvalidConsentStatus"]


def test_a_retry_with_the_same_idempotency_key_returns_the_same_payment_and_pays_once(bank: Bank) -> None:
    consent, token = authorised_payment(bank)
    before = bank.balance(WALLET)
    first, replay = bank.pay(consent, token), bank.pay(consent, token)
    assert replay.status_code == 201 and replay.json() == first.json()
    assert Decimal(bank.balance(WALLET)) == Decimal(before) - Decimal("25.00")


def test_the_same_idempotency_key_with_another_body_is_refused(bank: Bank) -> None:
    first = bank.payment_consent(bank.initiation("10.00"), key="same")
    assert bank.payment_consent(bank.initiation("10.00"), key="same").json() == first.json()
    other = bank.payment_consent(bank.initiation("11.00"), key="same")
    assert other.status_code == 409 and error_codes(other) == ["UK.OBIE.Header.Invalid"]


def test_the_idempotency_key_is_required_for_payments(bank: Bank) -> None:
    response = bank.client.post("/v3.1/pisp/domestic-payment-consents", headers=bearer(bank.client_token()),
                                json={"Data": {"Initiation": bank.initiation()}, "Risk": {}})
    assert response.status_code == 400 and error_codes(response) == ["UK.OBIE.Header.Missing"]


def test_a_payment_must_repeat_the_consented_initiation(bank: Bank) -> None:
    consent, token = authorised_payment(bank)
    changed = bank.pay(consent, token, bank.initiation("99.00"))
    assert changed.status_code == 403 and error_codes(changed) == ["UK.OBIE.Resource.ConsentMismatch"]


def test_a_payment_beyond_the_balance_is_rejected_and_nothing_moves(bank: Bank) -> None:
    consent, token = authorised_payment(bank, "5000.00", psu="zhaolei")
    funds = bank.client.get(f"/v3.1/pisp/domestic-payment-consents/{consent}/funds-confirmation",
                            headers=bearer(token))
    assert funds.json()["Data"]["FundsAvailableResult"]["FundsAvailable"] is False
    before = bank.balance(ZHAO)
    paid = bank.pay(consent, token, bank.initiation("5000.00"))
    assert paid.status_code == 201 and paid.json()["Data"]["Status"] == "Rejected"
    assert bank.balance(ZHAO) == before


def test_funds_confirmation_says_yes_when_the_account_can_pay(bank: Bank) -> None:
    consent, token = authorised_payment(bank)
    funds = bank.client.get(f"/v3.1/pisp/domestic-payment-consents/{consent}/funds-confirmation",
                            headers=bearer(token))
    assert funds.status_code == 200 and funds.json()["Data"]["FundsAvailableResult"]["FundsAvailable"] is True


def test_a_payment_the_ledger_did_not_answer_stays_pending_then_settles_once(bank: Bank, ledger_url: str) -> None:
    consent, token = authorised_payment(bank)
    app = bank.client.app
    working = app.state.payments
    app.state.payments = PaymentsClient("http://127.0.0.1:9", None, timeout=0.5)  # nothing listens there
    pending = bank.pay(consent, token)
    assert pending.json()["Data"]["Status"] == "Pending"
    app.state.payments = working
    before = bank.balance(WALLET)
    payment_id = pending.json()["Data"]["DomesticPaymentId"]
    tpp = bearer(bank.client_token())
    settled = bank.client.get(f"/v3.1/pisp/domestic-payments/{payment_id}", headers=tpp)
    assert settled.json()["Data"]["Status"] == "AcceptedCreditSettlementCompleted"
    bank.client.get(f"/v3.1/pisp/domestic-payments/{payment_id}", headers=tpp)
    assert Decimal(bank.balance(WALLET)) == Decimal(before) - Decimal("25.00")


def test_the_payment_is_recorded_before_its_money_moves(bank: Bank) -> None:
    consent, token = authorised_payment(bank)
    app = bank.client.app
    ledger = app.state.payments
    seen_when_moving: list[list[str]] = []

    class WatchedLedger:
        """The real ledger, noting what another connection can already read as money moves."""

        def __getattr__(self, name: str) -> Any:
            return getattr(ledger, name)

        def transfer(self, **call: Any) -> dict[str, Any]:
            with Session(app.state.db.reader) as other:
                rows = other.exec(select(DomesticPayment).where(DomesticPayment.consent_id == consent)).all()
                seen_when_moving.append([row.status for row in rows])
            return ledger.transfer(**call)

    app.state.payments = WatchedLedger()
    paid = bank.pay(consent, token)
    assert paid.json()["Data"]["Status"] == "AcceptedCreditSettlementCompleted"
    assert seen_when_moving == [["Pending"]]  # committed (record_first) before the transfer was sent


def test_the_tpp_reads_its_payment_with_a_client_token(bank: Bank) -> None:
    consent, token = authorised_payment(bank)
    payment_id = bank.pay(consent, token).json()["Data"]["DomesticPaymentId"]
    read = bank.client.get(f"/v3.1/pisp/domestic-payments/{payment_id}", headers=bearer(bank.client_token()))
    assert read.status_code == 200 and read.json()["Data"]["ConsentId"] == consent


def test_the_creditors_postal_address_is_taken_echoed_and_paid(bank: Bank) -> None:
    """OBIE's optional CreditorPostalAddress: the bank keeps it with the consent and echoes it
    (the gateway screens its Country)."""
    address = {"AddressType": "Business", "StreetName": "Nanluoguxiang", "BuildingNumber": "12",
               "TownName": "Beijing", "Country": "CN", "AddressLine": ["Dongcheng District"]}
    initiation = bank.initiation(CreditorPostalAddress=address)
    created = bank.payment_consent(initiation)
    assert created.status_code == 201, created.text
    assert created.json()["Data"]["Initiation"]["CreditorPostalAddress"] == address
    consent = created.json()["Data"]["ConsentId"]
    paid = bank.pay(consent, bank.psu_token(consent), initiation)
    assert paid.status_code == 201 and paid.json()["Data"]["Initiation"]["CreditorPostalAddress"] == address
    wrong = bank.payment_consent(bank.initiation(CreditorPostalAddress={"Country": "China"}), key="other")
    assert wrong.status_code == 400, wrong.text
