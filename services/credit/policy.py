"""The lending policy: approve, refer or decline from the score; limit and APR by risk tier."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from services.common.money import to_minor
from services.credit.scorecard import Scorecard, Scored

# Magic applicant names force an outcome whatever the data says, for lessons and tests.
MAGIC_APPLICANTS = {"test decline": "decline", "test refer": "refer"}


@dataclass(frozen=True)
class Decision:
    outcome: str  # approve | refer | decline
    rule: str  # score | magic-applicant | credit-line-used
    risk_tier: str | None
    apr_bps: int | None
    limit_minor: int | None
    offered_minor: int | None


def magic_outcome(applicant_name: str) -> str | None:
    return MAGIC_APPLICANTS.get(applicant_name.strip().lower())


def decide(
    card: Scorecard,
    scored: Scored,
    *,
    applicant_type: str,
    applicant_name: str,
    monthly_inflow_minor: int,
    requested_minor: int,
    currency: str,
    outstanding_minor: int = 0,
) -> Decision:
    """The outcome and terms. The limit is a credit line, not a per-loan cap: what the borrower
    still owes on earlier loans (`outstanding_minor`) uses it up, so the offer is at most what is
    left of it, and a borrower whose line is used up is declined (`credit-line-used`)."""
    magic = magic_outcome(applicant_name)
    if magic is not None:
        return Decision(magic, "magic-applicant", None, None, None, None)
    policy = card.policy
    if scored.score < policy["decline_below"]:
        return Decision("decline", "score", None, None, None, None)
    if scored.score < policy["approve_from"]:
        return Decision("refer", "score", None, None, None, None)
    tier = next(t for t in policy["tiers"] if scored.score >= t["min_score"])
    by_inflow = int(Decimal(monthly_inflow_minor) * Decimal(str(tier["inflow_multiple"])))
    limit = min(by_inflow, to_minor(tier["cap"][applicant_type], currency))
    left = limit - outstanding_minor
    if left <= 0:
        return Decision("decline", "credit-line-used", tier["tier"], tier["apr_bps"], limit, None)
    return Decision("approve", "score", tier["tier"], tier["apr_bps"], limit, min(left, requested_minor))
