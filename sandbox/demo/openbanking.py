"""Open banking in the seed: a bank exports account and payment capabilities to third parties
through standard APIs. Demo TPP Ltd, with Wang Fang's consent, reads her Sandbox Bank account
and pays a coffee merchant from it (OBIE v3.1.11)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime, timedelta
from decimal import Decimal

from sandbox.demo.narration import DEMO_TPP, REGULATOR, Scene, Step, fresh_key, money
from services.common.demo import DEMO_TPP_CLIENTS, OPENBANKING_TEST_OTP, demo_account

OB = "/open-banking"
CLIENT = next(c for c in DEMO_TPP_CLIENTS if c.client_id == "tpp_demo")
WANG_FANG = demo_account("Wang Fang").id  # her everyday wallet at Sandbox Bank
HUTONG_COFFEE = demo_account("Hutong Coffee").id
PRICE = Decimal("25.00")


def _pkce() -> tuple[str, str]:
    """A fresh PKCE verifier and its S256 challenge, BASE64URL(SHA256(verifier)) without padding."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _psu_authorises(scene: Scene, consent_id: str, what: str) -> str:
    """Wang Fang authorises a consent at the bank (headless: the fixed one-time code), and the TPP
    swaps the code for her token: the authorization-code grant with PKCE."""
    verifier, challenge = _pkce()
    code = scene.call(Step(f"Wang Fang logs in at the bank and authorises the {what} (one-time code "
                           f"{OPENBANKING_TEST_OTP}; the TPP sent a PKCE S256 challenge)", "POST", f"{OB}/authorize",
                           DEMO_TPP, json={"consent_id": consent_id, "client_id": CLIENT.client_id,
                                           "code_challenge": challenge, "code_challenge_method": "S256",
                                           "psu_id": "wangfang", "otp": OPENBANKING_TEST_OTP},
                           show=("code",)))["code"]
    token = scene.call(Step("the TPP swaps the code and its PKCE verifier for her token", "POST",
                            f"{OB}/oauth2/token", DEMO_TPP, basic_auth=(CLIENT.client_id, CLIENT.client_secret),
                            form={"grant_type": "authorization_code", "code": code, "code_verifier": verifier},
                            show=("token_type", "scope", "expires_in")))
    return token["access_token"]


def _balance(scene: Scene, reader: dict[str, str], why: str) -> Decimal:
    answer = scene.call(Step(why, "GET", f"{OB}/v3.1/aisp/accounts/{WANG_FANG}/balances", DEMO_TPP, headers=reader,
                             show=("Data.Balance.0.Amount.Amount", "Data.Balance.0.Amount.Currency")))
    return money(answer.body, "Data.Balance.0.Amount.Amount")


def tpp_journey(scene: Scene) -> None:
    scene.say("Demo TPP Ltd is a third party, not a bank. With Wang Fang's consent, given at her bank, "
              "it may read her accounts and start one payment from them.")
    tpp = scene.call(Step("the TPP's own token (client credentials), to create consents", "POST",
                          f"{OB}/oauth2/token", DEMO_TPP,
                          form={"grant_type": "client_credentials", "client_id": CLIENT.client_id,
                                "client_secret": CLIENT.client_secret},
                          show=("token_type", "scope", "expires_in")))["access_token"]
    as_tpp = {"Authorization": f"Bearer {tpp}"}
    consent = scene.call(Step("an account-access consent: what the TPP asks to read", "POST",
                              f"{OB}/v3.1/aisp/account-access-consents", DEMO_TPP, expect=201, headers=as_tpp,
                              json={"Data": {"Permissions": ["ReadAccountsDetail", "ReadBalances",
                                                             "ReadTransactionsDetail", "ReadTransactionsCredits",
                                                             "ReadTransactionsDebits"]}, "Risk": {}},
                              show=("Data.ConsentId", "Data.Status")))
    scene.check(consent["Data.Status"] == "AwaitingAuthorisation", "the consent waits for Wang Fang's say-so",
                f"it is {consent['Data.Status']}")
    reader = {"Authorization": f"Bearer {_psu_authorises(scene, consent['Data.ConsentId'], 'account access')}"}
    accounts = scene.call(Step("her accounts, as the consent lets the TPP see them", "GET",
                               f"{OB}/v3.1/aisp/accounts", DEMO_TPP, headers=reader))
    listed = {a["AccountId"]: a.get("Nickname") for a in accounts["Data.Account"] or []}
    scene.check(WANG_FANG in listed, f"the TPP sees her accounts: {', '.join(f'{k} ({v})' for k, v in listed.items())}",
                f"it sees {listed}")
    before = _balance(scene, reader, "her wallet's balance before the payment")

    scene.say(f"Now a payment: {PRICE} CNY of coffee beans to Hutong Coffee, started by the TPP from her account.")
    initiation = {"InstructionIdentification": "INSTR-0001", "EndToEndIdentification": "E2E-0001",
                  "InstructedAmount": {"Amount": str(PRICE), "Currency": "CNY"},
                  "CreditorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": HUTONG_COFFEE,
                                      "Name": "Hutong Coffee"},
                  "RemittanceInformation": {"Reference": "Coffee beans"}}
    risk = {"PaymentContextCode": "PartyToParty"}
    payment_consent = scene.call(Step("a domestic-payment consent (a fresh x-idempotency-key each run)", "POST",
                                      f"{OB}/v3.1/pisp/domestic-payment-consents", DEMO_TPP, expect=201,
                                      headers={**as_tpp, "x-idempotency-key": fresh_key()},
                                      json={"Data": {"Initiation": initiation}, "Risk": risk},
                                      show=("Data.ConsentId", "Data.Status")))
    consent_id = payment_consent["Data.ConsentId"]
    payer = {"Authorization": f"Bearer {_psu_authorises(scene, consent_id, 'payment')}"}
    funds = scene.call(Step("the TPP asks the bank whether the money is there", "GET",
                            f"{OB}/v3.1/pisp/domestic-payment-consents/{consent_id}/funds-confirmation", DEMO_TPP,
                            headers=payer, show=("Data.FundsAvailableResult.FundsAvailable",)))
    scene.check(funds["Data.FundsAvailableResult.FundsAvailable"] is True, "the funds are available")
    paid = scene.call(Step("the payment: the bank moves the money in the payments ledger, through the gateway, "
                           "for the TPP", "POST", f"{OB}/v3.1/pisp/domestic-payments", DEMO_TPP, expect=201,
                           headers={**payer, "x-idempotency-key": fresh_key()},
                           json={"Data": {"ConsentId": consent_id, "Initiation": initiation}, "Risk": risk},
                           show=("Data.DomesticPaymentId", "Data.Status")))
    scene.check(paid["Data.Status"] == "AcceptedCreditSettlementCompleted", "the payment settled",
                f"it is {paid['Data.Status']}")
    after = _balance(scene, reader, "her wallet's balance after")
    scene.check(before - after == PRICE, f"her wallet paid {PRICE} CNY ({before} → {after})",
                f"it moved by {after - before}")
    since = (datetime.fromisoformat(paid["Data.CreationDateTime"])
             - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    booked = scene.call(Step("her transactions since just before the payment", "GET",
                             f"{OB}/v3.1/aisp/accounts/{WANG_FANG}/transactions?fromBookingDateTime={since}",
                             DEMO_TPP, headers=reader))
    coffee = [t for t in booked["Data.Transaction"] or []
              if t.get("TransactionInformation") == "Coffee beans" and t["CreditDebitIndicator"] == "Debit"]
    scene.check(any(Decimal(t["Amount"]["Amount"]) == PRICE for t in coffee),
                f"the bank's statement shows it: Debit {PRICE} CNY, Coffee beans", f"coffee transactions: {coffee}")

    log = scene.call(Step("the regulator follows the payment's X-Request-ID through the audit log", "GET",
                          f"/sandbox/audit/entries?request_id={paid.request_id}", REGULATOR))
    hops = [(e["method"], e["path"], e["status"], e["via"]) for e in log["data"] or [] if e["status"]]  # 0: an intent
    for e in log["data"] or []:
        scene.say(f"      log #{e['index']} {e['via'] or e['participant_id']} {e['method']} {e['path']} "
                  f"{e['status'] or 'intent'} {e['decision']}" + (f" (for {e['participant_id']})" if e["via"] else ""))
    scene.check([h[:3] for h in hops] == [("POST", "/payments/transfers", 201),
                                           ("POST", f"{OB}/v3.1/pisp/domestic-payments", 201)]
                and hops[0][3] is not None,
                "two hops under one request id: the bank's ledger transfer, on the TPP's behalf, inside the "
                "TPP's payment", f"the log shows {hops}")
