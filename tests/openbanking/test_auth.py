"""Tokens: one TPP, one consent; another TPP's consent, code or token is refused."""

from __future__ import annotations

import uuid

from tests.openbanking.factories import OTHER, Bank, bearer, error_codes

AAC = "/v3.1/aisp/account-access-consents"


def test_a_wrong_client_secret_gets_invalid_client(bank: Bank) -> None:
    response = bank.client.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": "tpp_demo",
                                                       "client_secret": "wrong"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_a_registered_client_can_get_tokens(bank: Bank) -> None:
    registered = bank.client.post("/register", json={"client_name": "Budget App",
                                                     "redirect_uri": "https://budget.example/cb"})
    assert registered.status_code == 201
    creds = registered.json()
    assert bank.client_token((creds["client_id"], creds["client_secret"]))


def test_no_token_gets_401(bank: Bank) -> None:
    response = bank.client.get("/v3.1/aisp/accounts")
    assert response.status_code == 401 and error_codes(response) == ["UK.OBIE.Header.Missing"]


def test_a_client_credentials_token_cannot_read_accounts(bank: Bank) -> None:
    assert bank.get("/v3.1/aisp/accounts", bank.client_token()).status_code == 403


def test_a_token_without_the_scope_cannot_create_consents(bank: Bank) -> None:
    token = bank.client_token(scope="payments")
    response = bank.client.post(AAC, headers=bearer(token),
                                json={"Data": {"Permissions": ["ReadAccountsBasic"]}, "Risk": {}})
    assert response.status_code == 403


def test_an_account_token_cannot_make_payments(bank: Bank) -> None:
    token = bank.ais_token()
    consent = bank.payment_consent().json()["Data"]["ConsentId"]
    assert bank.pay(consent, token).status_code == 403


def test_another_tpp_does_not_see_a_tpps_consent(bank: Bank) -> None:
    consent = bank.ais_consent()
    response = bank.client.get(f"{AAC}/{consent}", headers=bearer(bank.client_token(OTHER)))
    assert response.status_code == 404 and error_codes(response) == ["UK.OBIE.Resource.NotFound"]
    assert bank.client.delete(f"{AAC}/{consent}", headers=bearer(bank.client_token(OTHER))).status_code == 404


def test_another_tpp_cannot_have_a_tpps_consent_authorised(bank: Bank) -> None:
    consent = bank.ais_consent()
    response = bank.authorise(consent, tpp=OTHER)
    assert response.status_code == 404 and error_codes(response) == ["UK.OBIE.Resource.NotFound"]


def test_another_tpp_cannot_swap_a_tpps_authorisation_code(bank: Bank) -> None:
    code = bank.authorise(bank.ais_consent()).json()["code"]
    stolen = bank.exchange(code, OTHER)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"


def test_another_tpp_cannot_pay_with_its_token_under_a_tpps_consent(bank: Bank) -> None:
    mine = bank.payment_consent().json()["Data"]["ConsentId"]
    theirs = bank.payment_consent(tpp=OTHER, key="other-key").json()["Data"]["ConsentId"]
    their_token = bank.psu_token(theirs, tpp=OTHER)
    refused = bank.pay(mine, their_token)
    assert refused.status_code == 403 and error_codes(refused) == ["UK.OBIE.Resource.ConsentMismatch"]


def test_a_token_is_refused_to_a_participant_other_than_the_one_it_was_issued_to(bank: Bank) -> None:
    # Behind the gateway, `X-Sandbox-Participant` names the API key's holder.
    response = bank.client.post("/oauth2/token", headers={"X-Sandbox-Participant": "ptp_00000000000000000000000002"},
                                data={"grant_type": "client_credentials", "client_id": "tpp_demo",
                                      "client_secret": "sbx_demo_tpp_secret"})
    token = response.json()["access_token"]
    stolen = bank.client.get(f"{AAC}/aac_00000000000000000000000000",
                             headers={**bearer(token), "X-Sandbox-Participant": "ptp_00000000000000000000000001"})
    assert stolen.status_code == 403 and error_codes(stolen) == ["UK.OBIE.Header.Invalid"]


def test_the_interaction_id_is_echoed_or_made_up(bank: Bank) -> None:
    sent = str(uuid.uuid4())
    echoed = bank.client.get("/v3.1/aisp/accounts", headers={"x-fapi-interaction-id": sent})
    assert echoed.headers["x-fapi-interaction-id"] == sent
    made_up = bank.client.get("/v3.1/aisp/accounts")
    assert uuid.UUID(made_up.headers["x-fapi-interaction-id"])
