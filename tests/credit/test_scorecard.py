"""The scorecard's arithmetic, its reasons and what it may and may not look at."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from services.credit.scorecard import Scorecard
from services.credit.service import scorecard_inputs
from services.credit.schemas import Records
from services.credit.training import train

CHEN = {
    "monthly_inflow": Decimal("18600.00"),
    "inflow_volatility_pct": Decimal(22),
    "months_in_business": Decimal(30),
    "tax_filings_on_time_pct": Decimal(92),
    "utility_bills_on_time_pct": Decimal(96),
    "customer_rating": Decimal("4.7"),
    "debt_service_ratio_pct": Decimal(0),
}


def test_points_sum_to_the_score(card: Scorecard) -> None:
    scored = card.score(CHEN)
    assert scored.score == sum(line.points for line in scored.lines)
    assert len(scored.lines) == len(card.characteristics)


def test_every_possible_score_lies_in_the_350_to_950_range(card: Scorecard) -> None:
    lowest = sum(min(b.points for b in c.bins) for c in card.characteristics)
    highest = sum(c.max_points for c in card.characteristics)
    assert 350 <= lowest < highest <= 950


def test_pdo_points_double_the_odds(card: Scorecard) -> None:
    for score in (400, 600, 720, 900):
        assert card.odds_at(score + card.pdo) / card.odds_at(score) == pytest.approx(2.0)
    # and the anchor: 720 points at 30:1, as the artifact says
    assert card.odds_at(720) == pytest.approx(30.0, rel=1e-4)


def test_probability_of_default_follows_the_odds(card: Scorecard) -> None:
    scored = card.score(CHEN)
    odds = card.odds_at(scored.score)
    assert scored.probability_of_default == pytest.approx(1 / (1 + odds))


def test_reasons_rank_characteristics_by_points_lost(card: Scorecard) -> None:
    reasons = card.score(CHEN).reasons()
    lost = [r.points_lost for r in reasons]
    assert lost == sorted(lost, reverse=True)
    assert all(r.points_lost == r.max_points - r.points > 0 for r in reasons)
    assert reasons[0].code == "LOW_TRANSACTION_FLOW"
    assert "CNY 18,600.00" in reasons[0].text


def test_at_most_four_reasons_are_given(card: Scorecard) -> None:
    weak = {name: None for name in CHEN} | {
        "monthly_inflow": Decimal(1000), "inflow_volatility_pct": Decimal(90),
        "months_in_business": Decimal(2), "debt_service_ratio_pct": Decimal(80),
    }
    assert len(card.score(weak).reasons()) == 4


def test_a_perfect_applicant_gets_no_reasons(card: Scorecard) -> None:
    best = {c.name: c.best_bin.lower if c.best_bin.lower is not None else Decimal(0) for c in card.characteristics}
    scored = card.score(best)
    assert scored.reasons() == []
    assert scored.score == sum(c.max_points for c in card.characteristics)


def test_a_missing_record_is_explained_in_plain_words(card: Scorecard) -> None:
    reasons = card.score(CHEN | {"customer_rating": None, "tax_filings_on_time_pct": None}).reasons()
    texts = [r.text for r in reasons]
    assert "No tax filing record" in texts


@pytest.mark.parametrize(
    ("characteristic", "low", "high", "better"),
    [
        ("monthly_inflow", Decimal(3000), Decimal(120000), "high"),
        ("inflow_volatility_pct", Decimal(5), Decimal(90), "low"),
        ("months_in_business", Decimal(3), Decimal(150), "high"),
        ("tax_filings_on_time_pct", Decimal(50), Decimal(100), "high"),
        ("utility_bills_on_time_pct", Decimal(50), Decimal(100), "high"),
        ("customer_rating", Decimal("3.0"), Decimal("5.0"), "high"),
        ("debt_service_ratio_pct", Decimal(0), Decimal(90), "low"),
    ],
)
def test_key_characteristics_move_the_score_one_way(card: Scorecard, characteristic, low, high, better) -> None:
    step = (high - low) / 40
    scores = [card.score(CHEN | {characteristic: low + step * i}).score for i in range(41)]
    if better == "low":
        scores.reverse()
    assert scores == sorted(scores), f"{characteristic} is not monotone"
    assert scores[-1] > scores[0]


def test_no_protected_attribute_is_a_model_input(card: Scorecard) -> None:
    protected = {"sex", "age", "age_band", "gender", "marital_status", "ethnicity"}
    assert not protected & set(card.input_names)
    assert set(card.input_names) == set(CHEN)
    # the service hands the scorecard only what scorecard_inputs builds from the data
    records = Records(months_in_business=30, tax_filings_on_time_pct=92)
    assert set(scorecard_inputs(1_860_000, 22, records)) == set(card.input_names)


def test_protected_attributes_passed_anyway_change_nothing(card: Scorecard) -> None:
    plain = card.score(CHEN)
    for extra in ({"sex": "F", "age_band": "18-29"}, {"sex": "M", "age_band": "60+"}):
        assert card.score(CHEN | extra) == plain


def test_the_committed_artifact_is_what_training_produces() -> None:
    assert train.main(["--check"]) == 0


def test_scaling_matches_the_published_formula(card: Scorecard) -> None:
    factor = card.pdo / math.log(2)
    assert card.factor == pytest.approx(factor, rel=1e-6)
    assert card.offset == pytest.approx(720 - factor * math.log(30), rel=1e-6)
