"""Each AML rule fires, and does not fire on a near miss (pure: no HTTP, no database)."""

from __future__ import annotations

import pytest

from sandbox.gateway.screening import History, RuleSet, Transaction, Unscreenable

RULES = RuleSet.load()
HOUR = 3600.0


def tx(amount: str, *, payer: str | None = "acc_a", payee: str | None = "acc_b", currency: str = "CNY",
       payer_name: str | None = None, payee_name: str | None = None, country: str | None = None) -> Transaction:
    op = RULES.screened_operation("payments", "POST", "/transfers")
    assert op is not None
    t = RULES.transaction(op, {"from_account_id": payer, "to_account_id": payee,
                               "amount": {"amount": amount, "currency": currency}}, "ptp_test")
    t.payer, t.payee, t.payer_name, t.payee_name, t.country = payer, payee, payer_name, payee_name, country
    return t


def fired(t: Transaction, history: History | None = None, now: float = 1e9) -> list[str]:
    return RULES.screen(t, history or History(RULES.horizon_s), now).rules


def test_large_value_fires_at_the_threshold() -> None:
    assert "large_value" in fired(tx("10000.00"))


def test_large_value_does_not_fire_a_cent_below() -> None:
    assert "large_value" not in fired(tx("9999.99"))


def test_large_value_converts_other_currencies() -> None:
    assert "large_value" in fired(tx("1500.00", currency="USD"))  # 10,650 CNY at the teaching rate
    assert "large_value" not in fired(tx("1400.00", currency="USD"))


def _history_with(amounts: list[str], at: float, payer: str = "acc_a") -> History:
    history = History(RULES.horizon_s)
    for amount in amounts:
        history.record(tx(amount, payer=payer), at)
    return history


def test_structuring_fires_on_the_third_just_below_amount() -> None:
    history = _history_with(["9100.00", "9200.00"], at=1e9 - 2 * HOUR)
    decision = RULES.screen(tx("9300.00"), history, 1e9)
    assert "structuring" in decision.rules
    assert decision.outcome == "review"


def test_structuring_does_not_fire_outside_the_window() -> None:
    history = _history_with(["9100.00", "9200.00"], at=1e9 - 25 * HOUR)
    assert "structuring" not in fired(tx("9300.00"), history)


def test_structuring_does_not_fire_below_the_band() -> None:
    history = _history_with(["7999.00", "7999.00"], at=1e9 - HOUR)
    assert "structuring" not in fired(tx("7999.00"), history)


def test_velocity_fires_on_the_twenty_first_in_an_hour() -> None:
    history = _history_with(["1.00"] * 20, at=1e9 - 60)
    assert "velocity" in fired(tx("1.00"), history)


def test_velocity_does_not_fire_on_the_twentieth() -> None:
    history = _history_with(["1.00"] * 19, at=1e9 - 60)
    assert "velocity" not in fired(tx("1.00"), history)


def _inflow(amount: str, account: str = "acc_mule", at: float = 1e9 - HOUR) -> History:
    history = History(RULES.horizon_s)
    history.record(tx(amount, payer="acc_src", payee=account), at)
    return history


def test_rapid_pass_through_fires_when_most_of_an_inflow_leaves() -> None:
    assert "rapid_pass_through" in fired(tx("9000.00", payer="acc_mule"), _inflow("10000.00"))


def test_rapid_pass_through_does_not_fire_below_the_ratio() -> None:
    assert "rapid_pass_through" not in fired(tx("8999.99", payer="acc_mule"), _inflow("10000.00"))


def test_rapid_pass_through_does_not_fire_after_the_window() -> None:
    history = _inflow("10000.00", at=1e9 - 49 * HOUR)
    assert "rapid_pass_through" not in fired(tx("9000.00", payer="acc_mule"), history)


def test_high_risk_jurisdiction_blocks_call_for_action_countries() -> None:
    decision = RULES.screen(tx("10.00", country="KP"), History(RULES.horizon_s), 1e9)
    assert decision.rules == ["high_risk_jurisdiction"]
    assert decision.outcome == "block"


def test_high_risk_jurisdiction_reads_the_currency() -> None:
    assert "high_risk_jurisdiction" in fired(tx("10.00", currency="IRR"))


def test_high_risk_jurisdiction_fires_on_the_currency_a_cross_border_payment_buys() -> None:
    op = RULES.screened_operation("payments", "POST", "/cross-border-payments")
    assert op is not None
    body = {"quote_id": "fxq_1", "from_account_id": "acc_a", "to_account_id": "acc_b",
            "_lookup": {"sell": {"amount": "100.00", "currency": "CNY"}, "buy": {"amount": "1.00", "currency": "IRR"}}}
    t = RULES.transaction(op, body, "ptp_test")
    assert t.counter_currency == "IRR"
    decision = RULES.screen(t, History(RULES.horizon_s), 1e9)
    assert decision.outcome == "block"
    assert "currency bought IRR points to IR" in decision.hits[0].reason


def test_high_risk_jurisdiction_does_not_fire_for_other_countries() -> None:
    assert "high_risk_jurisdiction" not in fired(tx("10.00", country="FR"))


def test_round_amount_fires_on_a_round_large_amount() -> None:
    assert "round_amount" in fired(tx("5000.00"))


def test_round_amount_does_not_fire_on_a_near_miss() -> None:
    assert "round_amount" not in fired(tx("5000.01"))
    assert "round_amount" not in fired(tx("4000.00"))  # round, but below the minimum


@pytest.mark.parametrize("name", ["Borys Wexlanow", "boris VEXLANOV", "Zhaolinsky Tiegang",
                                  "Blue Lantern Phantom Trading", "Mirela Quandt Sorvino"])
def test_sanctions_blocks_listed_names_aliases_and_transliterations(name: str) -> None:
    decision = RULES.screen(tx("10.00", payee_name=name), History(RULES.horizon_s), 1e9)
    assert decision.outcome == "block"
    assert "SBX-SYN-" in decision.hits[0].reason


def test_sanctions_reviews_a_close_but_not_certain_match() -> None:
    decision = RULES.screen(tx("10.00", payer_name="Boris Vexlanovitch"), History(RULES.horizon_s), 1e9)
    assert decision.rules == ["sanctions"]
    assert decision.outcome == "review"


@pytest.mark.parametrize("name", ["Boris Vasiliev", "Li Wei", "Blue Lantern Noodles"])
def test_sanctions_does_not_fire_on_a_near_miss(name: str) -> None:
    assert "sanctions" not in fired(tx("10.00", payee_name=name))


def test_decision_records_the_rule_set_version() -> None:
    assert RULES.screen(tx("1.00"), History(RULES.horizon_s), 1e9).ruleset_version == RULES.version


def test_scores_add_up_to_a_block() -> None:
    # large value (10) + round (3) + pass-through (10) + IRR-free: 23 < 25 is still review ...
    history = _inflow("20000.00", account="acc_a")
    assert RULES.screen(tx("20000.00"), history, 1e9).outcome == "review"
    # ... and a grey-list country (8) on top makes it a block.
    assert RULES.screen(tx("20000.00", country="SY"), history, 1e9).outcome == "block"


def test_a_request_without_a_readable_amount_is_unscreenable() -> None:
    op = RULES.screened_operation("payments", "POST", "/transfers")
    with pytest.raises(Unscreenable):
        RULES.transaction(op, {"amount": {"amount": 12, "currency": "CNY"}}, "ptp_test")


def test_open_banking_payment_initiation_reads_obie_fields() -> None:
    op = RULES.screened_operation("open-banking", "POST", "/open-banking/v3.1/pisp/domestic-payments")
    body = {"Data": {"ConsentId": "c1", "Initiation": {
        "InstructedAmount": {"Amount": "12000.00", "Currency": "GBP"},
        "CreditorAccount": {"SchemeName": "UK.OBIE.SortCodeAccountNumber", "Identification": "08080021325698",
                            "Name": "Nimbus Harrowgate Holdings"}}}}
    t = RULES.transaction(op, body, "ptp_test")
    decision = RULES.screen(t, History(RULES.horizon_s), 1e9)
    assert t.payee == "08080021325698"
    assert {"large_value", "sanctions"} <= set(decision.rules)
    assert decision.outcome == "block"


def test_a_negative_amount_is_unscreenable_and_the_refusal_says_it_must_be_positive() -> None:
    op = RULES.screened_operation("payments", "POST", "/transfers")
    with pytest.raises(Unscreenable, match=r"must be positive: '-1' is negative"):
        RULES.transaction(op, {"amount": {"amount": "-1", "currency": "CNY"}}, "ptp_test")
