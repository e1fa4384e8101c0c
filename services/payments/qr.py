"""Merchant QR codes in the EMVCo Merchant-Presented Mode (MPM) format, as Alipay, WeChat Pay
and most national QR schemes print them at a till.

A payload is a run of TLV data objects: two-digit id, two-digit length (in characters), value.
The ones written here:

    00 payload format indicator "01"        01 point of initiation: 11 static, 12 dynamic
    26 merchant account information template (00 globally unique id of this sandbox's scheme,
       01 the merchant's account id)
    52 merchant category code               53 transaction currency, ISO 4217 numeric
    54 transaction amount (dynamic QR only) 58 country code
    59 merchant name                        60 merchant city
    63 CRC: CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over the whole payload up to and
       including "6304", as four upper-case hex digits

Plain functions, no HTTP and no database. `parse` refuses anything it cannot vouch for with a
`QrError` naming the data object at fault.
"""

from __future__ import annotations

import binascii
import io
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

import segno
from iso4217 import Currency

from services.common.ids import id_pattern
from services.common.money import exponent_of, format_minor

SCHEME_ID = "org.fintech-sandbox.payments"  # tag 26, sub-tag 00: whose account ids these are
MERCHANT_TEMPLATE = "26"
DEFAULT_MCC = "5999"  # miscellaneous retail: accounts carry no category in this sandbox
CITY = "SANDBOX"  # accounts carry no address; EMVCo requires a city, so the sandbox names itself
# Country of a merchant by the currency it holds; currencies of many countries fall back to the
# sandbox's home, China.
COUNTRY_BY_CURRENCY = {"CNY": "CN", "USD": "US", "GBP": "GB", "JPY": "JP", "HKD": "HK",
                       "SGD": "SG", "KWD": "KW"}
MAX_PAYLOAD = 512
MAX_NAME = 25
MAX_AMOUNT_CHARS = 13
STATIC, DYNAMIC = "11", "12"


class QrError(ValueError):
    """A payload this service cannot pay: `tag` is the data object at fault."""

    def __init__(self, tag: str | None, message: str) -> None:
        super().__init__(message)
        self.tag = tag
        self.message = message


def crc16(text: str) -> str:
    """CRC-16/CCITT-FALSE of the UTF-8 text as four upper-case hex digits ('123456789' → 29B1)."""
    return f"{binascii.crc_hqx(text.encode('utf-8'), 0xFFFF):04X}"


def tlv(tag: str, value: str) -> str:
    if len(value) > 99:
        raise ValueError(f"data object {tag} is longer than 99 characters")
    return f"{tag}{len(value):02d}{value}"


@lru_cache(maxsize=None)
def _numeric_codes() -> tuple[dict[str, str], dict[str, str]]:
    alpha_to_num: dict[str, str] = {}
    num_to_alpha: dict[str, str] = {}
    for currency in Currency:
        if currency.number is None:
            continue
        number = f"{int(currency.number):03d}"
        alpha_to_num[currency.code] = number
        num_to_alpha.setdefault(number, currency.code)
    return alpha_to_num, num_to_alpha


def currency_number(code: str) -> str:
    """'CNY' → '156'."""
    return _numeric_codes()[0][code]


def ascii_name(name: str) -> str:
    """EMVCo's root name field is ASCII: keep printable ASCII, at most 25 characters."""
    kept = re.sub(r"\s+", " ", "".join(c for c in name if 32 <= ord(c) < 127)).strip()
    return (kept or "Merchant")[:MAX_NAME].strip()


def merchant_payload(account_id: str, owner_name: str, currency: str, amount_minor: int | None = None,
                     mcc: str = DEFAULT_MCC) -> str:
    """The MPM string for a merchant account; with an amount it is a dynamic QR."""
    template = tlv("00", SCHEME_ID) + tlv("01", account_id)
    parts = [
        tlv("00", "01"),
        tlv("01", STATIC if amount_minor is None else DYNAMIC),
        tlv(MERCHANT_TEMPLATE, template),
        tlv("52", mcc),
        tlv("53", currency_number(currency)),
    ]
    if amount_minor is not None:
        parts.append(tlv("54", format_minor(amount_minor, currency)))
    parts += [
        tlv("58", COUNTRY_BY_CURRENCY.get(currency, "CN")),
        tlv("59", ascii_name(owner_name)),
        tlv("60", CITY),
    ]
    body = "".join(parts) + "6304"
    return body + crc16(body)


def svg(payload: str) -> str:
    """The payload as a QR code (error correction M, byte mode), an SVG document."""
    out = io.BytesIO()
    segno.make_qr(payload, error="m").save(out, kind="svg", scale=4, border=4, xmldecl=False)
    return out.getvalue().decode("utf-8")


def split(payload: str) -> list[tuple[str, str]]:
    """The top-level data objects, in order. Raises QrError on a malformed run."""
    objects: list[tuple[str, str]] = []
    position = 0
    while position < len(payload):
        head = payload[position:position + 4]
        if len(head) < 4 or not head.isdigit() or not head.isascii():
            raise QrError(None, f"malformed data object at character {position}: expected a "
                          "two-digit id and a two-digit length")
        tag, length = head[:2], int(head[2:])
        value = payload[position + 4:position + 4 + length]
        if len(value) != length:
            raise QrError(tag, f"data object {tag} says {length} characters but only "
                          f"{len(value)} remain")
        objects.append((tag, value))
        position += 4 + length
    return objects


@dataclass(frozen=True)
class MerchantQr:
    account_id: str
    currency: str
    amount_minor: int | None  # set on a QR that carries an amount (tag 54)
    dynamic: bool
    name: str
    city: str
    country: str
    mcc: str


_ACCOUNT_ID = re.compile(id_pattern("acc"))
_AMOUNT = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def parse(payload: str) -> MerchantQr:
    """Check the CRC and every data object this service needs; return the merchant's terms."""
    if len(payload) > MAX_PAYLOAD:
        raise QrError(None, f"longer than the EMVCo maximum of {MAX_PAYLOAD} characters")
    objects = split(payload)
    if not objects or objects[0] != ("00", "01"):
        raise QrError("00", "must start with the payload format indicator 000201")
    tag, value = objects[-1]
    if tag != "63" or len(value) != 4:
        raise QrError("63", "must end with the CRC, data object 63 of 4 hex digits")
    expected = crc16(payload[:-4])
    if value.upper() != expected:
        raise QrError("63", f"CRC is {value} but the payload's CRC-16/CCITT-FALSE is {expected}: "
                      "the payload was altered or mis-scanned")
    found: dict[str, str] = {}
    for tag, value in objects:
        if tag in found and not ("26" <= tag <= "51"):
            raise QrError(tag, f"data object {tag} appears twice")
        found.setdefault(tag, value)
    initiation = found.get("01", STATIC)
    if initiation not in (STATIC, DYNAMIC):
        raise QrError("01", f"point of initiation must be 11 (static) or 12 (dynamic), not {initiation!r}")
    account_id = _sandbox_account(objects)
    for tag, what in (("52", "merchant category code"), ("53", "currency"), ("58", "country code"),
                      ("59", "merchant name"), ("60", "merchant city")):
        if not found.get(tag):
            raise QrError(tag, f"the {what} (data object {tag}) is missing")
    if not re.fullmatch(r"[0-9]{4}", found["52"]):
        raise QrError("52", "the merchant category code must be 4 digits")
    currency = _numeric_codes()[1].get(found["53"])
    if currency is None:
        raise QrError("53", f"{found['53']!r} is not an ISO 4217 numeric currency code")
    try:
        exponent = exponent_of(currency)
    except ValueError:
        raise QrError("53", f"{currency} has no minor unit; it cannot be paid here") from None
    amount_minor = None
    if "54" in found:
        amount = found["54"]
        if len(amount) > MAX_AMOUNT_CHARS or not _AMOUNT.fullmatch(amount) or Decimal(amount) <= 0:
            raise QrError("54", f"amount {amount!r} is not a positive decimal of at most "
                          f"{MAX_AMOUNT_CHARS} characters")
        scaled = Decimal(amount).scaleb(exponent)
        if scaled != scaled.to_integral_value():
            raise QrError("54", f"amount {amount} has more decimals than {currency} allows ({exponent})")
        amount_minor = int(scaled)
    if initiation == DYNAMIC and amount_minor is None:
        raise QrError("54", "a dynamic QR (01 = 12) must carry its amount")
    return MerchantQr(
        account_id=account_id, currency=currency, amount_minor=amount_minor,
        dynamic=initiation == DYNAMIC, name=found["59"], city=found["60"], country=found["58"],
        mcc=found["52"],
    )


def _sandbox_account(objects: list[tuple[str, str]]) -> str:
    """The account id in this sandbox's merchant account template (ids 26-51)."""
    templates = [(tag, value) for tag, value in objects if "26" <= tag <= "51"]
    if not templates:
        raise QrError("26", "no merchant account information template (data objects 26-51)")
    for tag, value in templates:
        inner = dict(split(value)) if _splits(value) else {}
        if inner.get("00") == SCHEME_ID:
            account_id = inner.get("01", "")
            if not _ACCOUNT_ID.fullmatch(account_id):
                raise QrError(tag, f"the merchant account id {account_id!r} is not an acc_… id")
            return account_id
    raise QrError("26", f"no merchant account of this sandbox ({SCHEME_ID}); another scheme's "
                  "QR cannot be paid here")


def _splits(value: str) -> bool:
    try:
        split(value)
    except QrError:
        return False
    return True
