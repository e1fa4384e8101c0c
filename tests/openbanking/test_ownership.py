"""Clients belong to a participant, and so does everything made with them; the authorization
server's own rules (PKCE S256, single-use codes, exact redirect URIs).

The attack of issue 10, replayed through the real gateway: a second participant used `tpp_demo`'s
secret, read Demo TPP's consent, authorised it as Wang Fang and read her balance. Each step fails.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.demo import DEMO_REGULATOR_KEY, DEMO_TPP
from tests.openbanking.factories import ALL_AIS, VERIFIER, WALLET, Bank, bank_behind_gateway, bearer, error_codes, s256

AAC = "/v3.1/aisp/account-access-consents"
DEMO_SECRET = ("tpp_demo", "sbx_demo_tpp_secret")
CALLBACK = "https://tpp.example/callback"  # tpp_demo's registered redirect URI


# --- through the gateway: another participant --------------------------------------------------

@dataclass
class Door:
    """Sandbox Bank behind the real gateway, as Demo TPP and as a second open-banking firm."""

    demo: httpx.Client  # Demo TPP's key
    rival: httpx.Client  # another participant's key
    rival_id: str

    def client_token(self, as_: httpx.Client, client: tuple[str, str]) -> httpx.Response:
        return as_.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=client)

    def consent(self, as_: httpx.Client, token: str) -> str:
        created = as_.post(AAC, headers=bearer(token), json={"Data": {"Permissions": ALL_AIS}, "Risk": {}})
        assert created.status_code == 201, created.text
        return created.json()["Data"]["ConsentId"]

    def authorise(self, as_: httpx.Client, consent_id: str, client_id: str, **extra: Any) -> httpx.Response:
        return as_.post("/authorize", json={
            "consent_id": consent_id, "client_id": client_id, "psu_id": "wangfang", "otp": "123456",
            "code_challenge": s256(VERIFIER), "code_challenge_method": "S256", **extra})

    def psu_token(self, as_: httpx.Client, client: tuple[str, str], code: str) -> httpx.Response:
        return as_.post("/oauth2/token", auth=client, data={
            "grant_type": "authorization_code", "code": code, "code_verifier": VERIFIER})


pytestmark = pytest.mark.skipif(importlib.util.find_spec("sandbox.gateway") is None, reason="gateway not built")


@pytest.fixture
def door(tmp_path: Path) -> Iterator[Door]:
    with bank_behind_gateway(tmp_path) as base:
        with httpx.Client(base_url=base, headers={"X-API-Key": DEMO_REGULATOR_KEY}, timeout=30) as regulator:
            admitted = regulator.post("/sandbox/participants", json={
                "name": "Rival TPP", "services": ["open-banking"],
                "limits": {"max_single_transaction": "10000.00", "daily_volume": "100000.00",
                           "max_customers": 20, "rate_limit_per_minute": 600}})
            assert admitted.status_code == 201, admitted.text
        rival_key = admitted.json()["api_key"]
        with httpx.Client(base_url=base + "/open-banking", headers={"X-API-Key": "sbx_demo_tpp_key"},
                          timeout=30) as demo, \
                httpx.Client(base_url=base + "/open-banking", headers={"X-API-Key": rival_key}, timeout=30) as rival:
            yield Door(demo, rival, admitted.json()["id"])


def rival_client(door: Door) -> tuple[str, str]:
    """The rival registers a client of its own through the gateway: it belongs to the rival."""
    registered = door.rival.post("/register", json={"client_name": "Rival App",
                                                    "redirect_uri": "https://rival.example/cb"})
    assert registered.status_code == 201, registered.text
    assert registered.json()["participant_id"] == door.rival_id
    return registered.json()["client_id"], registered.json()["client_secret"]


def test_another_participant_with_tpp_demos_secret_gets_no_token(door: Door) -> None:
    stolen = door.client_token(door.rival, DEMO_SECRET)
    assert stolen.status_code == 401 and stolen.json()["error"] == "invalid_client"
    assert "access_token" not in stolen.json()
    assert door.client_token(door.demo, DEMO_SECRET).status_code == 200  # Demo TPP's own key still may


def test_another_participant_does_not_see_demo_tpps_consent(door: Door) -> None:
    consent = door.consent(door.demo, door.client_token(door.demo, DEMO_SECRET).json()["access_token"])
    own_token = door.client_token(door.rival, rival_client(door)).json()["access_token"]
    read = door.rival.get(f"{AAC}/{consent}", headers=bearer(own_token))
    assert read.status_code == 404 and error_codes(read) == ["UK.OBIE.Resource.NotFound"]
    assert door.rival.delete(f"{AAC}/{consent}", headers=bearer(own_token)).status_code == 404


def test_another_participant_cannot_authorise_demo_tpps_consent(door: Door) -> None:
    demo_token = door.client_token(door.demo, DEMO_SECRET).json()["access_token"]
    consent = door.consent(door.demo, demo_token)
    mine = rival_client(door)
    for client_id in (mine[0], "tpp_demo"):  # its own client, or naming Demo TPP's
        refused = door.authorise(door.rival, consent, client_id)
        assert refused.status_code == 404 and error_codes(refused) == ["UK.OBIE.Resource.NotFound"]
        assert "code" not in refused.json()
    shown = door.demo.get(f"{AAC}/{consent}", headers=bearer(demo_token)).json()
    assert shown["Data"]["Status"] == "AwaitingAuthorisation"  # untouched


def test_a_stolen_token_reads_nothing_for_another_participant(door: Door) -> None:
    demo_token = door.client_token(door.demo, DEMO_SECRET).json()["access_token"]
    consent = door.consent(door.demo, demo_token)
    code = door.authorise(door.demo, consent, "tpp_demo").json()["code"]
    psu_token = door.psu_token(door.demo, DEMO_SECRET, code).json()["access_token"]
    assert door.demo.get(f"/v3.1/aisp/accounts/{WALLET}/balances", headers=bearer(psu_token)).status_code == 200

    for token, path in ((demo_token, f"{AAC}/{consent}"), (psu_token, f"/v3.1/aisp/accounts/{WALLET}/balances")):
        stolen = door.rival.get(path, headers=bearer(token))
        assert stolen.status_code == 403 and error_codes(stolen) == ["UK.OBIE.Header.Invalid"]


def test_a_code_swapped_by_another_participant_gives_no_token(door: Door) -> None:
    consent = door.consent(door.demo, door.client_token(door.demo, DEMO_SECRET).json()["access_token"])
    code = door.authorise(door.demo, consent, "tpp_demo").json()["code"]
    stolen = door.psu_token(door.rival, DEMO_SECRET, code)
    assert stolen.status_code == 401 and stolen.json()["error"] == "invalid_client"
    assert door.psu_token(door.demo, DEMO_SECRET, code).status_code == 200  # still Demo TPP's to swap


def test_the_demo_client_belongs_to_demo_tpp(door: Door) -> None:
    registered = door.demo.post("/register", json={"client_name": "Second App", "redirect_uri": CALLBACK})
    assert registered.json()["participant_id"] == DEMO_TPP


# --- the authorization server: PKCE, single-use codes, exact redirect URIs ----------------------

def fresh_code(bank: Bank, **extra: Any) -> str:
    decided = bank.authorise(bank.ais_consent(), **extra)
    assert decided.status_code == 200, decided.text
    return decided.json()["code"]


def test_a_code_without_its_verifier_is_refused(bank: Bank) -> None:
    code = fresh_code(bank)
    refused = bank.exchange(code, code_verifier=None)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    assert "code_verifier" in refused.json()["error_description"]


def test_a_code_with_a_wrong_verifier_is_refused(bank: Bank) -> None:
    code = fresh_code(bank)
    refused = bank.exchange(code, code_verifier=VERIFIER[:-1] + ("A" if VERIFIER[-1] != "A" else "B"))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert bank.exchange(code).status_code == 200  # the TPP that holds the verifier still can


def test_a_code_used_twice_is_refused(bank: Bank) -> None:
    code = fresh_code(bank)
    first = bank.exchange(code)
    assert first.status_code == 200
    again = bank.exchange(code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert "access_token" not in again.json()


def test_an_authorisation_request_without_pkce_s256_is_refused(bank: Bank) -> None:
    consent = bank.ais_consent()
    body = {"consent_id": consent, "client_id": "tpp_demo", "psu_id": "wangfang", "otp": "123456"}
    missing = bank.client.post("/authorize", json=body)
    assert missing.status_code == 400 and "UK.OBIE.Field.Missing" in error_codes(missing)
    plain = bank.client.post("/authorize", json={**body, "code_challenge": s256(VERIFIER),
                                                 "code_challenge_method": "plain"})
    assert plain.status_code == 400
    assert bank.client.get(f"{AAC}/{consent}", headers=bearer(bank.client_token())).json()["Data"]["Status"] == \
        "AwaitingAuthorisation"


def test_a_redirect_uri_one_character_off_is_refused_at_authorisation(bank: Bank) -> None:
    consent = bank.ais_consent()
    refused = bank.authorise(consent, redirect_uri=CALLBACK + "/")
    assert refused.status_code == 400 and error_codes(refused) == ["UK.OBIE.Field.Invalid"]
    assert "code" not in refused.json()
    exact = bank.authorise(consent, redirect_uri=CALLBACK)
    assert exact.status_code == 200 and exact.json()["redirect_uri"].startswith(CALLBACK + "?code=")


def test_the_token_request_must_repeat_the_exact_redirect_uri(bank: Bank) -> None:
    code = fresh_code(bank, redirect_uri=CALLBACK)
    for sent in (None, CALLBACK[:-1] + "K"):  # left out, or one character off
        refused = bank.exchange(code, redirect_uri=sent)  # type: ignore[arg-type]
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert bank.exchange(code, redirect_uri=CALLBACK).status_code == 200
