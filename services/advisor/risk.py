"""Risk profile from a questionnaire, after Wealthfront's published method.

Two parts, each 0-10: *capacity* (can you afford a loss: age, horizon, income, liquid net
worth) and *willingness* (do you want the risk: reaction to a loss, priority, experience).
Inconsistent willingness answers (a "maximise gains" investor who would sell everything after a
20% fall) shrink willingness exponentially. The two parts are combined giving three quarters of
the weight to the more risk-averse one, and the result is rounded *down* to the 0.5 step:

    score = floor_0.5(0.75 x min(W', C) + 0.25 x max(W', C)),   W' = W x exp(-3 x max(0, d - 0.3))

where d = |loss-reaction points - priority points| / 10. The score (0-10 in steps of 0.5) picks
one of 21 model portfolios: level = 2 x score. The goal does not change the score: it sets
the glide path that caps equities as the goal's date nears (explained in its own row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.advisor.portfolios import GLIDE_RULES, max_equity_share

GOALS = ("retirement", "major_purchase", "education", "general_investing", "emergency_fund")
LOSS_REACTIONS = {"sell_all": 0.0, "sell_some": 2.5, "hold": 5.0, "buy_more": 10.0}
PRIORITIES = {"minimise_losses": 0.0, "balanced": 5.0, "maximise_gains": 10.0}
EXPERIENCE = {"none": 0.0, "some": 5.0, "extensive": 10.0}
# Weights of the willingness answers (their points are out of 10 before weighting).
W_LOSS, W_PRIORITY, W_EXPERIENCE = 0.5, 0.3, 0.2
AVERSE_WEIGHT = 0.75
INCONSISTENCY_TOLERANCE = 0.3
INCONSISTENCY_STEEPNESS = 3.0

LOSS_QUESTION = "If your portfolio fell 20% in a month, you would…"
PRIORITY_QUESTION = "When you invest, you care most about…"


@dataclass(frozen=True)
class Answers:
    age: int
    horizon_years: int
    annual_income_minor: int  # CNY fen
    liquid_net_worth_minor: int
    goal: str
    loss_reaction: str
    priority: str
    experience: str


@dataclass(frozen=True)
class Contribution:
    question: str
    answer: str
    part: str  # capacity | willingness | consistency | goal
    points: float  # within its part (0-10 in total per part); negative for the penalty
    max_points: float
    score_contribution: float  # what it adds to the unrounded score
    explanation: str


@dataclass(frozen=True)
class RiskScore:
    capacity: float
    willingness: float  # before the consistency penalty
    consistency: float  # multiplier in (0, 1]
    raw_score: float
    score: float  # rounded down to 0.5
    level: int
    contributions: list[Contribution]


def _band(value: float, bands: list[tuple[float, float]]) -> float:
    """Points of the first band whose lower bound the value reaches."""
    for lower, points in bands:
        if value >= lower:
            return points
    return 0.0


def horizon_points(years: int) -> float:
    return round(min(years, 20) / 20 * 4, 2)


def age_points(age: int) -> float:
    return 2.0 if age <= 35 else 1.5 if age <= 45 else 1.0 if age <= 55 else 0.5 if age <= 65 else 0.0


def income_points(income_minor: int) -> float:
    yuan = income_minor / 100
    return _band(yuan, [(300_000, 2.0), (150_000, 1.5), (60_000, 1.0), (0.01, 0.5)])


def cushion_points(net_worth_minor: int, income_minor: int) -> float:
    """Liquid net worth as a multiple of a year's income: the cushion that avoids forced sales."""
    if net_worth_minor <= 0:
        return 0.0
    if income_minor <= 0:
        return 2.0 if net_worth_minor >= 100_000_00 else 1.0
    return _band(net_worth_minor / income_minor, [(2, 2.0), (1, 1.5), (0.5, 1.0), (0, 0.5)])


def score_answers(a: Answers) -> RiskScore:
    cap = [
        ("Age", str(a.age), age_points(a.age), 2.0,
         "Younger investors have more working years to recover from a loss."),
        ("Investment horizon (years)", str(a.horizon_years), horizon_points(a.horizon_years), 4.0,
         "Longer horizons ride out downturns; full points from 20 years."),
        ("Annual income (CNY)", f"{a.annual_income_minor / 100:.2f}", income_points(a.annual_income_minor), 2.0,
         "Income keeps paying the bills when markets fall."),
        ("Liquid net worth (CNY)", f"{a.liquid_net_worth_minor / 100:.2f}",
         cushion_points(a.liquid_net_worth_minor, a.annual_income_minor), 2.0,
         "Savings worth at least twice a year's income give full points: no forced selling."),
    ]
    loss = LOSS_REACTIONS[a.loss_reaction]
    priority = PRIORITIES[a.priority]
    will = [
        (LOSS_QUESTION, a.loss_reaction, loss * W_LOSS, 10 * W_LOSS,
         "How you say you would act in a crash is the strongest sign of willingness."),
        (PRIORITY_QUESTION, a.priority, priority * W_PRIORITY, 10 * W_PRIORITY,
         "Seeking gains over avoiding losses means accepting more volatility."),
        ("Investing experience", a.experience, EXPERIENCE[a.experience] * W_EXPERIENCE, 10 * W_EXPERIENCE,
         "Investors who have lived through a downturn tend to stay the course."),
    ]
    capacity = sum(p for _, _, p, _, _ in cap)
    willingness = sum(p for _, _, p, _, _ in will)
    inconsistency = abs(loss - priority) / 10
    consistency = math.exp(-INCONSISTENCY_STEEPNESS * max(0.0, inconsistency - INCONSISTENCY_TOLERANCE))
    adjusted = willingness * consistency
    w_weight, c_weight = (AVERSE_WEIGHT, 1 - AVERSE_WEIGHT) if adjusted <= capacity else (
        1 - AVERSE_WEIGHT, AVERSE_WEIGHT)
    raw = w_weight * adjusted + c_weight * capacity
    score = math.floor(raw * 2 + 1e-9) / 2
    contributions = [
        Contribution(q, ans, "capacity", p, m, round(p * c_weight, 4), why) for q, ans, p, m, why in cap
    ] + [
        Contribution(q, ans, "willingness", p, m, round(p * consistency * w_weight, 4), why)
        for q, ans, p, m, why in will
    ]
    penalty = adjusted - willingness
    contributions.append(
        Contribution(
            "Consistency of your answers",
            f"{a.loss_reaction} vs {a.priority}",
            "consistency",
            round(penalty, 4),
            0.0,
            round(penalty * w_weight, 4),
            f"Answers {inconsistency:.0%} apart (tolerance {INCONSISTENCY_TOLERANCE:.0%}); "
            f"willingness kept at {consistency:.0%}. Contradictory answers lower the score "
            "exponentially, as Wealthfront's do.",
        )
    )
    cap_now = max_equity_share(a.goal, a.horizon_years)
    contributions.append(
        Contribution(
            "Goal", a.goal, "goal", 0.0, 0.0, 0.0,
            "Your goal does not move the score; it sets the glide path that caps equities as its "
            f"date nears ({GLIDE_RULES[a.goal]}). With {a.horizon_years} years left the cap is "
            f"{cap_now:.0%} equities.",
        )
    )
    return RiskScore(
        capacity=round(capacity, 4),
        willingness=round(willingness, 4),
        consistency=round(consistency, 4),
        raw_score=round(raw, 4),
        score=score,
        level=int(score * 2),
        contributions=contributions,
    )
