"""MYbank's "310" loan from the seed: 3 minutes to apply, 1 second to disburse, 0 human
intervention, for a small merchant with no credit history scored on alternative data."""

from __future__ import annotations

from decimal import Decimal

from sandbox.demo.narration import DEMO_LENDER, WALLET_CO, Scene, Step, fresh_key, money
from services.common.demo import DEMO_MANDATES, DEMO_PARTICIPANTS, demo_account

CHEN = demo_account("Chen's Tea Stall").id
# Seeded: Demo Wallet Co (Chen's wallet provider) lets Demo Lender debit Chen's account.
REPAYMENT_MANDATE = next(m.id for m in DEMO_MANDATES if m.debtor_account_id == CHEN)
LENDER_ID = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == DEMO_LENDER.api_key)
ASKED = Decimal("20000.00")


def _chens_balance(scene: Scene, why: str) -> Decimal:
    answer = scene.call(Step(why, "GET", f"/payments/accounts/{CHEN}/balance", WALLET_CO,
                             show=("available.amount", "available.currency")))
    return money(answer.body, "available.amount")


def loan_310(scene: Scene) -> None:
    scene.say("Chen's Tea Stall has no bank history. Demo Lender scores it on what its wallet and "
              "records show (monthly takings, time in business, tax and utility bills paid on time, "
              "customer rating), and the machine decides: no underwriter.")
    mandate = scene.call(Step("the direct-debit mandate Chen's wallet provider gave the lender (seeded)", "GET",
                              f"/payments/mandates/{REPAYMENT_MANDATE}", WALLET_CO,
                              show=("grantee_participant_id", "debtor_account_id", "max_per_debit.amount",
                                    "status")))
    scene.check(mandate["grantee_participant_id"] == LENDER_ID and mandate["status"] == "active",
                "Demo Lender may debit Chen's account under an active mandate",
                f"the mandate is {mandate['status']} for {mandate['grantee_participant_id']}")
    before = _chens_balance(scene, "Chen's Tea Stall's wallet before it applies")
    application = scene.call(Step(
        f"the application: {ASKED} CNY over 12 months, on alternative data", "POST", "/credit/applications",
        DEMO_LENDER, expect=201,
        json={"repayment_mandate_id": REPAYMENT_MANDATE, "applicant_type": "business",
              "applicant_name": "Chen's Tea Stall", "account_id": CHEN,
              "requested_amount": {"amount": str(ASKED), "currency": "CNY"}, "term_months": 12,
              "cash_flow": {"source": "inline", "monthly_inflow": {"amount": "18600.00", "currency": "CNY"},
                            "inflow_volatility_pct": 22},
              "records": {"months_in_business": 30, "tax_filings_on_time_pct": 92,
                          "utility_bills_on_time_pct": 96, "customer_rating": 4.7}},
        show=("score.score", "score.band", "score.probability_of_default", "decision.outcome",
              "decision.risk_tier", "decision.apr_percent", "decision.amount_offered.amount",
              "timings.decision_ms")))
    offered = application["decision.amount_offered.amount"]
    scene.check(offered is not None and Decimal(offered) == ASKED,
                f"offered the {ASKED} CNY asked for: within the credit line the score earns",
                f"offered {offered} of a {application['decision.limit.amount']} CNY line "
                f"({application['decision.rule']}): earlier runs' loans still use it; "
                "`fintech-sandbox reset` starts over")
    for reason in application["score.reasons"] or []:
        scene.say(f"      reason {reason['code']}: -{reason['points_lost']} points: {reason['text']}")
    scene.check(application["decision.outcome"] == "approve" and application["decision.rule"] == "score",
                "approved by the scorecard itself: no referral to a human underwriter",
                f"the decision was {application['decision.outcome']} by {application['decision.rule']}")
    decision_ms = application["timings.decision_ms"]
    scene.check(isinstance(decision_ms, int | float) and decision_ms < 1000,
                f"decided in {decision_ms} ms: within the seed's \"1 second\"", f"it took {decision_ms} ms")
    loan_id = application["loan_id"]
    loan = scene.call(Step("the lender's front end asks for the money to be paid out (credit moves it through "
                           "the gateway, on Demo Lender's behalf, from its float)", "POST",
                           f"/credit/loans/{loan_id}/disbursement", DEMO_LENDER,
                           show=("status", "disbursement.journal_id", "disbursement.amount.amount",
                                 "schedule.0.total.amount", "schedule.0.due_date")))
    scene.check(loan["status"] == "disbursed" and money(loan.body, "disbursement.amount.amount") == ASKED,
                f"the loan is disbursed: {ASKED} CNY", f"it is {loan['status']}")
    after = _chens_balance(scene, "Chen's Tea Stall's wallet after the payout")
    scene.check(after - before == ASKED, f"the money is in the borrower's wallet ({before} → {after} CNY)",
                f"the wallet moved by {after - before}")
    instalment = loan["schedule.0.total"]
    repaid = scene.call(Step(f"Chen repays the first instalment, {instalment['amount']} CNY: a debit of its wallet "
                             "under the loan's mandate", "POST", f"/credit/loans/{loan_id}/repayments", DEMO_LENDER,
                             expect=201, headers={"Idempotency-Key": fresh_key()}, json={"amount": instalment},
                             show=("id", "status", "amount.amount", "journal_id")))
    scene.check(repaid["status"] == "completed", "the repayment completed", f"it is {repaid['status']}")
    repaid_to = _chens_balance(scene, "Chen's Tea Stall's wallet after the first instalment")
    scene.check(after - repaid_to == Decimal(instalment["amount"]),
                f"the instalment left the wallet ({after} → {repaid_to} CNY)", f"it moved by {repaid_to - after}")
    timed = scene.call(Step("the application's timings, by the service clock", "GET",
                            f"/credit/applications/{application['id']}", DEMO_LENDER,
                            show=("timings.decision_ms", "timings.received_to_disbursed_ms")))
    scene.check(timed["timings.disbursed_at"] is not None, "received, decided and disbursed are all on record",
                f"timings are {timed['timings']}")
