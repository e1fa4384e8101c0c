"""Approve, refer or decline; limits and APR by tier; magic applicants."""

from __future__ import annotations

from decimal import Decimal

from services.credit.policy import decide
from services.credit.scorecard import Scorecard
from tests.credit.test_scorecard import CHEN

WEAK = CHEN | {"monthly_inflow": Decimal(2000), "inflow_volatility_pct": Decimal(80),
               "months_in_business": Decimal(3), "debt_service_ratio_pct": Decimal(60)}


def _decide(card: Scorecard, inputs, name="Chen's Tea Stall", requested=2_000_000, kind="business", owed=0):
    scored = card.score(inputs)
    inflow = int(inputs["monthly_inflow"] * 100)
    return scored, decide(card, scored, applicant_type=kind, applicant_name=name,
                          monthly_inflow_minor=inflow, requested_minor=requested, currency="CNY",
                          outstanding_minor=owed)


def test_a_strong_applicant_is_approved_in_tier_a(card: Scorecard) -> None:
    scored, decision = _decide(card, CHEN)
    assert scored.score >= 720
    assert (decision.outcome, decision.risk_tier, decision.apr_bps) == ("approve", "A", 720)
    assert decision.limit_minor == 3 * 1_860_000  # three months of inflow, under the cap
    assert decision.offered_minor == 2_000_000


def test_a_request_above_the_limit_is_offered_the_limit(card: Scorecard) -> None:
    _, decision = _decide(card, CHEN, requested=10_000_000)
    assert decision.offered_minor == decision.limit_minor == 5_580_000


def test_what_the_borrower_still_owes_uses_up_the_limit(card: Scorecard) -> None:
    _, decision = _decide(card, CHEN, owed=4_000_000)
    assert decision.limit_minor == 5_580_000
    assert (decision.outcome, decision.offered_minor) == ("approve", 1_580_000)  # what is left of the line


def test_a_borrower_whose_line_is_used_up_is_declined_with_the_limit_shown(card: Scorecard) -> None:
    for owed in (5_580_000, 6_000_000):
        _, decision = _decide(card, CHEN, owed=owed)
        assert (decision.outcome, decision.rule, decision.offered_minor) == ("decline", "credit-line-used", None)
        assert decision.limit_minor == 5_580_000


def test_a_weak_applicant_is_declined(card: Scorecard) -> None:
    scored, decision = _decide(card, WEAK)
    assert scored.score < card.policy["decline_below"]
    assert decision.outcome == "decline" and decision.limit_minor is None


def test_a_middling_applicant_is_referred(card: Scorecard) -> None:
    middling = CHEN | {"monthly_inflow": Decimal(6000), "inflow_volatility_pct": Decimal(45),
                       "months_in_business": Decimal(10), "customer_rating": None}
    scored, decision = _decide(card, middling)
    assert card.policy["decline_below"] <= scored.score < card.policy["approve_from"]
    assert decision.outcome == "refer"


def test_magic_names_force_decline_and_refer_whatever_the_data(card: Scorecard) -> None:
    assert _decide(card, CHEN, name="Test Decline")[1].outcome == "decline"
    assert _decide(card, CHEN, name="test refer")[1].outcome == "refer"
    assert _decide(card, CHEN, name="Test Decline")[1].rule == "magic-applicant"


def test_individuals_have_lower_caps(card: Scorecard) -> None:
    rich = CHEN | {"monthly_inflow": Decimal(90000)}
    _, decision = _decide(card, rich, kind="individual", requested=100_000_000)
    assert decision.limit_minor == 5_000_000
