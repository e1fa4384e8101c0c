#!/usr/bin/env bash
# The "310" loan through the gateway, against a running sandbox (`make run`): Chen's Tea Stall,
# a small merchant with no credit history, applies on alternative data, is scored and decided
# with reasons, the money lands in its wallet, and the lender collects the first instalment under
# the mandate Chen's wallet provider gave it.   Usage: examples/loan_310.sh [gateway-url]
set -euo pipefail
G=${1:-http://127.0.0.1:8000}
LENDER='X-API-Key: sbx_demo_lender_key'
J='Content-Type: application/json'
CHEN=acc_00000000000000000000000004
MANDATE=mdt_00000000000000000000000002  # seeded: Demo Wallet Co lets Demo Lender debit Chen's account
field() { python3 -c "import sys, json; d = json.load(sys.stdin); print($1)"; }
balance() { curl -sf "$G/payments/accounts/$CHEN/balance" -H 'X-API-Key: sbx_demo_wallet_key' | field 'd["available"]["amount"]'; }

curl -sf "$G/payments/mandates/$MANDATE" -H 'X-API-Key: sbx_demo_wallet_key' | field '
"mandate %s: %s lets %s debit %s, %s per debit, %s per %s (%s)" % (d["id"], d["grantor_participant_id"], d["grantee_participant_id"], d["debtor_account_id"], d["max_per_debit"]["amount"], d["max_per_period"]["amount"], d["period"], d["purpose"])'
echo "Chen's Tea Stall holds $(balance) CNY and asks for 20,000.00 over 12 months"
APP=$(curl -sf "$G/credit/applications" -H "$LENDER" -H "$J" -d "{
  \"repayment_mandate_id\": \"$MANDATE\",
  \"applicant_type\": \"business\", \"applicant_name\": \"Chen's Tea Stall\", \"account_id\": \"$CHEN\",
  \"requested_amount\": {\"amount\": \"20000.00\", \"currency\": \"CNY\"}, \"term_months\": 12,
  \"cash_flow\": {\"source\": \"inline\", \"monthly_inflow\": {\"amount\": \"18600.00\", \"currency\": \"CNY\"},
                \"inflow_volatility_pct\": 22},
  \"records\": {\"months_in_business\": 30, \"tax_filings_on_time_pct\": 92,
              \"utility_bills_on_time_pct\": 96, \"customer_rating\": 4.7}}")
echo "$APP" | field '"score %d (%s..%s), band %s, probability of default %.2f%%" % (d["score"]["score"], *d["score"]["score_range"], d["score"]["band"], 100 * d["score"]["probability_of_default"])'
echo "$APP" | field '"decision: %s, tier %s, APR %s%%, limit %s, offered %s" % (d["decision"]["outcome"], d["decision"]["risk_tier"], d["decision"]["apr_percent"], d["decision"]["limit"]["amount"], d["decision"]["amount_offered"]["amount"])'
echo "reasons (points lost against each characteristic's maximum):"
echo "$APP" | field '"\n".join("  %-26s -%3d  %s" % (r["code"], r["points_lost"], r["text"]) for r in d["score"]["reasons"])'
LOAN=$(echo "$APP" | field 'd["loan_id"]')

LOANED=$(curl -sf -X POST "$G/credit/loans/$LOAN/disbursement" -H "$LENDER")
echo "$LOANED" | field '"disbursed %s CNY as %s (fee %s); first instalment %s due %s" % (d["disbursement"]["amount"]["amount"], d["disbursement"]["journal_id"], d["disbursement"]["fee_charged_by_payments"]["amount"], d["schedule"][0]["total"]["amount"], d["schedule"][0]["due_date"])'
echo "Chen's Tea Stall now holds $(balance) CNY"
FIRST=$(echo "$LOANED" | field 'json.dumps(d["schedule"][0]["total"])')
REPAID=$(curl -sf "$G/credit/loans/$LOAN/repayments" -H "$LENDER" -H "$J" -H "Idempotency-Key: $LOAN-first" \
  -d "{\"amount\": $FIRST}" | field '"%s CNY as %s" % (d["amount"]["amount"], d["journal_id"])')
echo "repaid $REPAID, debited under the loan's mandate $(echo "$LOANED" | field 'd["repayment_mandate_id"]')"
echo "after the first instalment Chen's Tea Stall has $(balance) CNY"
curl -sf "$G/credit/applications/$(echo "$APP" | field 'd["id"]')" -H "$LENDER" | field '
"timings: " + ", ".join("%s %s" % (k, v) for k, v in d["timings"].items())'
