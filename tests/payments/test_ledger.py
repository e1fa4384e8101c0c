"""The ledger's rules (services/payments/ledger.py) on plain data: no HTTP, no database.

A leg's amount is what it adds to its account's balance; every journal's legs sum to zero (in
each currency, for a cross-border one)."""

from __future__ import annotations

import pytest

from services.payments.ledger import (
    Leg,
    UnbalancedJournal,
    check_balanced,
    check_balanced_per_currency,
    cross_border,
    merchant_fee,
    merchant_payment,
    move,
    net_by_account,
    refund,
    refund_fee_share,
)


def balances_after(legs: list[Leg], opening: dict[str, int]) -> dict[str, int]:
    """What the accounts hold once the legs are applied (as the balance UPDATEs do)."""
    balances = dict(opening)
    for account_id, delta in net_by_account(legs):
        balances[account_id] = balances.get(account_id, 0) + delta
    return balances


def test_a_plain_move_debits_one_account_and_credits_the_other() -> None:
    assert move("wallet", "shop", 1_234) == [Leg("wallet", -1_234), Leg("shop", 1_234)]


def test_a_merchant_payment_costs_the_payer_the_amount_and_the_merchant_the_fee() -> None:
    legs = merchant_payment("payer", "merchant", "fees", 10_000, merchant_fee(10_000))
    after = balances_after(legs, {"payer": 50_000})
    assert after == {"payer": 40_000, "merchant": 9_940, "fees": 60}
    assert sum(leg.amount_minor for leg in legs) == 0


@pytest.mark.parametrize(("amount_minor", "fee_minor"), [
    (10_000, 60),  # 0.6% of 100.00 is 0.60
    (83, 0),  # 0.6% of 0.83 is 0.00498: rounds to 0.00
    (84, 1),  # 0.504: half up reaches 0.01
    (1, 0),
    (0, 0),
])
def test_the_merchant_fee_is_six_tenths_of_a_percent_rounded_half_up(amount_minor: int, fee_minor: int) -> None:
    assert merchant_fee(amount_minor) == fee_minor


def test_legs_that_do_not_sum_to_zero_are_refused() -> None:
    with pytest.raises(UnbalancedJournal):
        check_balanced([Leg("a", -100), Leg("b", 99)])


def test_partial_refunds_return_the_fee_in_proportion_and_the_last_takes_what_is_left() -> None:
    amount, fee = 10_000, 60  # a 100.00 payment, 0.60 fee
    first = refund_fee_share(amount, fee, already_refunded=0, fee_already_refunded=0, refund_minor=3_333)
    second = refund_fee_share(amount, fee, already_refunded=3_333, fee_already_refunded=first, refund_minor=6_667)
    assert (first, second) == (19, 41)
    assert first + second == fee  # a full refund returns the whole fee exactly


def test_a_refund_never_pays_the_merchant_more_fee_than_it_refunds() -> None:
    assert refund_fee_share(100, 60, already_refunded=99, fee_already_refunded=0, refund_minor=1) == 1


def test_a_refund_reverses_the_payment_it_refunds() -> None:
    payment = merchant_payment("payer", "merchant", "fees", 10_000, 60)
    full_refund = refund("payer", "merchant", "fees", 10_000, 60)
    assert balances_after(payment + full_refund, {"payer": 10_000}) == {"payer": 10_000, "merchant": 0, "fees": 0}


def test_a_refund_of_a_fee_free_transfer_has_no_fee_leg() -> None:
    assert refund("payer", "payee", None, 500, 0) == [Leg("payer", 500), Leg("payee", -500)]


def test_a_cross_border_payment_balances_in_each_currency() -> None:
    currency_of = {"payer": "CNY", "sell_pool": "CNY", "fees": "CNY", "buy_pool": "USD", "payee": "USD"}
    legs = cross_border("payer", "payee", "sell_pool", "buy_pool", "fees",
                        sell_minor=100_000, fee_minor=1_800, buy_minor=13_500, currency_of=currency_of)
    after = balances_after(legs, {})
    assert after == {"payer": -100_000, "sell_pool": 98_200, "fees": 1_800, "buy_pool": -13_500, "payee": 13_500}


def test_a_cross_border_payment_without_a_fee_has_no_fee_leg() -> None:
    currency_of = {"payer": "CNY", "sell_pool": "CNY", "fees": "CNY", "buy_pool": "USD", "payee": "USD"}
    legs = cross_border("payer", "payee", "sell_pool", "buy_pool", "fees", 100, 0, 14, currency_of)
    assert "fees" not in {leg.account_id for leg in legs}


def test_legs_that_balance_overall_but_not_per_currency_are_refused() -> None:
    with pytest.raises(UnbalancedJournal):
        check_balanced_per_currency([Leg("cny", -100), Leg("usd", 100)], {"cny": "CNY", "usd": "USD"})


def test_each_account_changes_once_in_id_order_so_opposite_transfers_lock_alike() -> None:
    legs = [Leg("b", -5), Leg("a", 3), Leg("b", 2)]
    assert net_by_account(legs) == [("a", 3), ("b", -3)]
    assert net_by_account(move("x", "y", 1)) == net_by_account(move("y", "x", -1))
