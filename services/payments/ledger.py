"""The ledger's rules as plain functions over plain data: no HTTP, no database.

Sign convention: a leg's amount is what it adds to the account's balance. A wallet is money the
provider owes its customer, so a top-up credits (+) the wallet and debits (−) the card-funding
account; every journal's legs sum to zero.
"""

from __future__ import annotations

from dataclasses import dataclass

MERCHANT_FEE_BPS = 60  # 0.6%: the usual Alipay / WeChat Pay merchant rate


@dataclass(frozen=True)
class Leg:
    account_id: str
    amount_minor: int


class UnbalancedJournal(AssertionError):
    pass


def check_balanced(legs: list[Leg]) -> list[Leg]:
    if sum(leg.amount_minor for leg in legs) != 0:
        raise UnbalancedJournal(f"legs do not sum to zero: {legs}")
    return legs


def merchant_fee(amount_minor: int, bps: int = MERCHANT_FEE_BPS) -> int:
    """The fee in minor units, rounded half up: 0.6% of 100.00 is 0.60; of 0.83 is 0.00."""
    return (amount_minor * bps + 5_000) // 10_000


def move(debit_account: str, credit_account: str, amount_minor: int) -> list[Leg]:
    """A plain movement: top-up, withdrawal, P2P transfer."""
    return check_balanced([Leg(debit_account, -amount_minor), Leg(credit_account, amount_minor)])


def merchant_payment(payer: str, merchant: str, fees: str, amount_minor: int, fee_minor: int) -> list[Leg]:
    """The payer pays the full amount; the merchant receives it less the fee."""
    return check_balanced(
        [Leg(payer, -amount_minor), Leg(merchant, amount_minor - fee_minor), Leg(fees, fee_minor)]
    )


def refund_fee_share(amount_minor: int, fee_minor: int, already_refunded: int,
                     fee_already_refunded: int, refund_minor: int) -> int:
    """The part of the fee returned with a refund: proportional, and the last refund takes the
    remainder, so a full refund returns the whole fee exactly."""
    if already_refunded + refund_minor == amount_minor:
        share = fee_minor - fee_already_refunded
    else:
        share = fee_minor * refund_minor // amount_minor
    return min(share, refund_minor)  # a refund never pays the merchant


def refund(payer: str, payee: str, fees: str | None, refund_minor: int, fee_share: int) -> list[Leg]:
    """A new journal that reverses (part of) the original; history is never edited."""
    legs = [Leg(payer, refund_minor), Leg(payee, -(refund_minor - fee_share))]
    if fees is not None and fee_share:
        legs.append(Leg(fees, -fee_share))
    return check_balanced(legs)


def check_balanced_per_currency(legs: list[Leg], currency_of: dict[str, str]) -> list[Leg]:
    """A journal in several currencies balances in each of them separately."""
    totals: dict[str, int] = {}
    for leg in legs:
        currency = currency_of[leg.account_id]
        totals[currency] = totals.get(currency, 0) + leg.amount_minor
    if any(totals.values()):
        raise UnbalancedJournal(f"legs do not sum to zero per currency: {totals}")
    return legs


def cross_border(payer: str, payee: str, sell_liquidity: str, buy_liquidity: str, fees: str,
                 sell_minor: int, fee_minor: int, buy_minor: int,
                 currency_of: dict[str, str]) -> list[Leg]:
    """A cross-border payment through the rail's liquidity accounts, one per currency:

    sold currency:   payer -sell, liquidity +(sell - fee), fees +fee
    bought currency: liquidity -buy, payee +buy
    The liquidity accounts are the provider's own position: it takes in one currency and pays
    out the other, so they may go negative.
    """
    legs = [Leg(payer, -sell_minor), Leg(sell_liquidity, sell_minor - fee_minor)]
    if fee_minor:
        legs.append(Leg(fees, fee_minor))
    legs += [Leg(buy_liquidity, -buy_minor), Leg(payee, buy_minor)]
    return check_balanced_per_currency(legs, currency_of)


def net_by_account(legs: list[Leg]) -> list[tuple[str, int]]:
    """One balance change per account, in id order: every transaction locks rows in the same
    order, so two opposite transfers cannot deadlock on PostgreSQL."""
    totals: dict[str, int] = {}
    for leg in legs:
        totals[leg.account_id] = totals.get(leg.account_id, 0) + leg.amount_minor
    return sorted(totals.items())


def into_transit(payer: str, in_transit: str, sell_minor: int) -> list[Leg]:
    """A cross-border payment when paid: the payer's money leaves for the in-transit account
    (internal, per currency sold) and waits there until the rail settles or returns it."""
    return move(payer, in_transit, sell_minor)


def back_from_transit(in_transit: str, payer: str, sell_minor: int) -> list[Leg]:
    """A returned cross-border payment: everything the payer sent comes back, fee included
    (the fee is taken only when the rail delivers)."""
    return move(in_transit, payer, sell_minor)
