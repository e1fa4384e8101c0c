"""Payments scenarios from the seed: a red packet in chat, a merchant's QR code, and a
cross-border payment on the ripple rail against the correspondent one."""

from __future__ import annotations

import time

from datetime import datetime
from decimal import Decimal

from sandbox.demo.narration import WALLET_CO, Scene, Step, fresh_key, money
from services.common.demo import demo_account

LI_WEI = demo_account("Li Wei").id
ZHANG_MIN = demo_account("Zhang Min").id
NOODLE_HOUSE = demo_account("Lanzhou Noodle House").id
ALICE = demo_account("Alice Example").id
PAYING_CARD = "4242424242424242"  # the test card that pays (payments' docs list the declining ones)
TOP_UP = Decimal("2000.00")  # below the AML large-value and structuring bands: a plain top-up


def balance(scene: Scene, account_id: str, owner: str, why: str = "") -> Decimal:
    answer = scene.call(Step(why or f"{owner}'s balance", "GET", f"/payments/accounts/{account_id}/balance",
                             WALLET_CO, show=("available.amount", "available.currency")))
    return money(answer.body, "available.amount")


def ensure_li_wei_holds(scene: Scene, at_least: Decimal) -> Decimal:
    """Li Wei's balance, topped up by card first when earlier runs have spent it: the scenarios
    spend her seeded 5,000.00 CNY a little at a time, so they can run again and again."""
    held = balance(scene, LI_WEI, "Li Wei", "Li Wei's wallet before she pays")
    if held >= at_least:
        return held
    scene.say(f"Earlier runs spent Li Wei's wallet down to {held} CNY: she tops it up by card first.")
    scene.call(Step(f"Li Wei tops up {TOP_UP} CNY from the test card that pays", "POST", "/payments/deposits",
                    WALLET_CO, expect=201, headers={"Idempotency-Key": fresh_key()},
                    json={"account_id": LI_WEI, "amount": {"amount": str(TOP_UP), "currency": "CNY"},
                          "card_number": PAYING_CARD}, show=("id", "amount.amount")))
    held = balance(scene, LI_WEI, "Li Wei", "Li Wei's wallet after the top-up")
    scene.check(held >= at_least, f"Li Wei now holds at least {at_least} CNY", f"she holds {held}")
    return held


def red_packet(scene: Scene) -> None:
    packet = Decimal("66.66")  # a lucky amount, as red packets often are
    scene.say("WeChat-style: Li Wei sends her friend Zhang Min a red packet (红包) in chat. It is a "
              "wallet-to-wallet transfer: personal to personal, so no fee.")
    li_before = ensure_li_wei_holds(scene, packet)
    zhang_before = balance(scene, ZHANG_MIN, "Zhang Min", "Zhang Min's wallet before")
    sent = scene.call(Step(
        f"the red packet: {packet} CNY from Li Wei to Zhang Min (a fresh Idempotency-Key: a retry "
        "would not pay twice)", "POST", "/payments/transfers", WALLET_CO, expect=201,
        headers={"Idempotency-Key": fresh_key()},
        json={"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN,
              "amount": {"amount": str(packet), "currency": "CNY"}, "description": "red packet 红包"},
        show=("id", "kind", "amount.amount", "fee.amount")))
    scene.check(money(sent.body, "fee.amount") == 0, "a red packet between friends costs no fee",
                f"the fee was {sent['fee.amount']}")
    li_after = balance(scene, LI_WEI, "Li Wei", "Li Wei's wallet after")
    zhang_after = balance(scene, ZHANG_MIN, "Zhang Min", "Zhang Min's wallet after")
    scene.check(li_before - li_after == packet, f"Li Wei's balance fell by {packet} CNY ({li_before} → {li_after})",
                f"it moved by {li_after - li_before}")
    scene.check(zhang_after - zhang_before == packet,
                f"Zhang Min's balance rose by {packet} CNY ({zhang_before} → {zhang_after})",
                f"it moved by {zhang_after - zhang_before}")


def merchant_qr(scene: Scene) -> None:
    price = Decimal("25.00")
    scene.say("Alipay-style scan to pay: Lanzhou Noodle House shows a QR code for a bowl of noodles, "
              "Li Wei's wallet scans it and pays. A personal wallet paying a merchant: the merchant "
              "pays 0.6%.")
    li_before = ensure_li_wei_holds(scene, price)
    qr = scene.call(Step(f"the noodle house's dynamic QR for {price} CNY (EMVCo merchant-presented, CRC-16 checked)",
                         "GET", f"/payments/accounts/{NOODLE_HOUSE}/qr?amount={price}", WALLET_CO,
                         show=("dynamic", "amount.amount", "payload")))
    payload = qr["payload"]
    scene.check(isinstance(payload, str) and payload.startswith("000201") and "Lanzhou Noodle House" in payload,
                "the payload is an EMVCo QR string naming the merchant", f"it is {payload!r}")
    merchant_before = balance(scene, NOODLE_HOUSE, "Lanzhou Noodle House", "the noodle house's takings before")
    paid = scene.call(Step("Li Wei's wallet pays the scanned payload (through the gateway a QR payment states "
                           "its amount, so it can be screened)", "POST", "/payments/qr-payments", WALLET_CO,
                           expect=201, headers={"Idempotency-Key": fresh_key()},
                           json={"payload": payload, "from_account_id": LI_WEI,
                                 "amount": {"amount": str(price), "currency": "CNY"}},
                           show=("id", "to_account_id", "amount.amount", "fee.amount")))
    fee = money(paid.body, "fee.amount")
    scene.check(paid["to_account_id"] == NOODLE_HOUSE, "the QR took the money to the merchant it names",
                f"it went to {paid['to_account_id']}")
    scene.check(fee == (price * Decimal("0.006")).quantize(Decimal("0.01")),
                f"the merchant fee is 0.6% of {price}: {fee} CNY", f"it is {fee}")
    li_after = balance(scene, LI_WEI, "Li Wei", "Li Wei's wallet after")
    merchant_after = balance(scene, NOODLE_HOUSE, "Lanzhou Noodle House", "the noodle house's takings after")
    scene.check(li_before - li_after == price, f"Li Wei paid {price} CNY ({li_before} → {li_after})",
                f"her balance moved by {li_after - li_before}")
    scene.check(merchant_after - merchant_before == price - fee,
                f"the noodle house received {price - fee} CNY after the fee", f"it received {merchant_after - merchant_before}")


def _settles_in(quote: dict) -> float:
    """Seconds from the quote to the moment the money would arrive on the real rail."""
    created = datetime.fromisoformat(quote["created_at"])
    settles = datetime.fromisoformat(quote["settlement"]["settles_by"])
    return (settles - created).total_seconds()


def _wait_until_settled(scene: Scene, journal_id: str, at_most_s: float) -> None:
    """Poll, without narrating each look, until the payment is no longer pending (payments
    settles a ripple payment by itself, seconds after it was paid), for at most `at_most_s`."""
    deadline = time.monotonic() + at_most_s
    while time.monotonic() < deadline:
        answer = scene.http.get(f"/payments/journals/{journal_id}", headers={"X-API-Key": WALLET_CO.api_key})
        if answer.status_code == 200 and answer.json().get("fx", {}).get("status") != "pending":
            return
        time.sleep(0.5)


def cross_border(scene: Scene) -> None:
    sent = Decimal("1000.00")
    scene.say("Ripple's claim in the seed: a bank-to-bank payment abroad takes 1–3 days by correspondent "
              "banking with high fees, seconds on Ripple at about a tenth of the fee. Li Wei (CNY) pays "
              "Alice Example (USD): both rails quote the same 1,000.00 CNY.")
    ensure_li_wei_holds(scene, sent)
    quotes = {}
    for rail in ("correspondent", "ripple"):
        quotes[rail] = scene.call(Step(
            f"a quote on the {rail} rail: {sent} CNY sold for USD", "POST", "/payments/fx/quotes", WALLET_CO,
            expect=201, json={"sell": {"amount": str(sent), "currency": "CNY"}, "buy_currency": "USD", "rail": rail},
            show=("id", "rate", "fee.amount", "buy.amount", "settlement.estimate"))).body
    wire, ripple = quotes["correspondent"], quotes["ripple"]
    fee_ratio = money(wire, "fee.amount") / money(ripple, "fee.amount")
    scene.check(Decimal(8) <= fee_ratio <= Decimal(12),
                f"ripple's fee is about a tenth of the correspondent's: {ripple['fee']['amount']} against "
                f"{wire['fee']['amount']} CNY ({fee_ratio:.1f}x)", f"the ratio is {fee_ratio:.2f}")
    wire_days, ripple_seconds = _settles_in(wire) / 86400, _settles_in(ripple)
    scene.check(wire_days >= 1 and ripple_seconds <= 10,
                f"the correspondent rail settles in days ({wire['settlement']['estimate']}: by "
                f"{wire['settlement']['settles_by']}, {wire_days:.1f} days), ripple in seconds "
                f"({ripple['settlement']['estimate']})",
                f"they settle in {wire_days:.2f} days and {ripple_seconds:.0f} s")
    scene.check(money(ripple, "buy.amount") > money(wire, "buy.amount"),
                f"more arrives by ripple: {ripple['buy']['amount']} USD against {wire['buy']['amount']} USD")
    alice_before = balance(scene, ALICE, "Alice Example", "Alice's USD wallet before")
    li_before = balance(scene, LI_WEI, "Li Wei", "Li Wei's CNY wallet before")
    paid = scene.call(Step("Li Wei pays the ripple quote to Alice (a quote pays once, within 30 seconds)", "POST",
                           "/payments/cross-border-payments", WALLET_CO, expect=201,
                           headers={"Idempotency-Key": fresh_key()},
                           json={"quote_id": ripple["id"], "from_account_id": LI_WEI, "to_account_id": ALICE},
                           show=("id", "kind", "fx.rail", "amount.amount", "fx.buy.amount")))
    scene.check(paid["fx.quote_id"] == ripple["id"], "the journal paid the ripple quote", f"it paid {paid['fx.quote_id']}")
    scene.check(paid["fx.status"] == "pending", "the payment is pending: the money left Li Wei and is in transit",
                f"its status is {paid['fx.status']}")
    _wait_until_settled(scene, paid.body["id"], ripple_seconds + 15)
    settled = scene.call(Step("the ripple payment, seconds later: the rail has settled it", "GET",
                              f"/payments/journals/{paid.body['id']}", WALLET_CO,
                              show=("fx.status", "fx.settled_at", "fx.closing_journal_id")))
    scene.check(settled["fx.status"] == "settled", "the ripple payment settled within seconds",
                f"it is still {settled['fx.status']}")
    li_after = balance(scene, LI_WEI, "Li Wei", "Li Wei's CNY wallet after")
    alice_after = balance(scene, ALICE, "Alice Example", "Alice's USD wallet after")
    scene.check(li_before - li_after == sent, f"Li Wei's wallet paid {sent} CNY, the fee included",
                f"it moved by {li_after - li_before}")
    arrived = money(ripple, "buy.amount")
    scene.check(alice_after - alice_before == arrived, f"Alice received the quoted {arrived} USD",
                f"she received {alice_after - alice_before}")
