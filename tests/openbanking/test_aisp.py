"""Account information: each response releases only what the consent allows."""

from __future__ import annotations

from datetime import timedelta

from tests.openbanking.factories import COFFEE, SAVINGS, WALLET, ZHAO, Bank, bearer, error_codes

TX = f"/v3.1/aisp/accounts/{WALLET}/transactions"


def transactions(bank: Bank, token: str, **params: str) -> list[dict]:
    response = bank.get(TX, token, **params)
    assert response.status_code == 200, response.text
    return response.json()["Data"]["Transaction"]


def test_a_new_user_sees_the_demo_psu_accounts_and_history(bank: Bank) -> None:
    token = bank.ais_token()
    accounts = bank.get("/v3.1/aisp/accounts", token).json()["Data"]["Account"]
    assert [a["AccountId"] for a in accounts] == [WALLET, SAVINGS]
    history = [t["TransactionInformation"] for t in transactions(bank, token)]
    assert history == ["Opening balance", "Coffee and a bun", "Monthly saving", "Red packet"]


def test_basic_permission_hides_account_numbers_and_servicer(bank: Bank) -> None:
    token = bank.ais_token(["ReadAccountsBasic"])
    account = bank.get(f"/v3.1/aisp/accounts/{WALLET}", token).json()["Data"]["Account"][0]
    assert account["Currency"] == "CNY" and "Account" not in account and "Servicer" not in account


def test_detail_permission_releases_account_numbers(bank: Bank) -> None:
    token = bank.ais_token(["ReadAccountsDetail"])
    account = bank.get(f"/v3.1/aisp/accounts/{WALLET}", token).json()["Data"]["Account"][0]
    assert account["Account"] == [{"SchemeName": "UK.OBIE.BBAN", "Identification": WALLET, "Name": "Wang Fang"}]


def test_balances_need_read_balances(bank: Bank) -> None:
    token = bank.ais_token(["ReadAccountsBasic"])
    refused = bank.get(f"/v3.1/aisp/accounts/{WALLET}/balances", token)
    assert refused.status_code == 403 and error_codes(refused) == ["UK.OBIE.Resource.ConsentMismatch"]
    allowed = bank.get(f"/v3.1/aisp/accounts/{WALLET}/balances", bank.ais_token(["ReadAccountsBasic", "ReadBalances"]))
    assert allowed.json()["Data"]["Balance"][0]["Amount"] == {"Amount": bank.balance(WALLET), "Currency": "CNY"}


def test_transactions_need_a_transactions_permission(bank: Bank) -> None:
    refused = bank.get(TX, bank.ais_token(["ReadAccountsBasic", "ReadBalances"]))
    assert refused.status_code == 403


def test_permissions_without_accounts_basic_or_detail_are_refused(bank: Bank) -> None:
    response = bank.client.post("/v3.1/aisp/account-access-consents", headers=bearer(bank.client_token()),
                                json={"Data": {"Permissions": ["ReadBalances"]}, "Risk": {}})
    assert response.status_code == 400 and "UK.OBIE.Field.Invalid" in error_codes(response)


def test_transactions_level_without_direction_is_refused(bank: Bank) -> None:
    for permissions in (["ReadAccountsBasic", "ReadTransactionsDetail"], ["ReadAccountsBasic", "ReadTransactionsCredits"]):
        response = bank.client.post("/v3.1/aisp/account-access-consents", headers=bearer(bank.client_token()),
                                    json={"Data": {"Permissions": permissions}, "Risk": {}})
        assert response.status_code == 400, permissions


def test_credits_permission_releases_only_credits(bank: Bank) -> None:
    token = bank.ais_token(["ReadAccountsBasic", "ReadTransactionsDetail", "ReadTransactionsCredits"])
    assert {t["CreditDebitIndicator"] for t in transactions(bank, token)} == {"Credit"}


def test_debits_permission_releases_only_debits(bank: Bank) -> None:
    token = bank.ais_token(["ReadAccountsBasic", "ReadTransactionsDetail", "ReadTransactionsDebits"])
    found = transactions(bank, token)
    assert {t["CreditDebitIndicator"] for t in found} == {"Debit"} and len(found) == 2


def test_basic_transactions_hide_information_balance_and_counterparty(bank: Bank) -> None:
    token = bank.ais_token(["ReadAccountsBasic", "ReadTransactionsBasic", "ReadTransactionsDebits"])
    for tx in transactions(bank, token):
        assert not {"TransactionInformation", "Balance", "CreditorAccount", "DebtorAccount"} & set(tx)


def test_detail_transactions_show_counterparty_and_running_balance(bank: Bank) -> None:
    token = bank.ais_token(["ReadAccountsBasic", "ReadTransactionsDetail", "ReadTransactionsDebits"])
    coffee = transactions(bank, token)[0]
    assert coffee["CreditorAccount"]["Identification"] == COFFEE
    assert coffee["Amount"] == {"Amount": "36.50", "Currency": "CNY"}
    assert coffee["Balance"]["Amount"]["Amount"] == "31963.50"


def test_the_consent_window_bounds_what_a_tpp_reads(bank: Bank) -> None:
    token = bank.ais_token()
    transactions(bank, token)  # the bank writes its demo history on first use
    # The ledger books on its own clock; read the booking times back from it.
    bank.ledger_transfer(ZHAO, WALLET, "1.00", "later")
    booked = [t["BookingDateTime"] for t in transactions(bank, token)]
    windowed = bank.ais_token(TransactionToDateTime=booked[-2])
    assert [t["TransactionInformation"] for t in transactions(bank, windowed)][-1] == "Red packet"
    windowed_from = bank.ais_token(TransactionFromDateTime=booked[-1])
    assert [t["TransactionInformation"] for t in transactions(bank, windowed_from)] == ["later"]


def test_booking_date_filters_narrow_but_never_widen_the_window(bank: Bank) -> None:
    token = bank.ais_token()
    booked = [t["BookingDateTime"] for t in transactions(bank, token)]
    last_two = transactions(bank, token, fromBookingDateTime=booked[-2])
    assert len(last_two) == 2
    narrow = bank.ais_token(TransactionFromDateTime=booked[-1])
    assert len(transactions(bank, narrow, fromBookingDateTime=booked[0])) == 1


def test_transactions_page_through_links_next(bank: Bank) -> None:
    token = bank.ais_token()
    for n in range(30):
        bank.ledger_transfer(WALLET, SAVINGS, "1.00", f"saving {n}")
    first = bank.get(TX, token).json()
    assert first["Meta"]["TotalPages"] == 2 and len(first["Data"]["Transaction"]) == 25
    second = bank.client.get(first["Links"]["Next"], headers=bearer(token)).json()
    assert len(second["Data"]["Transaction"]) == 34 - 25 and "Next" not in second["Links"]
    assert second["Links"]["Prev"] == first["Links"]["Self"]


def test_an_account_outside_the_consent_is_refused(bank: Bank) -> None:
    token = bank.psu_token(bank.ais_consent(), account_ids=[WALLET])
    assert bank.get(f"/v3.1/aisp/accounts/{SAVINGS}", token).status_code == 403
    assert bank.get(f"/v3.1/aisp/accounts/{ZHAO}", token).status_code == 403


def test_an_expired_consent_gets_403_invalid_consent_status(bank: Bank) -> None:
    expires = (bank.clock.now() + timedelta(hours=1)).isoformat()
    token = bank.ais_token(ExpirationDateTime=expires)
    assert bank.get("/v3.1/aisp/accounts", token).status_code == 200
    bank.clock.advance(timedelta(hours=1))
    refused = bank.get("/v3.1/aisp/accounts", token)
    assert refused.status_code == 403 and error_codes(refused) == ["UK.OBIE.Resource.InvalidConsentStatus"]


def test_the_expiring_magic_psu_loses_access_after_a_minute(bank: Bank) -> None:
    token = bank.ais_token(psu="psu-expire")
    assert bank.get("/v3.1/aisp/accounts", token).status_code == 200
    bank.clock.advance(timedelta(seconds=60))
    assert bank.get("/v3.1/aisp/accounts", token).status_code == 403


def test_a_deleted_consent_is_gone_and_its_token_refused(bank: Bank) -> None:
    consent = bank.ais_consent()
    token = bank.psu_token(consent)
    tpp = bearer(bank.client_token())
    assert bank.client.delete(f"/v3.1/aisp/account-access-consents/{consent}", headers=tpp).status_code == 204
    assert bank.client.get(f"/v3.1/aisp/account-access-consents/{consent}", headers=tpp).status_code == 404
    refused = bank.get("/v3.1/aisp/accounts", token)
    assert refused.status_code == 403 and error_codes(refused) == ["UK.OBIE.Resource.InvalidConsentStatus"]


def test_a_consent_the_psu_revoked_shows_revoked_and_its_token_is_refused(bank: Bank) -> None:
    consent = bank.ais_consent()
    token = bank.psu_token(consent)
    revoked = bank.client.post(f"/psu/consents/{consent}/revoke", json={"psu_id": "wangfang", "otp": "123456"})
    assert revoked.status_code == 204
    shown = bank.client.get(f"/v3.1/aisp/account-access-consents/{consent}", headers=bearer(bank.client_token()))
    assert shown.json()["Data"]["Status"] == "Revoked"
    assert bank.get("/v3.1/aisp/accounts", token).status_code == 403
