#!/usr/bin/env bash
# The whole open-banking TPP journey through the gateway, against a running sandbox (`make run`):
# token, consent, the PSU authorises, accounts and transactions, a payment, then the payment in
# the payments ledger and in the gateway's audit log (the bank's key sends the ledger transfer, for the
# TPP: the entry counts it as the TPP's).   Usage: examples/tpp_journey.sh [gateway-url]
set -euo pipefail
G=${1:-http://127.0.0.1:8000}
PAYMENTS=${PAYMENTS_URL:-${G%:*}:$(( ${G##*:} + 1 ))}   # the payments service's own port (8001)
OB=$G/open-banking
KEY='X-API-Key: sbx_demo_tpp_key'
J='Content-Type: application/json'
field() { python3 -c "import sys, json; d = json.load(sys.stdin); print($1)"; }
# PKCE (required): a fresh random verifier per authorisation, and its S256 challenge for /authorize.
pkce() { python3 -c "import base64, hashlib, secrets; v = secrets.token_urlsafe(48); print(v, base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b'=').decode())"; }

echo "1. client-credentials token for the demo TPP"
TPP=$(curl -sf -H "$KEY" $OB/oauth2/token -d grant_type=client_credentials \
        -d client_id=tpp_demo -d client_secret=sbx_demo_tpp_secret | field 'd["access_token"]')

echo "2. account-access consent"
CONSENT=$(curl -sf -H "$KEY" -H "Authorization: Bearer $TPP" -H "$J" $OB/v3.1/aisp/account-access-consents \
  -d '{"Data":{"Permissions":["ReadAccountsDetail","ReadBalances","ReadTransactionsDetail","ReadTransactionsCredits","ReadTransactionsDebits"]},"Risk":{}}' \
  | field 'd["Data"]["ConsentId"] + " " + d["Data"]["Status"]')
echo "   $CONSENT"; CONSENT=${CONSENT%% *}

echo "3. Wang Fang authorises it at the bank (headless, one-time code 123456; PKCE S256)"
read -r VERIFIER CHALLENGE < <(pkce)
CODE=$(curl -sf -H "$KEY" -H "$J" $OB/authorize \
  -d "{\"consent_id\":\"$CONSENT\",\"client_id\":\"tpp_demo\",\"code_challenge\":\"$CHALLENGE\",\"code_challenge_method\":\"S256\",\"psu_id\":\"wangfang\",\"otp\":\"123456\"}" | field 'd["code"]')
PSU=$(curl -sf -H "$KEY" -u tpp_demo:sbx_demo_tpp_secret $OB/oauth2/token \
        -d grant_type=authorization_code -d code=$CODE -d code_verifier=$VERIFIER | field 'd["access_token"]')

echo "4. accounts, balance and transactions"
curl -sf -H "$KEY" -H "Authorization: Bearer $PSU" $OB/v3.1/aisp/accounts \
  | field '"   accounts: " + ", ".join(a["AccountId"] + " (" + a["Nickname"] + ")" for a in d["Data"]["Account"])'
curl -sf -H "$KEY" -H "Authorization: Bearer $PSU" $OB/v3.1/aisp/accounts/acc_00000000000000000000000008/balances \
  | field '"   balance: " + d["Data"]["Balance"][0]["Amount"]["Amount"] + " " + d["Data"]["Balance"][0]["Amount"]["Currency"]'
curl -sf -H "$KEY" -H "Authorization: Bearer $PSU" $OB/v3.1/aisp/accounts/acc_00000000000000000000000008/transactions \
  | field '"   transactions: %d, e.g. %s" % (len(d["Data"]["Transaction"]), ", ".join(t["CreditDebitIndicator"] + " " + t["Amount"]["Amount"] for t in d["Data"]["Transaction"][:3]))'

echo "5. a payment: consent, the PSU authorises, funds check, pay"
INITIATION='{"InstructionIdentification":"INSTR-0001","EndToEndIdentification":"E2E-0001","InstructedAmount":{"Amount":"25.00","Currency":"CNY"},"CreditorAccount":{"SchemeName":"UK.OBIE.BBAN","Identification":"acc_00000000000000000000000b04","Name":"Hutong Coffee"},"RemittanceInformation":{"Reference":"Coffee beans"}}'
RISK='{"PaymentContextCode":"PartyToParty"}'
PCONSENT=$(curl -sf -H "$KEY" -H "Authorization: Bearer $TPP" -H "$J" -H "x-idempotency-key: coffee-$$-$RANDOM" \
  $OB/v3.1/pisp/domestic-payment-consents -d "{\"Data\":{\"Initiation\":$INITIATION},\"Risk\":$RISK}" | field 'd["Data"]["ConsentId"]')
read -r VERIFIER CHALLENGE < <(pkce)
CODE=$(curl -sf -H "$KEY" -H "$J" $OB/authorize \
  -d "{\"consent_id\":\"$PCONSENT\",\"client_id\":\"tpp_demo\",\"code_challenge\":\"$CHALLENGE\",\"code_challenge_method\":\"S256\",\"psu_id\":\"wangfang\",\"otp\":\"123456\"}" | field 'd["code"]')
PAY=$(curl -sf -H "$KEY" -u tpp_demo:sbx_demo_tpp_secret $OB/oauth2/token \
        -d grant_type=authorization_code -d code=$CODE -d code_verifier=$VERIFIER | field 'd["access_token"]')
curl -sf -H "$KEY" -H "Authorization: Bearer $PAY" $OB/v3.1/pisp/domestic-payment-consents/$PCONSENT/funds-confirmation \
  | field '"   funds available: %s" % d["Data"]["FundsAvailableResult"]["FundsAvailable"]'
PAID=$(curl -sf -H "$KEY" -H "Authorization: Bearer $PAY" -H "$J" -H "x-idempotency-key: pay-$$-$RANDOM" \
  -H "X-Request-ID: req_tpp_journey_$$" $OB/v3.1/pisp/domestic-payments \
  -d "{\"Data\":{\"ConsentId\":\"$PCONSENT\",\"Initiation\":$INITIATION},\"Risk\":$RISK}")
echo "$PAID" | field '"   " + d["Data"]["DomesticPaymentId"] + " " + d["Data"]["Status"]'

echo "6. the payment in the payments ledger (its own port) and in the gateway's audit log"
python3 - "$PAYMENTS" <<'PY'
import json, sys, urllib.request
base, cursor, last = sys.argv[1], None, None
while True:  # the statement is oldest first: walk every page, keep the newest coffee payment
    url = f"{base}/accounts/acc_00000000000000000000000008/journals?limit=100" + (f"&cursor={cursor}" if cursor else "")
    page = json.load(urllib.request.urlopen(url))
    last = next((j for j in reversed(page["data"]) if j["description"] == "Coffee beans"), last)
    cursor = page.get("next_cursor")
    if not page.get("has_more"):
        break
print(f"   ledger: {last['id']} {last['kind']} {last['amount']['amount']} -> {last['to_account_id']} ({last['description']})")
PY
curl -sf -H 'X-API-Key: sbx_regulator_key' "$G/sandbox/audit/entries?request_id=req_tpp_journey_$$" \
  | field '"\n".join("   log #%d %s %s %s %s %s%s" % (e["index"], e["via"] or e["participant_id"], e["method"], e["path"], e["status"] or "intent", e["decision"], " (for %s)" % e["participant_id"] if e["via"] else "") for e in d["data"])'
