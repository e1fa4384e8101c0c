"""Test cards for top-ups, as in Stripe's test mode: documented numbers force each outcome."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decline:
    code: str
    message: str


# Any other number that passes the Luhn check succeeds.
MAGIC_CARDS: dict[str, Decline] = {
    "4000000000000002": Decline("card_declined", "The card was declined."),
    "4000000000009995": Decline("insufficient_funds", "The card has insufficient funds."),
    "4000000000009987": Decline("lost_card", "The card was reported lost."),
    "4000000000009979": Decline("stolen_card", "The card was reported stolen."),
    "4000000000000069": Decline("expired_card", "The card has expired."),
    "4000000000000119": Decline("processing_error", "The card issuer could not process it."),
}
SUCCESS_CARD = "4242424242424242"


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        digit = int(ch)
        if i % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def authorise(number: str) -> Decline | None:
    """None when the card pays; otherwise why it was declined."""
    if not luhn_ok(number):
        return Decline("incorrect_number", "The card number fails the Luhn check.")
    return MAGIC_CARDS.get(number)
