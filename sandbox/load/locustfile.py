"""Locust users for the sandbox: participant mixes through the gateway with the demo keys, and a
low rate of AML typologies (sandbox/load/typologies.py). Run by `fintech-sandbox load`, which
passes its settings in LOAD_* variables and reads the manifest this writes.

The clean mix is shaped so that no rule fires by accident: small, non-round amounts; every
paying account kept under velocity's 20 movements an hour and under 5,000 CNY of inflow (so
rapid pass-through never applies); each participant paced under its rate limit and kept inside
its daily volume and customer limits as the gateway itself reports them. A movement the budget
has no room for is skipped and counted, and any refusal the gateway still gives is a failure."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import threading
import time
from collections import Counter, deque
from decimal import Decimal
from pathlib import Path
from typing import Any

import gevent
from gevent.lock import Semaphore
from locust import HttpUser, between, events, task
from locust.exception import StopUser

from sandbox.load import typologies as typ
from services.common.demo import (
    DEMO_MANDATES,
    DEMO_PARTICIPANT_LIMITS,
    DEMO_PARTICIPANTS,
    DEMO_REGULATOR_KEY,
    DEMO_TPP,
    DEMO_LENDER,
    DEMO_ROBO,
    WALLET_CO,
    demo_account,
)

MANIFEST = Path(os.environ.get("LOAD_MANIFEST", "load-manifest.json"))
TYPOLOGY_RATE = float(os.environ.get("LOAD_TYPOLOGY_RATE", "0.05"))
EVERY_TYPOLOGY = os.environ.get("LOAD_EVERY_TYPOLOGY", "") == "1"
ITERATIONS = int(os.environ.get("LOAD_ITERATIONS", "0"))  # 0: bounded by --run-time only
SEED = int(os.environ.get("LOAD_SEED", "0"))
RUN_ID = os.environ.get("LOAD_RUN_ID") or secrets.token_hex(4)

PARTICIPANT_IDS = {"wallet": WALLET_CO, "tpp": DEMO_TPP, "lender": DEMO_LENDER, "robo": DEMO_ROBO}
KEYS = {label: next(p.api_key for p in DEMO_PARTICIPANTS if p.id == pid) for label, pid in PARTICIPANT_IDS.items()}
PACE_SHARE = 0.8  # of each participant's rate limit: headroom for the window's edges
MOVEMENTS_PER_HOUR = 18  # per paying account; velocity fires above 20 within an hour
INFLOW_CAP = Decimal("4000")  # per clean account; rapid pass-through needs 5,000 in

LI_WEI = demo_account("Li Wei").id
WANG_FANG_WALLET = demo_account("Wang Fang").id
HUTONG_COFFEE = demo_account("Hutong Coffee").id
LENDER_FLOAT = demo_account("Sandbox Microloans (lender float)").id
ROBO_CUSTODY = demo_account("Sandbox Robo-Advisor (custody)").id
FUNDING_MANDATE = next(m.id for m in DEMO_MANDATES if m.debtor_account_id == LI_WEI)
ID_SEGMENT = re.compile(r"/[a-z]{2,4}_[0-9a-z]{20,32}(?=/|$)")


class Pacer:
    """Spaces one participant's calls evenly under its rate limit, across all users."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / (per_minute * PACE_SHARE)
        self.next_at = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next_at)
        self.next_at = slot + self.interval
        if slot > now:
            gevent.sleep(slot - now)


class Budget:
    """What a participant may still move today and how many customers it may still add, from
    the gateway's own figures at the start, less what this run has reserved since."""

    def __init__(self, volume_left: Decimal, customers_left: int, known_customers: set[str]) -> None:
        self.volume_left = volume_left
        self.customers_left = customers_left
        self.customers = set(known_customers)

    def reserve(self, amount: Decimal, new_customers: set[str] | int = frozenset()) -> bool:
        fresh = new_customers if isinstance(new_customers, int) else len(set(new_customers) - self.customers)
        if amount > self.volume_left or fresh > self.customers_left:
            return False
        self.volume_left -= amount
        self.customers_left -= fresh
        if not isinstance(new_customers, int):
            self.customers |= set(new_customers)
        return True


class Account:
    """A clean account the run uses, with what the gateway's rules will see of it."""

    def __init__(self, account_id: str, balance: Decimal = Decimal(0)) -> None:
        self.id = account_id
        self.balance = balance
        self.inflow = Decimal(0)
        self.movements: deque[float] = deque()

    def can_move(self) -> bool:
        cutoff = time.monotonic() - 3600
        while self.movements and self.movements[0] < cutoff:
            self.movements.popleft()
        return len(self.movements) < MOVEMENTS_PER_HOUR

    def moved(self) -> None:
        self.movements.append(time.monotonic())


class World:
    """State shared by every user of the one Locust process."""

    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.pacers = {label: Pacer(DEMO_PARTICIPANT_LIMITS[pid].rate_limit_per_minute)
                       for label, pid in PARTICIPANT_IDS.items()}
        self.budgets: dict[str, Budget] = {}
        self.pool_lock = Semaphore()
        self.personal: list[Account] = []
        self.merchants: list[Account] = []
        self.fixed = {a: Account(a) for a in (LI_WEI, WANG_FANG_WALLET, LENDER_FLOAT)}
        self.fixed[LI_WEI].balance = Decimal("4000")  # of her seeded 5,000; refreshed at the start
        self.fixed[WANG_FANG_WALLET].balance = Decimal("30000")
        self.fixed[LENDER_FLOAT].balance = Decimal("1000000")
        self.mandate_left = Decimal(0)
        self.pending_typologies: list[str] = list(typ.TYPOLOGIES) if EVERY_TYPOLOGY else []
        self.next_typology = 0
        self.injections: list[dict[str, Any]] = []
        self.typologies_skipped: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.journeys: Counter[str] = Counter()
        self.started = 0
        self.finished = 0
        self.write_lock = threading.Lock()

    def clean_accounts(self) -> list[str]:
        return sorted({a.id for a in self.personal + self.merchants}
                      | {LI_WEI, WANG_FANG_WALLET, HUTONG_COFFEE, LENDER_FLOAT, ROBO_CUSTODY})

    def write_manifest(self) -> None:
        with self.write_lock:
            data = {"run_id": RUN_ID, "seed": SEED, "typology_rate": TYPOLOGY_RATE,
                    "every_typology": EVERY_TYPOLOGY, "iterations": self.finished,
                    "injections": self.injections, "typologies_skipped": dict(self.typologies_skipped),
                    "clean": {"accounts": self.clean_accounts(), "journeys": dict(self.journeys),
                              "skipped": dict(self.skipped)}}
            tmp = MANIFEST.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
            tmp.replace(MANIFEST)


WORLD = World()


def _load_budgets(host: str) -> None:
    """Today's volume and the window's customers, as the regulator's API reports them."""
    import requests  # Locust's own dependency; this runs once, before any user

    regulator = {"X-API-Key": DEMO_REGULATOR_KEY}
    for label in ("wallet", "tpp", "lender", "robo"):
        pid = PARTICIPANT_IDS[label]
        limits = DEMO_PARTICIPANT_LIMITS[pid]
        activity = requests.get(f"{host}/sandbox/participants/{pid}/activity", headers=regulator, timeout=10).json()
        report = requests.get(f"{host}/sandbox/participants/{pid}/exit-report", headers=regulator, timeout=10).json()
        used = Decimal(activity["volume"]["amount"])
        # A tenth of the daily volume stays unused: the limit is checked on held usage as well.
        left = Decimal(limits.daily_volume) * Decimal("0.9") - used
        WORLD.budgets[label] = Budget(left, limits.max_customers - int(report["customers"]) - 1, set())
    mandate = requests.get(f"{host}/payments/mandates/{FUNDING_MANDATE}", headers={"X-API-Key": KEYS["wallet"]},
                           timeout=10).json()
    WORLD.mandate_left = Decimal(mandate["max_per_period"]["amount"]) - Decimal(mandate["used_this_period"]["amount"])
    # Wang Fang's wallet is the bank's (the wallet firm cannot read it): the estimate above stays.
    for account_id in (LI_WEI,):
        balance = requests.get(f"{host}/payments/accounts/{account_id}/balance",
                               headers={"X-API-Key": KEYS["wallet"]}, timeout=10).json()
        WORLD.fixed[account_id].balance = Decimal(balance["available"]["amount"])


@events.test_start.add_listener
def _on_start(environment: Any, **_kwargs: Any) -> None:
    _load_budgets(environment.host.rstrip("/"))
    WORLD.write_manifest()
    if ITERATIONS:
        def stop_when_done() -> None:
            while WORLD.finished < ITERATIONS:
                gevent.sleep(0.2)
            environment.runner.quit()
        gevent.spawn(stop_when_done)


@events.test_stop.add_listener
def _on_stop(**_kwargs: Any) -> None:
    WORLD.write_manifest()


def _problem(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("limit") or (body.get("type") or "").rsplit(":", 1)[-1] or body.get("detail") or "")[:80]
    return ""


class SandboxUser(HttpUser):
    """One participant's app; `call` can speak as any participant (a typology may need two)."""

    abstract = True
    wait_time = between(0.05, 0.3)

    def call(self, participant: str, method: str, path: str, *, label: str | None = None, json: Any = None,
             form: dict | None = None, headers: dict | None = None, basic_auth: tuple[str, str] | None = None,
             expect: tuple[int, ...] = (200, 201)) -> tuple[int, Any, str]:
        WORLD.pacers[participant].wait()
        request_id = f"load-{RUN_ID}-{secrets.token_hex(8)}"
        sent = {"X-API-Key": KEYS[participant], "X-Request-ID": request_id, **(headers or {})}
        name = f"{label or participant} {method} {ID_SEGMENT.sub('/{id}', path.split('?')[0])}"
        with self.client.request(method, path, name=name, json=json, data=form, headers=sent, auth=basic_auth,
                                 catch_response=True) as response:
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code in expect:
                response.success()
            else:
                response.failure(f"{response.status_code} {_problem(body)}".strip())
        return response.status_code, body, request_id

    def iteration(self, journey: Any) -> None:
        """One journey, or now and then a typology instead; counted toward --iterations."""
        if ITERATIONS and WORLD.started >= ITERATIONS:
            gevent.sleep(0.5)
            return
        WORLD.started += 1
        try:
            name = self.pick_typology()
            if name:
                self.inject(name)
            else:
                WORLD.journeys[f"{self.participant}: {journey.__name__.lstrip('_')}"] += 1
                journey()
        finally:
            WORLD.finished += 1

    def pick_typology(self) -> str | None:
        names = list(typ.TYPOLOGIES)
        while WORLD.pending_typologies:
            name = WORLD.pending_typologies.pop(0)
            participant, volume, customers = typ.COSTS[name]
            if WORLD.budgets[participant].reserve(volume, customers):
                return name
            WORLD.typologies_skipped[f"{name}: no room in {participant}'s limits"] += 1
        if WORLD.rng.random() >= TYPOLOGY_RATE:
            return None
        for _ in names:
            name = names[WORLD.next_typology % len(names)]
            WORLD.next_typology += 1
            participant, volume, customers = typ.COSTS[name]
            if WORLD.budgets[participant].reserve(volume, customers):
                return name
            WORLD.typologies_skipped[f"{name}: no room in {participant}'s limits"] += 1
        return None

    def inject(self, name: str) -> None:
        tag = f"{RUN_ID}-{len(WORLD.injections) + 1}"
        injection = typ.Injection(name, [], "")
        try:
            injection = typ.TYPOLOGIES[name](self.call, random.Random(WORLD.rng.random()), tag)
            record = injection.to_json()
        except typ.Aborted as exc:
            record = {"typology": name, "completed": False, "note": str(exc), "accounts": [], "payee_names": [],
                      "request_ids": [], "all_request_ids": [], "expected_rules": [], "participant": ""}
        WORLD.injections.append(record)
        WORLD.write_manifest()

    # -- helpers the clean journeys share -------------------------------------------------

    def key(self) -> dict[str, str]:
        return {"Idempotency-Key": f"load-{secrets.token_hex(8)}"}

    def ensure_pool(self) -> bool:
        """The wallet's customers for the run: 12 personal wallets, topped up once by card, and
        3 merchants; opened by whichever user needs them first."""
        with WORLD.pool_lock:
            if WORLD.personal:
                return True
            budget = WORLD.budgets["wallet"]
            merchants = [self.call("wallet", "POST", "/payments/accounts", json={
                "kind": "merchant", "owner_name": f"Load Merchant {RUN_ID} {n}", "currency": "CNY"})
                for n in range(1, 4)]
            WORLD.merchants = [Account(body["id"]) for status, body, _ in merchants if status == 201]
            personal = []
            for n in range(1, 13):
                status, body, _ = self.call("wallet", "POST", "/payments/accounts", json={
                    "kind": "personal", "owner_name": f"Load Wallet {RUN_ID} {n:02d}", "currency": "CNY"})
                if status != 201:
                    continue
                account = Account(body["id"])
                top_up = typ.odd_amount(WORLD.rng, "1500", "2500")
                if not budget.reserve(top_up, {account.id}):
                    WORLD.skipped["wallet top-up: no room in the limits"] += 1
                    continue
                status, _, _ = self.call("wallet", "POST", "/payments/deposits", headers=self.key(), json={
                    "account_id": account.id, "amount": typ.money(top_up), "card_number": typ.CARD_THAT_PAYS})
                account.moved()
                if status == 201:
                    account.balance = account.inflow = top_up
                    personal.append(account)
            WORLD.personal = personal
            return bool(personal)

    def payer(self, amount: Decimal) -> Account | None:
        candidates = [a for a in WORLD.personal if a.balance >= amount + 5 and a.can_move()]
        return WORLD.rng.choice(candidates) if candidates else None

    def movement_fits(self, participant: str, amount: Decimal, payer: Account | None, customer: str,
                      what: str) -> bool:
        if payer is None or not payer.can_move():
            WORLD.skipped[f"{what}: every paying account near velocity's limit"] += 1
            return False
        if not WORLD.budgets[participant].reserve(amount, {customer}):
            WORLD.skipped[f"{what}: no room in {participant}'s limits"] += 1
            return False
        payer.moved()
        return True


class WalletUser(SandboxUser):
    """Demo Wallet Co's customers: red packets to each other, QR payments to merchants, balances."""

    weight = 4
    participant = "wallet"

    def on_start(self) -> None:
        self.ensure_pool()

    @task(3)
    def transfer(self) -> None:
        self.iteration(self._transfer)

    def _transfer(self) -> None:
        amount = typ.odd_amount(WORLD.rng, "10", "90")
        payer = self.payer(amount)
        payees = [a for a in WORLD.personal if a is not payer and a.inflow + amount < INFLOW_CAP]
        if not payees:
            WORLD.skipped["wallet transfer: no payee under the inflow cap"] += 1
            return
        if not self.movement_fits("wallet", amount, payer, payer.id if payer else "", "wallet transfer"):
            return
        payee = WORLD.rng.choice(payees)
        payee.inflow += amount
        status, _, _ = self.call("wallet", "POST", "/payments/transfers", headers=self.key(), json={
            "from_account_id": payer.id, "to_account_id": payee.id, "amount": typ.money(amount),
            "description": "red packet"}, expect=(201,))
        if status == 201:
            payer.balance -= amount
            payee.balance += amount

    @task(3)
    def qr_payment(self) -> None:
        self.iteration(self._qr_payment)

    def _qr_payment(self) -> None:
        if not WORLD.merchants:
            return
        amount = typ.odd_amount(WORLD.rng, "8", "60")
        payer = self.payer(amount)
        merchant = WORLD.rng.choice(WORLD.merchants)
        status, qr, _ = self.call("wallet", "GET", f"/payments/accounts/{merchant.id}/qr?amount={amount}")
        if status != 200 or not self.movement_fits("wallet", amount, payer, payer.id if payer else "", "QR payment"):
            return
        status, _, _ = self.call("wallet", "POST", "/payments/qr-payments", headers=self.key(), json={
            "payload": qr["payload"], "from_account_id": payer.id, "amount": typ.money(amount)}, expect=(201,))
        if status == 201:
            payer.balance -= amount

    @task(2)
    def balances(self) -> None:
        self.iteration(self._balances)

    def _balances(self) -> None:
        if WORLD.personal:
            account = WORLD.rng.choice(WORLD.personal)
            self.call("wallet", "GET", f"/payments/accounts/{account.id}/balance")
            self.call("wallet", "GET", f"/payments/accounts/{account.id}/journals")

    @task(1)
    def fx_quote(self) -> None:
        self.iteration(self._fx_quote)

    def _fx_quote(self) -> None:
        self.call("wallet", "POST", "/payments/fx/quotes", expect=(201,), json={
            "sell": typ.money(typ.odd_amount(WORLD.rng, "300", "900")), "buy_currency": "USD", "rail": "ripple"})


class TppUser(SandboxUser):
    """Demo TPP Ltd: reads Wang Fang's accounts with her consent, and pays a coffee merchant."""

    weight = 2
    participant = "tpp"

    def step(self, participant: str, method: str, path: str, *, screened: bool = False, **kwargs: Any) -> Any:
        expect = kwargs.get("expect", (200, 201))
        status, body, _ = self.call(participant, method, path, **kwargs)
        if status not in expect:
            raise StopJourney
        return body

    @task(2)
    def read_accounts(self) -> None:
        self.iteration(self._read_accounts)

    def _read_accounts(self) -> None:
        try:
            token = self.step("tpp", "POST", f"{typ.OB}/oauth2/token", form={
                "grant_type": "client_credentials", "client_id": typ.TPP_CLIENT.client_id,
                "client_secret": typ.TPP_CLIENT.client_secret})["access_token"]
            consent = self.step("tpp", "POST", f"{typ.OB}/v3.1/aisp/account-access-consents",
                                headers={"Authorization": f"Bearer {token}"},
                                json={"Data": {"Permissions": ["ReadAccountsDetail", "ReadBalances",
                                                               "ReadTransactionsDetail", "ReadTransactionsCredits",
                                                               "ReadTransactionsDebits"]}, "Risk": {}})
            verifier, challenge = typ._pkce()
            code = self.step("tpp", "POST", f"{typ.OB}/authorize", json={
                "consent_id": consent["Data"]["ConsentId"], "client_id": typ.TPP_CLIENT.client_id,
                "code_challenge": challenge, "code_challenge_method": "S256", "psu_id": "wangfang",
                "otp": typ.OPENBANKING_TEST_OTP})["code"]
            reader = self.step("tpp", "POST", f"{typ.OB}/oauth2/token",
                               basic_auth=(typ.TPP_CLIENT.client_id, typ.TPP_CLIENT.client_secret),
                               form={"grant_type": "authorization_code", "code": code,
                                     "code_verifier": verifier})["access_token"]
            bearer = {"Authorization": f"Bearer {reader}"}
            self.step("tpp", "GET", f"{typ.OB}/v3.1/aisp/accounts", headers=bearer)
            self.step("tpp", "GET", f"{typ.OB}/v3.1/aisp/accounts/{WANG_FANG_WALLET}/balances", headers=bearer)
            self.step("tpp", "GET", f"{typ.OB}/v3.1/aisp/accounts/{WANG_FANG_WALLET}/transactions", headers=bearer)
        except StopJourney:
            pass

    @task(1)
    def pay_coffee(self) -> None:
        self.iteration(self._pay_coffee)

    def _pay_coffee(self) -> None:
        amount = typ.odd_amount(WORLD.rng, "12", "60")
        wallet = WORLD.fixed[WANG_FANG_WALLET]
        if wallet.balance < amount + 50:
            WORLD.skipped["TPP payment: Wang Fang's wallet is spent"] += 1
            return
        if not self.movement_fits("tpp", amount, wallet, WANG_FANG_WALLET, "TPP payment"):
            return
        try:
            typ.tpp_payment(self.step, debtor=WANG_FANG_WALLET, debtor_name="Wang Fang", psu="wangfang",
                            creditor=HUTONG_COFFEE, creditor_name="Hutong Coffee", amount=amount,
                            reference="Coffee beans")
            wallet.balance -= amount
        except StopJourney:
            pass


class StopJourney(Exception):
    """A step failed (already counted as a failure): the journey goes no further."""


class LenderUser(SandboxUser):
    """Demo Lender's front end: 310 applications scored on alternative data, some paid out."""

    weight = 2
    participant = "lender"
    disburse_share = 0.25

    def on_start(self) -> None:
        self.ensure_pool()

    def application_body(self, account_id: str, n: int) -> dict[str, Any]:
        rng = WORLD.rng
        return {"applicant_type": "business", "applicant_name": f"Load Stall {RUN_ID} {n}", "account_id": account_id,
                "requested_amount": typ.money(typ.odd_amount(rng, "800", "3000")), "term_months": rng.choice((6, 9, 12)),
                "cash_flow": {"source": "inline", "monthly_inflow": typ.money(typ.odd_amount(rng, "6000", "30000")),
                              "inflow_volatility_pct": rng.randrange(5, 45)},
                "records": {"months_in_business": rng.randrange(6, 60), "tax_filings_on_time_pct": rng.randrange(60, 100),
                            "utility_bills_on_time_pct": rng.randrange(60, 100),
                            "customer_rating": round(rng.uniform(3.0, 5.0), 1)}}

    @task(2)
    def what_if(self) -> None:
        self.iteration(self._what_if)

    def _what_if(self) -> None:
        body = self.application_body("", 0)
        self.call("lender", "POST", "/credit/scores", json={"cash_flow": body["cash_flow"], "records": body["records"]})

    @task(3)
    def apply(self) -> None:
        self.iteration(self._apply)

    def _apply(self) -> None:
        if not WORLD.personal:
            return
        applicant = WORLD.rng.choice(WORLD.personal)
        status, application, _ = self.call("lender", "POST", "/credit/applications", expect=(201,),
                                           json=self.application_body(applicant.id, WORLD.journeys.total()))
        if status != 201 or application.get("decision", {}).get("outcome") != "approve":
            return
        if WORLD.rng.random() >= self.disburse_share or not application.get("loan_id"):
            return
        offered = Decimal(application["decision"]["amount_offered"]["amount"])
        if applicant.inflow + offered >= INFLOW_CAP:
            WORLD.skipped["disbursement: the borrower is near the inflow cap"] += 1
            return
        if not self.movement_fits("lender", offered, WORLD.fixed[LENDER_FLOAT], LENDER_FLOAT, "disbursement"):
            return
        applicant.inflow += offered
        status, _, _ = self.call("lender", "POST", f"/credit/loans/{application['loan_id']}/disbursement")
        if status == 200:
            applicant.balance += offered

    @task(1)
    def scorecard(self) -> None:
        self.iteration(self._scorecard)

    def _scorecard(self) -> None:
        self.call("lender", "GET", "/credit/scorecard")


class RoboUser(SandboxUser):
    """Demo Robo: risk questionnaires and projections, funds Li Wei's portfolio from her wallet
    under her mandate, and rebalances the accounts it opened."""

    weight = 2
    participant = "robo"

    def on_start(self) -> None:
        self.accounts: list[str] = []
        self.profile: str | None = None

    def questionnaire(self) -> dict[str, Any]:
        rng = WORLD.rng
        return {"age": rng.randrange(22, 65), "horizon_years": rng.randrange(3, 40),
                "annual_income": typ.money(typ.odd_amount(rng, "60000", "300000")),
                "liquid_net_worth": typ.money(typ.odd_amount(rng, "20000", "500000")),
                "goal": "retirement", "loss_reaction": rng.choice(("hold", "buy_more", "sell_some")),
                "priority": "balanced", "experience": "some"}

    @task(2)
    def profile_and_projection(self) -> None:
        self.iteration(self._profile_and_projection)

    def _profile_and_projection(self) -> None:
        status, profile, _ = self.call("robo", "POST", "/advisor/risk-profiles", json=self.questionnaire(),
                                       expect=(201,))
        if status != 201:
            return
        self.profile = profile["id"]
        self.call("robo", "POST", "/advisor/projections", json={
            "risk_level": profile["recommended"]["level"], "initial": typ.money(Decimal("3123.45")),
            "monthly_contribution": typ.money(Decimal("512.34")), "years": 20, "paths": 200,
            "seed": WORLD.rng.randrange(1000)})

    @task(1)
    def fund(self) -> None:
        self.iteration(self._fund)

    def _fund(self) -> None:
        if self.profile is None:
            self._profile_and_projection()
            if self.profile is None:
                return
        amount = typ.odd_amount(WORLD.rng, "100", "300")
        wallet = WORLD.fixed[LI_WEI]
        if wallet.balance < amount + 50 or WORLD.mandate_left < amount:
            WORLD.skipped["robo funding: Li Wei's wallet or mandate is used up"] += 1
            return
        if not self.accounts:
            status, account, _ = self.call("robo", "POST", "/advisor/accounts", expect=(201,), json={
                "owner_name": "Li Wei", "wallet_account_id": LI_WEI, "funding_mandate_id": FUNDING_MANDATE,
                "risk_profile_id": self.profile})
            if status != 201:
                return
            self.accounts.append(account["id"])
        if not self.movement_fits("robo", amount, wallet, LI_WEI, "robo funding"):
            return
        WORLD.mandate_left -= amount
        status, _, _ = self.call("robo", "POST", f"/advisor/accounts/{self.accounts[0]}/deposits",
                                 json={"amount": typ.money(amount)}, expect=(200, 201))
        if status in (200, 201):
            wallet.balance -= amount

    @task(2)
    def rebalance(self) -> None:
        self.iteration(self._rebalance)

    def _rebalance(self) -> None:
        if not self.accounts:
            self.call("robo", "GET", "/advisor/funds")
            return
        account = self.accounts[0]
        self.call("robo", "POST", f"/advisor/accounts/{account}/rebalance", headers=self.key(),
                  json={"dry_run": WORLD.rng.random() < 0.5, "threshold": 0.03})
        self.call("robo", "GET", f"/advisor/accounts/{account}")


__all__ = ["WalletUser", "TppUser", "LenderUser", "RoboUser", "StopUser"]
