"""AML typologies the load generator injects: each is a named sequence of real calls through the
gateway, against accounts it opens for itself, so the alerts it raises can be attributed to it.
What each one sent (accounts, payee names, request ids) is written to the manifest that the
summary and the tests read.

No HTTP library here: calls go through a `Caller` (the locustfile's, on Locust's session), so
the sequences can be read as the journeys they are."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from random import Random
from typing import Any, Protocol

from services.common.demo import DEMO_ACCOUNTS, DEMO_TPP_CLIENTS, OPENBANKING_TEST_OTP

CENT = Decimal("0.01")
CARD_THAT_PAYS = "4242424242424242"
OB = "/open-banking"
TPP_CLIENT = next(c for c in DEMO_TPP_CLIENTS if c.client_id == "tpp_demo")
# Wang Fang's savings account at Sandbox Bank: the TPP typologies pay from it, and clean TPP
# traffic never touches it (it pays from her everyday wallet), so its alerts are the typologies'.
TYPOLOGY_DEBTOR = next(a.id for a in DEMO_ACCOUNTS if a.role.startswith("Wang Fang's savings"))
TYPOLOGY_DEBTOR_PSU = "wangfang"

# Listed names (sandbox/gateway/watchlist.yaml, synthetic) as payments write them: other scripts,
# diacritics, word order, company forms. Each is a true match in the labelled set of
# tests/gateway/test_sanctions_matching.py.
SANCTIONED_VARIANTS = (
    "Борис Вексланов", "Borís Vexlánov", "Μπόρις Βεξλάνοφ", "Vexlanov, Boris", "Tie-gang Chaolinski",
    "赵林斯基 铁钢", "Zhao Linsiji Tiegang", "Mirella Kvant Sorvino", "Мирела Квандт-Сорвино",
    "Youssef Abdelkarimzadeh", "يوسف عبد القريم زاده", "BLUE LANTERN PHANTOM TRADING F.Z.E.",
    "蓝灯幻影贸易", "Нимбус Харроугейт Шелл Холдингс", "Oleg Drazenko Fiel", "Олег Драженко-Фиэль",
)
# FATF call-for-action countries (rules.yaml: 25, a block on its own).
CALL_FOR_ACTION = ("KP", "IR", "MM")


class Caller(Protocol):
    def __call__(self, participant: str, method: str, path: str, *, label: str | None = None,
                 json: Any = None, form: dict | None = None, headers: dict | None = None,
                 basic_auth: tuple[str, str] | None = None, expect: tuple[int, ...] = (200, 201)
                 ) -> tuple[int, Any, str]:
        """One request as `participant` (a label of the locustfile's keys): status, JSON body,
        and the X-Request-ID it was sent with."""


def money(amount: Decimal, currency: str = "CNY") -> dict[str, str]:
    return {"amount": str(amount.quantize(CENT)), "currency": currency}


def odd_amount(rng: Random, low: str, high: str) -> Decimal:
    """A non-round amount in [low, high): never a whole yuan, so round_amount cannot fire."""
    cents = rng.randrange(int(Decimal(low) * 100), int(Decimal(high) * 100))
    if cents % 100 == 0:
        cents += 37
    return Decimal(cents) / 100


@dataclass
class Injection:
    """One run of a typology, as the manifest records it."""

    typology: str
    expected_rules: list[str]  # an alert of this injection must name at least one of them
    participant: str
    accounts: list[str] = field(default_factory=list)  # opened for it, or reserved for typologies
    payee_names: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)  # the screened calls it expects to alert on
    all_request_ids: list[str] = field(default_factory=list)
    completed: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Aborted(Exception):
    """A step of a typology did not get the answer the sequence needs (counted, not hidden)."""


def _step(inj: Injection, call: Caller, participant: str, method: str, path: str, *, screened: bool = False,
          **kwargs: Any) -> Any:
    status, body, request_id = call(participant, method, path, label=f"{participant}/typology", **kwargs)
    inj.all_request_ids.append(request_id)
    if screened:
        inj.request_ids.append(request_id)
    if status not in kwargs.get("expect", (200, 201)):
        raise Aborted(f"{method} {path} answered {status}: {_problem(body)}")
    return body


def _problem(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("limit") or body.get("type") or body.get("detail") or body)[:160]
    return str(body)[:160]


def _open_account(inj: Injection, call: Caller, owner: str, kind: str = "personal", currency: str = "CNY") -> str:
    body = _step(inj, call, "wallet", "POST", "/payments/accounts",
                 json={"kind": kind, "owner_name": owner, "currency": currency})
    inj.accounts.append(body["id"])
    return body["id"]


def _deposit(inj: Injection, call: Caller, account: str, amount: Decimal, screened: bool = False,
             currency: str = "CNY") -> None:
    _step(inj, call, "wallet", "POST", "/payments/deposits", screened=screened,
          headers={"Idempotency-Key": f"load-{secrets.token_hex(8)}"},
          json={"account_id": account, "amount": money(amount, currency), "card_number": CARD_THAT_PAYS})


def _transfer(inj: Injection, call: Caller, payer: str, payee: str, amount: Decimal, *, screened: bool = False,
              expect: tuple[int, ...] = (201,), currency: str = "CNY") -> None:
    _step(inj, call, "wallet", "POST", "/payments/transfers", screened=screened, expect=expect,
          headers={"Idempotency-Key": f"load-{secrets.token_hex(8)}"},
          json={"from_account_id": payer, "to_account_id": payee, "amount": money(amount, currency),
                "description": "load typology"})


def structuring(call: Caller, rng: Random, tag: str) -> Injection:
    """Top a new wallet up by card in amounts under every band, then send three amounts just
    below the 10,000 CNY threshold (the README's walkthrough, with fresh figures)."""
    inj = Injection("structuring", ["structuring"], "wallet")
    smurf = _open_account(inj, call, f"Load Structurer {tag}")
    payee = _open_account(inj, call, f"Load Structuring Payee {tag}")
    # 5 x ~7,500 in and 3 x ~9,500 out: 76% of the inflow leaves, under rapid pass-through's 90%.
    for _ in range(5):
        _deposit(inj, call, smurf, odd_amount(rng, "7400", "7600"))
    for _ in range(3):
        _transfer(inj, call, smurf, payee, odd_amount(rng, "9300", "9700"), screened=True)
    inj.completed = True
    return inj


def rapid_pass_through(call: Caller, rng: Random, tag: str) -> Injection:
    """Money comes in (over 5,000 CNY) and nearly all of it leaves at once: a mule account."""
    inj = Injection("rapid_pass_through", ["rapid_pass_through"], "wallet")
    mule = _open_account(inj, call, f"Load Mule {tag}")
    onward = _open_account(inj, call, f"Load Onward Payee {tag}")
    inflow = Decimal(0)
    for _ in range(3):
        amount = odd_amount(rng, "1900", "2100")
        _deposit(inj, call, mule, amount)
        inflow += amount
    out = (inflow * Decimal("0.95")).quantize(CENT)
    if out % 1 == 0:
        out += Decimal("0.13")
    _transfer(inj, call, mule, onward, out, screened=True)
    inj.completed = True
    return inj


def sanctioned_name(call: Caller, rng: Random, tag: str) -> Injection:
    """A payment to an account opened in a listed name, spelt another way (another script,
    diacritics, word order): review or block, an alert either way."""
    name = rng.choice(SANCTIONED_VARIANTS)
    inj = Injection("sanctioned_name", ["sanctions"], "wallet", payee_names=[name])
    payer = _open_account(inj, call, f"Load Sanctions Payer {tag}")
    listed = _open_account(inj, call, name)
    _deposit(inj, call, payer, odd_amount(rng, "400", "600"))
    # 403 when the match is block-level (the payment never reaches the ledger), 201 on review.
    _transfer(inj, call, payer, listed, odd_amount(rng, "50", "150"), screened=True, expect=(201, 403))
    inj.completed = True
    return inj


# -- open banking: a TPP payment, the whole consent dance ---------------------------------------

def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


Step = Callable[..., Any]


def tpp_payment(step: Step, *, debtor: str, debtor_name: str, psu: str, creditor: str, creditor_name: str,
                amount: Decimal, reference: str, country: str | None = None,
                expect: tuple[int, ...] = (201,)) -> Any:
    """Demo TPP pays from a PSU's account: client token, payment consent, the PSU authorises
    (fixed one-time code, PKCE), token, payment. `step(participant, method, path, **kw)` sends
    one call; the payment itself is sent with `screened=True`."""
    token = step("tpp", "POST", f"{OB}/oauth2/token",
                 form={"grant_type": "client_credentials", "client_id": TPP_CLIENT.client_id,
                       "client_secret": TPP_CLIENT.client_secret})["access_token"]
    initiation: dict[str, Any] = {
        "InstructionIdentification": f"LOAD-{secrets.token_hex(6)}",
        "EndToEndIdentification": f"E2E-{secrets.token_hex(6)}",
        "InstructedAmount": {"Amount": str(amount.quantize(CENT)), "Currency": "CNY"},
        "DebtorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": debtor, "Name": debtor_name},
        "CreditorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": creditor, "Name": creditor_name},
        "RemittanceInformation": {"Reference": reference},
    }
    risk = {"PaymentContextCode": "PartyToParty"}
    consent = step("tpp", "POST", f"{OB}/v3.1/pisp/domestic-payment-consents",
                   headers={"Authorization": f"Bearer {token}", "x-idempotency-key": secrets.token_hex(12)},
                   json={"Data": {"Initiation": initiation}, "Risk": risk})
    if country:
        # OBIE's initiation carries the creditor's address and the gateway screens its country,
        # but Sandbox Bank's schema has no CreditorPostalAddress: the consent is made without
        # it and the payment names it. A call-for-action country is blocked at the gateway,
        # before the bank would see the field.
        initiation = {**initiation, "CreditorPostalAddress": {"Country": country}}
    consent_id = consent["Data"]["ConsentId"]
    verifier, challenge = _pkce()
    code = step("tpp", "POST", f"{OB}/authorize",
                json={"consent_id": consent_id, "client_id": TPP_CLIENT.client_id, "code_challenge": challenge,
                      "code_challenge_method": "S256", "psu_id": psu, "otp": OPENBANKING_TEST_OTP})["code"]
    payer_token = step("tpp", "POST", f"{OB}/oauth2/token",
                       basic_auth=(TPP_CLIENT.client_id, TPP_CLIENT.client_secret),
                       form={"grant_type": "authorization_code", "code": code,
                             "code_verifier": verifier})["access_token"]
    return step("tpp", "POST", f"{OB}/v3.1/pisp/domestic-payments", screened=True, expect=expect,
                headers={"Authorization": f"Bearer {payer_token}", "x-idempotency-key": secrets.token_hex(12)},
                json={"Data": {"ConsentId": consent_id, "Initiation": initiation}, "Risk": risk})


def _tpp_step(inj: Injection, call: Caller) -> Step:
    def step(participant: str, method: str, path: str, **kwargs: Any) -> Any:
        return _step(inj, call, participant, method, path, **kwargs)
    return step


def high_risk_corridor(call: Caller, rng: Random, tag: str) -> Injection:
    """Demo TPP starts a payment to a creditor whose address is in a call-for-action country:
    blocked at the initiation (403), never executed."""
    country = rng.choice(CALL_FOR_ACTION)
    # The debtor is shared with other typologies: attributed by request id, not by account.
    inj = Injection("high_risk_corridor", ["high_risk_jurisdiction"], "tpp")
    creditor_name = f"Load Corridor Trading {tag}"
    creditor = _open_account(inj, call, creditor_name, kind="merchant")
    tpp_payment(_tpp_step(inj, call), debtor=TYPOLOGY_DEBTOR, debtor_name="Wang Fang", psu=TYPOLOGY_DEBTOR_PSU,
                creditor=creditor, creditor_name=creditor_name, amount=odd_amount(rng, "300", "400"),
                reference=f"invoice {tag}", country=country, expect=(403,))
    inj.note = f"from {TYPOLOGY_DEBTOR} to a creditor in {country}"
    inj.completed = True
    return inj


VELOCITY_BURST = 22  # velocity fires above 20 movements on one account within an hour (rules.yaml)


def velocity(call: Caller, rng: Random, tag: str) -> Injection:
    """A burst of small remittances in Haitian gourdes from one wallet. Velocity only adds to a
    score (6), and a currency under increased monitoring alone is below review (8): together,
    once the account passes 20 movements in the hour, they are a review (14)."""
    inj = Injection("velocity", ["velocity"], "wallet")
    sender = _open_account(inj, call, f"Load Remitter {tag}", currency="HTG")
    receiver = _open_account(inj, call, f"Load Remittance Payee {tag}", currency="HTG")
    _deposit(inj, call, sender, odd_amount(rng, "2000", "3000"), currency="HTG")
    for _ in range(VELOCITY_BURST):
        _transfer(inj, call, sender, receiver, odd_amount(rng, "10", "60"), currency="HTG", screened=True)
    inj.note = f"{VELOCITY_BURST} transfers in HTG within the hour"
    inj.completed = True
    return inj


TYPOLOGIES: dict[str, Callable[[Caller, Random, str], Injection]] = {
    "structuring": structuring,
    "rapid_pass_through": rapid_pass_through,
    "sanctioned_name": sanctioned_name,
    "high_risk_corridor": high_risk_corridor,
    "velocity": velocity,
}

# What each costs the participant it runs as, so the generator injects it only while the
# participant's limits have room (a refused typology would prove nothing). CNY, customers.
COSTS: dict[str, tuple[str, Decimal, int]] = {
    "structuring": ("wallet", Decimal("67000"), 1),
    "rapid_pass_through": ("wallet", Decimal("12000"), 1),
    "sanctioned_name": ("wallet", Decimal("800"), 1),
    "high_risk_corridor": ("tpp", Decimal("0"), 0),  # blocked: nothing counts
    "velocity": ("wallet", Decimal(VELOCITY_BURST * 60 + 3000), 1),  # HTG counts 1:1
}
