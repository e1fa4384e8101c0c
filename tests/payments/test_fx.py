"""Cross-border payments with FX quotes: the figures of each rail to the last minor unit, the
ledger postings (balanced in each currency), and every refusal writing nothing: an expired
quote (the clock moved), a quote paid twice, accounts in the wrong currency, no funds."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.clock import Clock, frozen_clock
from services.common.money import exponent_of
from services.payments import fx
from tests.payments.factories import MakeApp
from tests.support.ledger import assert_problem, snapshot
from tests.support.servers import serve

LI_WEI = "acc_00000000000000000000000001"  # CNY wallet, 5000.00
ZHANG_MIN = "acc_00000000000000000000000002"  # CNY wallet, 1200.00
ALICE = "acc_00000000000000000000000007"  # USD wallet, 2500.00
PROBLEM = "urn:fintech-sandbox:problem:"


@pytest.fixture
def clock() -> Clock:
    return frozen_clock()  # Monday 2026-01-05 09:00 UTC


@pytest.fixture
def client(make_app: MakeApp, clock: Clock) -> Iterator[TestClient]:
    with TestClient(make_app(clock=clock)) as c:
        yield c


def sell(amount: str, currency: str, buy_currency: str, rail: str) -> dict[str, Any]:
    return {"sell": {"amount": amount, "currency": currency}, "buy_currency": buy_currency, "rail": rail}


def quote(client: TestClient | httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/fx/quotes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def pay(quote_id: str, payer: str = LI_WEI, payee: str = ALICE) -> dict[str, str]:
    return {"quote_id": quote_id, "from_account_id": payer, "to_account_id": payee}


# --- the figures -------------------------------------------------------------------------------


def test_rate_table_is_dated_sourced_and_covers_the_sandbox_currencies() -> None:
    table = fx.rate_table()
    assert table.as_of == "2026-01-02"
    assert "sandbox reference rates" in table.source and "illustrative" in table.source
    assert {"CNY", "USD", "EUR", "GBP", "JPY", "HKD", "SGD", "KWD"} <= set(table.per_base)
    assert all(isinstance(v, Decimal) for v in table.per_base.values())


# 1,000.00 CNY to USD. Mid CNY→USD = 1 / 7.12 = 0.140449438… → 0.14044944 (8 significant digits).
# correspondent: rate 0.140449438… × 0.99 = 0.13904494; fee 25.00 USD × 7.12 = 178.00 CNY;
#   (1000.00 − 178.00) × 0.13904494 = 114.2949… → 114.29 USD (rounded down).
# ripple: rate × 0.999 = 0.14030899; fee 2.50 USD × 7.12 = 17.80 CNY;
#   (1000.00 − 17.80) × 0.14030899 = 137.8133… → 137.81 USD.
RAIL_FIGURES = {
    "correspondent": ("0.13904494", "178.00", "114.29", 100, "1-3 business days"),
    "ripple": ("0.14030899", "17.80", "137.81", 10, "3-5 seconds"),
}


@pytest.mark.parametrize("rail", sorted(RAIL_FIGURES))
def test_one_thousand_yuan_to_dollars_on_each_rail(client: TestClient, rail: str) -> None:
    rate, fee, buy, margin, estimate = RAIL_FIGURES[rail]
    q = quote(client, sell("1000.00", "CNY", "USD", rail))
    assert q["id"].startswith("fxq_")
    assert (q["rail"], q["fixed_side"], q["status"], q["journal_id"]) == (rail, "sell", "open", None)
    assert q["mid_rate"] == "0.14044944"
    assert q["rate"] == rate
    assert q["fx_margin_bps"] == margin
    assert q["sell"] == {"amount": "1000.00", "currency": "CNY"}
    assert q["fee"] == {"amount": fee, "currency": "CNY"}
    assert q["buy"] == {"amount": buy, "currency": "USD"}
    assert q["rates_as_of"] == "2026-01-02" and "illustrative" in q["rates_source"]
    # The published rate reproduces the amount exactly: (sell - fee) x rate, rounded down.
    exact = (Decimal("1000.00") - Decimal(fee)) * Decimal(rate)
    assert Decimal(buy) == exact.quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    assert q["created_at"] == "2026-01-05T09:00:00Z"
    assert q["expires_at"] == "2026-01-05T09:00:30Z"  # 30 s by the service clock
    assert q["settlement"]["estimate"] == estimate


def test_ripple_costs_about_a_tenth_of_correspondent_banking(client: TestClient) -> None:
    """The seed's claim, as the rules encode it: a tenth of the fee and of the FX margin."""
    c = quote(client, sell("1000.00", "CNY", "USD", "correspondent"))
    r = quote(client, sell("1000.00", "CNY", "USD", "ripple"))
    assert Decimal(r["fee"]["amount"]) * 10 == Decimal(c["fee"]["amount"])
    assert r["fx_margin_bps"] * 10 == c["fx_margin_bps"]
    at_mid = Decimal("1000.00") * Decimal("1") / Decimal("7.12")  # 140.4494… USD
    cost_c = at_mid - Decimal(c["buy"]["amount"])  # 26.16 USD
    cost_r = at_mid - Decimal(r["buy"]["amount"])  # 2.64 USD
    assert Decimal("9") < cost_c / cost_r < Decimal("11")


def test_fixing_the_amount_bought_rounds_the_amount_sold_up(client: TestClient) -> None:
    # 100.00 USD / 0.13904494 = 719.1948… → 719.20 CNY, + 178.00 fee = 897.20 CNY
    body = {"buy": {"amount": "100.00", "currency": "USD"}, "sell_currency": "CNY", "rail": "correspondent"}
    q = quote(client, body)
    assert q["fixed_side"] == "buy"
    assert q["buy"] == {"amount": "100.00", "currency": "USD"}
    assert q["sell"] == {"amount": "897.20", "currency": "CNY"}
    assert q["fee"] == {"amount": "178.00", "currency": "CNY"}
    # ripple: 100.00 / 0.14030899 = 712.7180… → 712.72, + 17.80 = 730.52 CNY
    q = quote(client, {**body, "rail": "ripple"})
    assert q["sell"] == {"amount": "730.52", "currency": "CNY"}


def test_currencies_of_other_exponents_round_to_their_own_minor_unit(client: TestClient) -> None:
    # JPY (0 decimals) → KWD (3): mid 0.306 / 150 = 0.00204; ripple rate 0.00204 × 0.999 =
    # 0.00203796; fee 2.50 USD × 150 = 375 JPY; (1000000 − 375) × 0.00203796 = 2037.1957… → 2037.195
    q = quote(client, sell("1000000", "JPY", "KWD", "ripple"))
    assert (q["mid_rate"], q["rate"]) == ("0.00204", "0.00203796")
    assert q["fee"] == {"amount": "375", "currency": "JPY"}
    assert q["buy"] == {"amount": "2037.195", "currency": "KWD"}
    # KWD → JPY, buy side fixed: 10000 JPY / 489.70588 = 20.42041… → 20.421 KWD, + fee 0.765 KWD
    q = quote(client, {"buy": {"amount": "10000", "currency": "JPY"}, "sell_currency": "KWD", "rail": "ripple"})
    assert q["rate"] == "489.70588"
    assert q["fee"] == {"amount": "0.765", "currency": "KWD"}
    assert q["sell"] == {"amount": "21.186", "currency": "KWD"}


@pytest.mark.parametrize("rail", sorted(fx.RAILS))
def test_rounding_never_pays_out_money_nobody_paid_for(rail: str) -> None:
    """Over many pairs and amounts: what arrives is at most (sold - fee) x rate, short of it by
    less than one minor unit; fixing the amount bought, the payer covers it in full."""
    pairs = [("CNY", "USD"), ("USD", "JPY"), ("JPY", "KWD"), ("KWD", "GBP"), ("EUR", "HKD"), ("SGD", "CNY")]
    for sold, bought in pairs:
        unit_sold = Decimal(1).scaleb(-exponent_of(sold))
        unit_bought = Decimal(1).scaleb(-exponent_of(bought))
        for amount_minor in (10**6 + 7, 12_345_678, 10**9 + 1, 9_876_543_210):
            f = fx.quote(rail, sold, bought, "sell", amount_minor)
            value = (Decimal(f.sell_minor - f.fee_minor) * unit_sold) * f.rate
            got = Decimal(f.buy_minor) * unit_bought
            assert got <= value < got + unit_bought
            g = fx.quote(rail, sold, bought, "buy", amount_minor)
            assert (Decimal(g.sell_minor - g.fee_minor) * unit_sold) * g.rate >= Decimal(amount_minor) * unit_bought


def test_correspondent_settlement_skips_the_weekend(make_app: MakeApp) -> None:
    friday = frozen_clock("2026-01-09T15:00:00+00:00")
    with TestClient(make_app(clock=friday)) as c:
        q = quote(c, sell("1000.00", "CNY", "USD", "correspondent"))
        assert q["settlement"]["settles_by"] == "2026-01-14T15:00:00Z"  # Wednesday: Mon, Tue, Wed
        q = quote(c, sell("1000.00", "CNY", "USD", "ripple"))
        assert q["settlement"]["settles_by"] == "2026-01-09T15:00:05Z"


def test_quotes_that_cannot_be_priced_are_refused(client: TestClient) -> None:
    assert_problem(client.post("/fx/quotes", json=sell("10.00", "CNY", "CNY", "ripple")), 409, "same-currency")
    # 100.00 CNY does not cover the 178.00 CNY wire fee: nothing would arrive.
    problem = assert_problem(client.post("/fx/quotes", json=sell("100.00", "CNY", "USD", "correspondent")),
                             409, "amount-too-small")
    assert problem["fee"] == {"amount": "178.00", "currency": "CNY"}
    for body in (sell("10.00", "AUD", "USD", "ripple"), sell("10.00", "CNY", "AUD", "ripple"),
                 sell("10.001", "CNY", "USD", "ripple"), sell("10.00", "CNY", "USD", "swift"),
                 {**sell("10.00", "CNY", "USD", "ripple"), "sell_currency": "CNY"}):
        assert_problem(client.post("/fx/quotes", json=body), 422, "validation-error")
    assert_problem(client.get("/fx/quotes/fxq_0000000000000000000000zzzz"), 404, "not-found")


# --- paying a quote ------------------------------------------------------------------------------


def test_cross_border_payment_posts_both_currencies_through_the_rail(database_url, make_app: MakeApp) -> None:
    """Paid: the payer's money goes into transit (two postings); settled after the rail's 5
    seconds: from transit through the rail's liquidity, in both currencies, to the payee."""
    clock = frozen_clock()
    with TestClient(make_app(clock=clock, database_url=database_url, due_work_interval_seconds=0)) as client:
        q = quote(client, sell("1000.00", "CNY", "USD", "ripple"))
        r = client.post("/cross-border-payments", json={**pay(q["id"]), "description": "invoice 42"})
        assert r.status_code == 201, r.text
        journal = r.json()
        assert journal["id"].startswith("xb_") and journal["kind"] == "cross_border"
        assert journal["amount"] == {"amount": "1000.00", "currency": "CNY"}
        assert journal["fee"] == {"amount": "17.80", "currency": "CNY"}
        assert (journal["from_account_id"], journal["to_account_id"]) == (LI_WEI, ALICE)
        assert journal["fx"]["quote_id"] == q["id"]
        assert journal["fx"]["buy"] == {"amount": "137.81", "currency": "USD"}
        assert journal["fx"]["settlement"]["settles_by"] == "2026-01-05T09:00:05Z"
        assert journal["fx"]["status"] == "pending"
        internal = lambda: {a["owner_name"] + ":" + a["currency"]: a["balance"]["amount"] for a in  # noqa: E731
                            client.get("/accounts", params={"kind": "internal", "limit": 100}).json()["data"]}
        assert {p["account_id"]: p["amount"]["amount"] for p in journal["postings"]}[LI_WEI] == "-1000.00"
        assert internal()["cross border in transit:CNY"] == "1000.00"
        assert client.get(f"/accounts/{ALICE}").json()["balance"]["amount"] == "2500.00"  # not yet

        assert client.post("/_sandbox/clock/advance", json={"seconds": 5}).json()["fired"] == {
            "cross-border-settlement": 1}
        paid = client.get(f"/journals/{journal['id']}").json()
        assert paid["fx"]["status"] == "settled" and paid["fx"]["settled_at"] == "2026-01-05T09:00:05Z"
        settlement = client.get(f"/journals/{paid['fx']['closing_journal_id']}").json()
        assert settlement["kind"] == "settlement" and settlement["id"].startswith("xbs_")
        by_currency: dict[str, Decimal] = {}
        for p in settlement["postings"]:
            by_currency[p["amount"]["currency"]] = by_currency.get(p["amount"]["currency"], 0) + Decimal(p["amount"]["amount"])
        assert by_currency == {"CNY": 0, "USD": 0}  # balanced in each currency
        moves = {p["account_id"]: p["amount"] for p in settlement["postings"]}
        assert moves[ALICE] == {"amount": "137.81", "currency": "USD"}
        balances = internal()
        assert balances["cross border in transit:CNY"] == "0.00"
        assert balances["ripple liquidity:CNY"] == "982.20"
        assert balances["ripple liquidity:USD"] == "-137.81"  # may go negative
        assert balances["cross border fees:CNY"] == "17.80"
        assert client.get(f"/accounts/{LI_WEI}").json()["balance"]["amount"] == "4000.00"
        assert client.get(f"/accounts/{ALICE}").json()["balance"]["amount"] == "2637.81"

        # The payment reads back the same, alone and in the list; each side's statement shows it.
        listed = [j for j in client.get("/journals", params={"limit": 100}).json()["data"] if j["id"] == paid["id"]]
        assert listed == [paid]
        for account, shown in ((LI_WEI, paid["id"]), (ALICE, settlement["id"])):
            ids = [j["id"] for j in client.get(f"/accounts/{account}/journals", params={"limit": 100}).json()["data"]]
            assert shown in ids
        assert client.get(f"/fx/quotes/{q['id']}").json()["status"] == "used"
        assert client.get(f"/fx/quotes/{q['id']}").json()["journal_id"] == journal["id"]

        report = client.get("/invariants").json()
        assert report["ok"], report
        totals = {c["currency"]: c for c in report["currencies"]}
        assert totals["USD"]["debits"] == totals["USD"]["credits"]

        # A cross-border journal is not refundable: the refund schema takes transfers and payments.
        r = client.post("/refunds", json={"journal_id": journal["id"]})
        problem = assert_problem(r, 422, "validation-error")
        assert problem["errors"][0]["field"] == "body.journal_id"


def test_an_expired_quote_is_refused_and_nothing_is_written(client: TestClient, clock: Clock) -> None:
    q = quote(client, sell("1000.00", "CNY", "USD", "correspondent"))
    clock.advance(timedelta(seconds=29))
    assert client.get(f"/fx/quotes/{q['id']}").json()["status"] == "open"
    clock.advance(timedelta(seconds=1))
    assert client.get(f"/fx/quotes/{q['id']}").json()["status"] == "expired"
    before = snapshot(client)
    problem = assert_problem(client.post("/cross-border-payments", json=pay(q["id"])), 409, "quote-expired")
    assert problem["expired_at"] == "2026-01-05T09:00:30Z"  # as every time on the wire
    assert snapshot(client) == before


def test_a_quote_pays_once(client: TestClient) -> None:
    q = quote(client, sell("500.00", "CNY", "USD", "ripple"))
    first = client.post("/cross-border-payments", json=pay(q["id"]))
    assert first.status_code == 201, first.text
    before = snapshot(client)
    problem = assert_problem(client.post("/cross-border-payments", json=pay(q["id"])), 409, "quote-used")
    assert problem["journal_id"] == first.json()["id"]
    assert snapshot(client) == before


def test_refusals_write_nothing_and_leave_the_quote_open(client: TestClient) -> None:
    q = quote(client, sell("2000.00", "CNY", "USD", "ripple"))
    before = snapshot(client)
    cases = [
        (pay(q["id"], payer=ALICE, payee=ALICE), 409, "same-account"),
        (pay(q["id"], payer=ALICE, payee=LI_WEI), 409, "currency-mismatch"),  # payer holds USD
        (pay(q["id"], payer=LI_WEI, payee=ZHANG_MIN), 409, "currency-mismatch"),  # payee holds CNY
        (pay(q["id"], payer=ZHANG_MIN), 409, "insufficient-funds"),  # 1200.00 CNY < 2000.00
        (pay(q["id"], payer="acc_0000000000000000000000zzzz"), 404, "not-found"),
        (pay("fxq_0000000000000000000000zzzz"), 404, "not-found"),
    ]
    for body, status, slug in cases:
        assert_problem(client.post("/cross-border-payments", json=body), status, slug)
        assert snapshot(client) == before
    assert client.get(f"/fx/quotes/{q['id']}").json()["status"] == "open"
    assert client.post("/cross-border-payments", json=pay(q["id"])).status_code == 201
    assert client.get("/invariants").json()["ok"]


def test_idempotency_key_replays_the_payment(client: TestClient) -> None:
    q = quote(client, sell("300.00", "CNY", "USD", "ripple"))
    headers = {"Idempotency-Key": "xb-once"}
    first = client.post("/cross-border-payments", json=pay(q["id"]), headers=headers)
    again = client.post("/cross-border-payments", json=pay(q["id"]), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    xb = [j for j in client.get("/journals", params={"limit": 100}).json()["data"] if j["kind"] == "cross_border"]
    assert len(xb) == 1
    assert client.get("/invariants").json()["ok"]


def test_concurrent_payments_of_one_quote_pay_it_once(database_url, make_app: MakeApp) -> None:
    app = make_app(clock=Clock(), database_url=database_url)  # wall clock: the quote stays open 30 s
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        q = quote(client, sell("100.00", "CNY", "USD", "ripple"))

        def attempt(_: int) -> int:
            with httpx.Client(base_url=base, timeout=30) as c:
                return c.post("/cross-border-payments", json=pay(q["id"])).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(attempt, range(6)))
        assert sorted(statuses) == [201] + [409] * 5, statuses
        assert client.get(f"/accounts/{LI_WEI}").json()["balance"]["amount"] == "4900.00"
        assert client.get("/invariants").json()["ok"]
