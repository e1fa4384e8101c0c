"""Merchant QR codes in EMVCo Merchant-Presented Mode: the CRC against published check values,
the payload a merchant account shows, and paying it (generate → scan → pay) as the same merchant
payment as POST /transfers; a corrupted or malformed payload is a 422 naming body.payload, and
no refusal writes anything."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.payments import qr
from tests.payments.factories import MakeApp
from tests.support.ledger import assert_problem, snapshot

LI_WEI = "acc_00000000000000000000000001"  # CNY wallet, 5000.00
ZHANG_MIN = "acc_00000000000000000000000002"  # CNY wallet, 1200.00
NOODLES = "acc_00000000000000000000000003"  # CNY merchant "Lanzhou Noodle House", 0.00
ALICE = "acc_00000000000000000000000007"  # USD wallet
NOBODY = "acc_0000000000000000000000zzzz"
PROBLEM = "urn:fintech-sandbox:problem:"

# The example payload of the EMVCo MPM specification (a Chinese merchant, with a language
# template in Chinese), CRC A13A: the CRC covers the UTF-8 bytes up to and including "6304".
EMVCO_EXAMPLE = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678520441115802CN"
    "5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.7253031565502016233030412340603***"
    "0708A60086670902ME91320016A0112233449988770708123456786304A13A"
)
NOODLES_STATIC = (
    "000201010211"
    "26660028org.fintech-sandbox.payments0130acc_00000000000000000000000003"
    "52045999" "5303156" "5802CN" "5920Lanzhou Noodle House" "6007SANDBOX" "6304A1FA"
)


def with_crc(body: str) -> str:
    """Seal a hand-made payload (ending in "6304") with its correct CRC."""
    return body + qr.crc16(body)


# --- the format ---------------------------------------------------------------------------------


def test_crc_matches_published_check_values() -> None:
    assert qr.crc16("123456789") == "29B1"  # CRC-16/CCITT-FALSE's catalogue check value
    assert qr.crc16(EMVCO_EXAMPLE[:-4]) == "A13A"
    # The specification's example passes the CRC and the tag checks, and is then refused only
    # because it names another scheme's merchant, not this sandbox's.
    with pytest.raises(qr.QrError) as refused:
        qr.parse(EMVCO_EXAMPLE)
    assert refused.value.tag == "26"
    assert "another scheme" in refused.value.message


def test_the_demo_merchant_static_qr_is_exactly_this_payload(client: TestClient) -> None:
    r = client.get(f"/accounts/{NOODLES}/qr")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["payload"] == NOODLES_STATIC
    assert (body["account_id"], body["currency"], body["dynamic"], body["amount"]) == (NOODLES, "CNY", False, None)
    assert body["svg"].lstrip().startswith("<svg") and body["svg"].rstrip().endswith("</svg>")
    objects = dict(qr.split(body["payload"]))
    assert objects["00"] == "01" and objects["01"] == "11"
    assert objects["53"] == "156"  # CNY, ISO 4217 numeric
    assert objects["63"] == qr.crc16(body["payload"][:-4])


def test_an_amount_makes_a_dynamic_qr_in_the_currency_exponent(client: TestClient) -> None:
    body = client.get(f"/accounts/{NOODLES}/qr", params={"amount": "25.5"}).json()
    objects = dict(qr.split(body["payload"]))
    assert objects["01"] == "12" and objects["54"] == "25.50"
    assert body["dynamic"] is True and body["amount"] == {"amount": "25.50", "currency": "CNY"}
    r = client.post("/accounts", json={"kind": "merchant", "owner_name": "Ramen 一蘭 Tokyo", "currency": "JPY"})
    jpy = client.get(f"/accounts/{r.json()['id']}/qr", params={"amount": "1200"}).json()
    objects = dict(qr.split(jpy["payload"]))
    assert (objects["53"], objects["54"], objects["58"]) == ("392", "1200", "JP")
    assert objects["59"] == "Ramen Tokyo"  # the root name field is ASCII
    assert qr.parse(jpy["payload"]).amount_minor == 1200


def test_qr_refusals(client: TestClient) -> None:
    assert_problem(client.get(f"/accounts/{LI_WEI}/qr"), 409, "not-a-merchant")
    assert_problem(client.get(f"/accounts/{NOBODY}/qr"), 404, "not-found")
    problem = assert_problem(client.get(f"/accounts/{NOODLES}/qr", params={"amount": "1.234"}), 409, "amount-precision")
    assert problem["account_currency"] == "CNY"
    for amount in ("0", "-1", "abc", "12345678901.5"):
        assert_problem(client.get(f"/accounts/{NOODLES}/qr", params={"amount": amount}), 422, "validation-error")


# --- paying ------------------------------------------------------------------------------------


def test_generate_then_pay_a_static_and_a_dynamic_qr(database_url, make_app: MakeApp) -> None:
    app = make_app(database_url=database_url)
    with TestClient(app) as client:
        static = client.get(f"/accounts/{NOODLES}/qr").json()["payload"]
        r = client.post("/qr-payments", json={"payload": static, "from_account_id": LI_WEI,
                                              "amount": {"amount": "100.00", "currency": "CNY"},
                                              "description": "two bowls"})
        assert r.status_code == 201, r.text
        journal = r.json()
        assert journal["id"].startswith("pay_") and journal["kind"] == "payment"
        assert (journal["from_account_id"], journal["to_account_id"]) == (LI_WEI, NOODLES)
        assert journal["amount"] == {"amount": "100.00", "currency": "CNY"}
        assert journal["fee"] == {"amount": "0.60", "currency": "CNY"}  # 0.6%, as POST /transfers
        assert journal["description"] == "two bowls"

        dynamic = client.get(f"/accounts/{NOODLES}/qr", params={"amount": "25.50"}).json()["payload"]
        r = client.post("/qr-payments", json={"payload": dynamic, "from_account_id": ZHANG_MIN})
        assert r.status_code == 201, r.text
        assert r.json()["amount"] == {"amount": "25.50", "currency": "CNY"}
        assert r.json()["fee"] == {"amount": "0.15", "currency": "CNY"}  # 0.153 rounds half up to 0.15
        # Repeating the QR's own amount is fine too.
        r = client.post("/qr-payments", json={"payload": dynamic, "from_account_id": ZHANG_MIN,
                                              "amount": {"amount": "25.5", "currency": "CNY"}})
        assert r.status_code == 201, r.text

        assert client.get(f"/accounts/{LI_WEI}").json()["balance"]["amount"] == "4900.00"
        assert client.get(f"/accounts/{ZHANG_MIN}").json()["balance"]["amount"] == "1149.00"
        assert client.get(f"/accounts/{NOODLES}").json()["balance"]["amount"] == "150.10"  # 99.40 + 2 × 25.35
        # A QR payment is a merchant payment: it can be refunded like one.
        refund = client.post("/refunds", json={"journal_id": journal["id"]})
        assert refund.status_code == 201, refund.text
        assert client.get("/invariants").json()["ok"]


def test_a_corrupted_payload_is_a_422_naming_the_field_and_writes_nothing(client: TestClient) -> None:
    good = client.get(f"/accounts/{NOODLES}/qr", params={"amount": "25.50"}).json()["payload"]
    before = snapshot(client)
    wrong_crc = good[:-4] + ("0000" if good[-4:] != "0000" else "FFFF")
    tampered = good.replace("540525.50", "540505.50")  # the amount changed, the CRC left as it was
    cases = [
        (wrong_crc, "63"),
        (tampered, "63"),
        ("hello", None),  # not TLV at all
        (good[:30], "26"),  # cut short: the template says 66 characters
        (with_crc("000201010213" + good[12:-4]), "01"),  # point of initiation 13
        (with_crc(good[:-4].replace("540525.50", "")), "54"),  # dynamic (12) without its amount
        (with_crc(good[:-4].replace("5303156", "5303999")), "53"),  # no such currency
        (with_crc(good[:-4].replace("6007SANDBOX", "")), "60"),  # no city
        (with_crc(good[:-4].replace("0028org.fintech-sandbox.payments", "0028org.fintech-sandbox.PAYMENTS")), "26"),
        (with_crc(good[:-4].replace("540525.50", "540625.505")), "54"),  # 3 decimals in CNY
    ]
    for payload, tag in cases:
        r = client.post("/qr-payments", json={"payload": payload, "from_account_id": LI_WEI})
        problem = assert_problem(r, 422, "invalid-qr-payload")
        assert problem["errors"][0]["field"] == "body.payload"
        assert problem.get("tag") == tag, (payload, problem)
        assert snapshot(client) == before
    problem = assert_problem(client.post("/qr-payments", json={"payload": wrong_crc, "from_account_id": LI_WEI}),
                             422, "invalid-qr-payload")
    assert "CRC" in problem["detail"] and good[-4:] in problem["detail"]


def test_payment_refusals_write_nothing(client: TestClient) -> None:
    static = client.get(f"/accounts/{NOODLES}/qr").json()["payload"]
    dynamic = client.get(f"/accounts/{NOODLES}/qr", params={"amount": "25.50"}).json()["payload"]
    cny = {"amount": "10.00", "currency": "CNY"}
    # A well-formed QR naming a personal account, and one whose currency is not the merchant's.
    personal = qr.merchant_payload(ZHANG_MIN, "Zhang Min", "CNY")
    usd_noodles = qr.merchant_payload(NOODLES, "Lanzhou Noodle House", "USD")
    before = snapshot(client)
    cases = [
        ({"payload": static, "from_account_id": LI_WEI}, 409, "amount-required"),
        ({"payload": dynamic, "from_account_id": LI_WEI, "amount": cny}, 409, "amount-mismatch"),
        ({"payload": static, "from_account_id": LI_WEI, "amount": {"amount": "9000.00", "currency": "CNY"}},
         409, "insufficient-funds"),
        ({"payload": static, "from_account_id": ALICE, "amount": {"amount": "1.00", "currency": "USD"}},
         409, "currency-mismatch"),
        ({"payload": personal, "from_account_id": LI_WEI, "amount": cny}, 409, "not-a-merchant"),
        ({"payload": usd_noodles, "from_account_id": ALICE, "amount": {"amount": "1.00", "currency": "USD"}},
         409, "currency-mismatch"),
        ({"payload": static, "from_account_id": NOODLES, "amount": cny}, 409, "same-account"),
        ({"payload": "garbage", "from_account_id": NOBODY, "amount": cny}, 404, "not-found"),
        ({"payload": qr.merchant_payload(NOBODY, "Ghost", "CNY"), "from_account_id": LI_WEI, "amount": cny},
         404, "not-found"),
    ]
    for body, status, slug in cases:
        assert_problem(client.post("/qr-payments", json=body), status, slug)
        assert snapshot(client) == before
    assert client.get("/invariants").json()["ok"]


def test_idempotency_key_replays_a_qr_payment(client: TestClient) -> None:
    dynamic = client.get(f"/accounts/{NOODLES}/qr", params={"amount": "8.80"}).json()["payload"]
    headers = {"Idempotency-Key": "qr-once"}
    body = {"payload": dynamic, "from_account_id": LI_WEI}
    first = client.post("/qr-payments", json=body, headers=headers)
    again = client.post("/qr-payments", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    assert client.get(f"/accounts/{LI_WEI}").json()["balance"]["amount"] == "4991.20"
