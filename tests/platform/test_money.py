"""Money: decimal strings on the wire in the currency's ISO 4217 exponent, integer minor units in
storage; over-precise, zero and negative amounts are refused (never rounded), and the 422
problem names the field. Unit-level (services/common/money.py) and through the payments API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import select

from services.common.clock import frozen_clock
from services.common.money import AmountIn, Money, amount_refusal, currency_exponents, format_minor, to_minor
from services.payments.main import PaymentsSettings, create_app
from services.payments.models import Account, Journal, Posting

PAYING_CARD = "4242424242424242"
VALIDATION_TYPE = "urn:fintech-sandbox:problem:validation-error"


# --- unit level -------------------------------------------------------------------------------


def test_exponents_come_from_iso_4217() -> None:
    exponents = currency_exponents()
    assert (exponents["JPY"], exponents["CNY"], exponents["USD"], exponents["KWD"]) == (0, 2, 2, 3)


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [
        ("JPY", "100", 100),
        ("JPY", "1", 1),
        ("CNY", "12.34", 1234),
        ("CNY", "12.3", 1230),
        ("CNY", "12", 1200),
        ("CNY", "0.01", 1),
        ("KWD", "1.234", 1234),
        ("KWD", "0.001", 1),
        ("KWD", "7", 7000),
    ],
)
def test_amounts_within_the_exponent_are_accepted_and_stored_as_minor_units(
    currency: str, amount: str, minor: int
) -> None:
    value = AmountIn(currency=currency, amount=amount)
    assert value.minor == minor
    assert isinstance(value.minor, int)
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("currency", "amount"),
    [
        ("JPY", "100.5"),
        ("JPY", "100.0"),  # JPY has no decimals at all, not even a zero one
        ("KWD", "1.2345"),
        ("CNY", "12.345"),
        ("CNY", "0"),
        ("CNY", "0.00"),
        ("JPY", "0"),
        ("KWD", "0.000"),
        ("CNY", "-1.00"),
        ("CNY", "-0.01"),
        ("JPY", "-100"),
        ("CNY", "1e3"),  # Decimal would take it; the wire format does not
        ("CNY", "+5"),
        ("CNY", "1,000.00"),
        ("CNY", " 5"),
        ("CNY", ""),
        ("CNY", "NaN"),
        ("CNY", "Infinity"),
        ("CNY", "0100"),
        ("CNY", "1" * 16),  # more integer digits than a 64-bit minor-unit column holds safely
    ],
)
def test_over_precise_zero_negative_and_malformed_amounts_are_refused(currency: str, amount: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AmountIn(currency=currency, amount=amount)
    assert [e["loc"] for e in caught.value.errors()] == [("amount",)]


@pytest.mark.parametrize(("currency", "largest"), [
    ("JPY", "999999999999999"), ("CNY", "9999999999999.99"), ("KWD", "999999999999.999"),
    ("CLF", "99999999999.9999"),
])
def test_an_amount_is_at_most_15_digits_in_minor_units_so_balances_cannot_overflow(
        currency: str, largest: str) -> None:
    assert to_minor(AmountIn(currency=currency, amount=largest).amount, currency) == 10**15 - 1
    too_large = "1" + largest  # one more digit before the point
    with pytest.raises(ValidationError, match="digits before the point"):
        AmountIn(currency=currency, amount=too_large)
    # Even 9,000 of the largest amounts sum below a signed 64-bit integer's maximum.
    assert 9_000 * (10**15 - 1) < 2**63 - 1


def test_over_precise_amounts_are_never_rounded_by_to_minor() -> None:
    for amount, currency in (("12.345", "CNY"), ("100.5", "JPY"), ("1.2345", "KWD")):
        with pytest.raises(ValueError, match="decimal places"):
            to_minor(amount, currency)


@pytest.mark.parametrize("number", [100, 12.34, 0.1])
def test_a_json_number_is_refused_as_an_amount(number: float) -> None:
    # Documented in money.py: "Money on the wire is a decimal string" (floats lose cents).
    with pytest.raises(ValidationError) as caught:
        AmountIn.model_validate({"currency": "CNY", "amount": number})
    assert [e["loc"] for e in caught.value.errors()] == [("amount",)]


def test_unknown_currency_is_refused_and_named() -> None:
    with pytest.raises(ValidationError) as caught:
        AmountIn(currency="XXX", amount="1")
    assert [e["loc"] for e in caught.value.errors()] == [("currency",)]


def test_amount_in_forbids_unknown_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        AmountIn.model_validate({"currency": "CNY", "amount": "1.00", "scale": 2})
    assert [e["loc"] for e in caught.value.errors()] == [("scale",)]


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1234, "CNY", "12.34"),
        (5, "CNY", "0.05"),
        (0, "CNY", "0.00"),
        (-5, "CNY", "-0.05"),
        (1200, "JPY", "1200"),
        (1234, "KWD", "1.234"),
        (-5, "KWD", "-0.005"),
        (0, "KWD", "0.000"),
    ],
)
def test_responses_print_minor_units_as_exponent_aware_decimal_strings(minor: int, currency: str, text: str) -> None:
    assert format_minor(minor, currency) == text
    assert Money.of(minor, currency).model_dump() == {"amount": text, "currency": currency}
    assert to_minor(text, currency) == minor


# --- through the payments API -----------------------------------------------------------------


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    app = create_app(PaymentsSettings(data_dir=tmp_path, seed_demo_data=False), clock=frozen_clock())
    with TestClient(app) as c:
        yield c


def _open(client: TestClient, currency: str) -> str:
    r = client.post("/accounts", json={"kind": "personal", "owner_name": f"{currency} holder", "currency": currency})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _deposit(client: TestClient, account_id: str, amount: Any, currency: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/deposits",
        json={"account_id": account_id, "card_number": PAYING_CARD,
              "amount": {"amount": amount, "currency": currency}},
    )


def _journal_count(client: TestClient) -> int:
    return client.get("/invariants").json()["journals"]


def _strings_only(value: Any) -> None:
    """Every Money in a response carries its amount as a string, never a JSON number."""
    if isinstance(value, dict):
        if set(value) == {"amount", "currency"}:
            assert isinstance(value["amount"], str), value
        for v in value.values():
            _strings_only(v)
    elif isinstance(value, list):
        for v in value:
            _strings_only(v)


@pytest.mark.parametrize(
    ("currency", "amount", "balance"),
    [("JPY", "100", "100"), ("KWD", "1.234", "1.234"), ("CNY", "12.34", "12.34"), ("CNY", "12.3", "12.30")],
)
def test_api_accepts_amounts_within_the_exponent(client: TestClient, currency: str, amount: str, balance: str) -> None:
    account = _open(client, currency)
    r = _deposit(client, account, amount, currency)
    assert r.status_code == 201, r.text
    journal = r.json()
    assert journal["amount"] == {"amount": balance, "currency": currency}
    _strings_only(journal)
    shown = client.get(f"/accounts/{account}").json()
    assert shown["balance"] == {"amount": balance, "currency": currency}
    _strings_only(shown)
    assert client.get(f"/accounts/{account}/balance").json()["available"] == {"amount": balance, "currency": currency}


@pytest.mark.parametrize(
    ("currency", "amount"),
    [
        ("JPY", "100.5"),
        ("KWD", "1.2345"),
        ("CNY", "12.345"),
        ("CNY", "0"),
        ("CNY", "0.00"),
        ("CNY", "-5.00"),
        ("JPY", "-1"),
        ("CNY", 12.34),  # a JSON number
        ("CNY", 100),
    ],
)
def test_api_refuses_bad_amounts_with_a_422_naming_the_field(client: TestClient, currency: str, amount: Any) -> None:
    account = _open(client, currency)
    r = _deposit(client, account, amount, currency)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == VALIDATION_TYPE
    assert problem["title"] == "Request is not valid"
    assert problem["detail"] == "Invalid field(s): body.amount.amount"
    assert [e["field"] for e in problem["errors"]] == ["body.amount.amount"]
    # Nothing was written and nothing was rounded into the balance.
    assert _journal_count(client) == 0
    assert client.get(f"/accounts/{account}").json()["balance"] == Money.of(0, currency).model_dump()


def test_api_error_message_says_how_many_decimals_the_currency_has(client: TestClient) -> None:
    account = _open(client, "JPY")
    message = _deposit(client, account, "100.5", "JPY").json()["errors"][0]["message"]
    assert "no decimals for JPY" in message
    account = _open(client, "KWD")
    message = _deposit(client, account, "1.2345", "KWD").json()["errors"][0]["message"]
    assert "at most 3 decimals for KWD" in message


def test_storage_is_integer_minor_units(database_url, tmp_path) -> None:
    app = create_app(
        PaymentsSettings(data_dir=tmp_path, database_url=database_url, seed_demo_data=False),
        clock=frozen_clock(),
    )
    with TestClient(app) as client:
        kwd, jpy = _open(client, "KWD"), _open(client, "JPY")
        kwd_journal = _deposit(client, kwd, "1.234", "KWD").json()["id"]
        jpy_journal = _deposit(client, jpy, "100", "JPY").json()["id"]
        with app.state.db.session() as session:
            accounts = {a.id: a for a in session.exec(select(Account).where(Account.id.in_([kwd, jpy])))}
            journals = {j.id: j for j in session.exec(select(Journal))}
            postings = list(session.exec(select(Posting).where(Posting.account_id.in_([kwd, jpy]))))
        assert accounts[kwd].balance_minor == 1234 and type(accounts[kwd].balance_minor) is int
        assert accounts[jpy].balance_minor == 100 and type(accounts[jpy].balance_minor) is int
        assert journals[kwd_journal].amount_minor == 1234
        assert journals[jpy_journal].amount_minor == 100
        assert sorted(p.amount_minor for p in postings) == [100, 1234]
        assert all(type(p.amount_minor) is int and type(p.balance_after_minor) is int for p in postings)
        assert client.get("/invariants").json()["ok"]


@pytest.mark.parametrize(("amount", "says"), [("-1", "'-1' is negative"), ("-0.01", "'-0.01' is negative"),
                                              ("0.00", "'0.00' is zero")])
def test_a_negative_or_zero_amount_is_told_it_must_be_positive(client: TestClient, amount: str, says: str) -> None:
    account = _open(client, "CNY")
    error = _deposit(client, account, amount, "CNY").json()["errors"][0]
    assert error == {"field": "body.amount.amount", "message": f"must be positive: {says}"}


def test_the_amount_schema_is_one_object_whose_rules_know_each_currencys_decimals() -> None:
    # One object (a generated client has one money type); `if`/`then` carry the exponents.
    import jsonschema_rs

    schema = AmountIn.model_json_schema()
    assert schema["type"] == "object" and "anyOf" not in schema
    assert set(schema["properties"]) == {"amount", "currency"}
    valid = jsonschema_rs.validator_for(schema).is_valid
    for currency, amount, ok in (("CNY", "12.34", True), ("CNY", "12.345", False), ("JPY", "100", True),
                                 ("JPY", "100.5", False), ("KWD", "1.234", True), ("KWD", "1.2345", False),
                                 ("JPY", "1" * 15, True), ("CNY", "1" * 15, False), ("CNY", "-1", False)):
        assert valid({"amount": amount, "currency": currency}) is ok, (currency, amount)
        assert (amount_refusal(amount, currency) is None) is ok, (currency, amount)
