"""Sandbox Bank's consent events (GET /_sandbox/events), with OBIE's event notification type, and
consents that expire at their ExpirationDateTime by the bank's clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.common.clock import Clock
from services.common.demo import DEMO_TPP_CLIENTS
from services.common.payments_client import PaymentsClient
from services.openbanking.main import OpenBankingSettings, create_app
from tests.openbanking.factories import SUN, Bank, bearer, error_codes

DEMO_TPP_PARTICIPANT = next(c.participant_id for c in DEMO_TPP_CLIENTS if c.client_id == "tpp_demo")
RESOURCE_UPDATE = "urn:uk:org:openbanking:events:resource-update"
REVOKED = "urn:uk:org:openbanking:events:consent-authorization-revoked"


@pytest.fixture
def bank(tmp_path: Path, clock: Clock, ledger_url: str) -> Iterator[Bank]:
    """No background runner: what expires is what each clock move's answer says fired."""
    app = create_app(OpenBankingSettings(data_dir=tmp_path / "bank", due_work_interval_seconds=0), clock=clock,
                     payments_client=PaymentsClient(ledger_url, None))
    with TestClient(app) as client:
        yield Bank(client, clock, ledger_url)


def events(bank: Bank) -> list[dict[str, Any]]:
    return bank.client.get("/_sandbox/events").json()["data"]


def advance(bank: Bank, seconds: int) -> dict[str, int]:
    moved = bank.client.post("/_sandbox/clock/advance", json={"seconds": seconds})
    assert moved.status_code == 200, moved.text
    return moved.json()["fired"]


def consent_as_shown(bank: Bank, consent_id: str) -> dict[str, Any]:
    tpp = bearer(bank.client_token())
    return bank.client.get(f"/v3.1/aisp/account-access-consents/{consent_id}", headers=tpp).json()["Data"]


def test_an_authorised_consent_is_an_event_for_its_tpp_with_obies_type(bank: Bank) -> None:
    consent = bank.ais_consent()
    bank.psu_token(consent)
    [event] = events(bank)
    assert (event["type"], event["subject_id"], event["participant_id"]) == (
        "openbanking.consent.authorised", consent, DEMO_TPP_PARTICIPANT)
    assert event["data"] == {**consent_as_shown(bank, consent), "obie_event_type": RESOURCE_UPDATE}
    assert event["data"]["Status"] == "Authorised"


def test_a_rejected_consent_is_an_event(bank: Bank) -> None:
    consent = bank.ais_consent()
    assert bank.authorise(consent, psu="psu-reject").json()["status"] == "Rejected"
    assert [(e["type"], e["data"]["Status"], e["data"]["obie_event_type"]) for e in events(bank)] == [
        ("openbanking.consent.rejected", "Rejected", RESOURCE_UPDATE)]


def test_a_revoked_consent_is_an_event_with_obies_revocation_type(bank: Bank) -> None:
    consent = bank.ais_consent()
    bank.psu_token(consent)
    revoke = {"psu_id": "wangfang", "otp": "123456"}
    assert bank.client.post(f"/psu/consents/{consent}/revoke", json=revoke).status_code == 204
    assert bank.client.post(f"/psu/consents/{consent}/revoke", json=revoke).status_code == 409  # refused: no event
    assert [(e["type"], e["data"]["Status"], e["data"]["obie_event_type"]) for e in events(bank)] == [
        ("openbanking.consent.authorised", "Authorised", RESOURCE_UPDATE),
        ("openbanking.consent.revoked", "Revoked", REVOKED)]


def test_a_decision_on_a_decided_consent_records_no_event(bank: Bank) -> None:
    consent = bank.ais_consent()
    bank.psu_token(consent)
    assert bank.authorise(consent).status_code == 409
    assert [e["type"] for e in events(bank)] == ["openbanking.consent.authorised"]


def test_a_consent_is_expired_at_its_expiration_time_with_the_event(bank: Bank) -> None:
    expires = bank.clock.now() + timedelta(hours=1)
    consent = bank.ais_consent(ExpirationDateTime=expires.isoformat())
    token = bank.psu_token(consent)
    assert advance(bank, 3599) == {}
    assert consent_as_shown(bank, consent)["Status"] == "Authorised"
    assert advance(bank, 1) == {"consent-expiry": 1}
    shown = consent_as_shown(bank, consent)
    assert shown["Status"] == "Authorised"  # OBIE v3.1.11 has no Expired: the status stays
    refused = bank.get("/v3.1/aisp/accounts", token)
    assert refused.status_code == 403 and error_codes(refused) == ["UK.OBIE.Resource.InvalidConsentStatus"]
    expired = [e for e in events(bank) if e["type"] == "openbanking.consent.expired"]
    assert [(e["subject_id"], e["data"]) for e in expired] == [(consent, {**shown, "obie_event_type": RESOURCE_UPDATE})]


def test_an_expired_consent_is_expired_once(bank: Bank) -> None:
    bank.psu_token(bank.ais_consent(ExpirationDateTime=(bank.clock.now() + timedelta(minutes=5)).isoformat()))
    assert advance(bank, 600) == {"consent-expiry": 1}
    assert advance(bank, 600) == {}
    assert [e["type"] for e in events(bank)].count("openbanking.consent.expired") == 1


def test_a_consent_never_authorised_expires_too_and_can_no_longer_be_decided(bank: Bank) -> None:
    consent = bank.ais_consent(ExpirationDateTime=(bank.clock.now() + timedelta(minutes=5)).isoformat())
    assert advance(bank, 300) == {"consent-expiry": 1}
    assert consent_as_shown(bank, consent)["Status"] == "AwaitingAuthorisation"
    assert bank.authorise(consent).status_code == 403


def test_the_expiring_magic_psus_consent_is_expired_a_minute_after_authorising(bank: Bank) -> None:
    consent = bank.funds_consent(SUN)  # psu-expire's account
    bank.psu_token(consent, psu="psu-expire")
    assert advance(bank, 60) == {"consent-expiry": 1}
    tpp = bearer(bank.client_token())
    shown = bank.client.get(f"/v3.1/cbpii/funds-confirmation-consents/{consent}", headers=tpp).json()["Data"]
    assert shown["Status"] == "Authorised"
    assert [e["type"] for e in events(bank)] == ["openbanking.consent.authorised", "openbanking.consent.expired"]
