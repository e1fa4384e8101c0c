"""AML screening as plain functions over plain data: which operations move money (read from the
versioned rules file), how a request becomes a `Transaction`, and the scored, explainable rules
that turn it into approve / review / block. No HTTP and no database here."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from sandbox.gateway.sanctions import WatchList
from services.common.money import currency_exponents

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.yaml")
_AMOUNT = re.compile(r"^[0-9]{1,18}(\.[0-9]{1,6})?$")
_EXPONENTS = {"JPY": 0, "KRW": 0, "VND": 0, "KWD": 3, "BHD": 3, "JOD": 3, "OMR": 3, "TND": 3}


class Unscreenable(ValueError):
    """The request names a money-moving operation but its amount cannot be read."""


# A JSON pointer into the request body, or alternatives tried in order ("/amount/amount |
# /_lookup/amount/amount"): each alternative is a tuple of path segments.
Pointer = tuple[tuple[str, ...], ...]
LOOKUP = "_lookup"  # where the gateway puts a resource it looked up for the operation (`lookup:`)


def _pointer(text: str | None) -> Pointer | None:
    if not text:
        return None
    return tuple(tuple(part.replace("~1", "/").replace("~0", "~") for part in alt.strip().lstrip("/").split("/"))
                 for alt in text.split("|"))


def _describe(pointer: Pointer) -> str:
    return " or ".join("/" + "/".join(alt) for alt in pointer)


def _resolve(body: Any, pointer: Pointer | None) -> Any:
    for alternative in pointer or ():
        node = body
        for part in alternative:
            if not isinstance(node, dict):
                node = None
                break
            node = node.get(part)
            if node is None:
                break
        if node is not None:
            return node
    return None


def lookup_path(template: str, body: Any) -> str | None:
    """The service path of the resource an operation's amount or parties come from:
    "/fx/quotes/{/quote_id}" with the body's quote id; None when the body lacks it."""
    def value(match: re.Match[str]) -> str:
        found = _resolve(body, _pointer(match.group(1)))
        if not isinstance(found, str) or not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", found):
            raise LookupError(match.group(1))
        return found
    try:
        return re.sub(r"\{(/[^}]+)\}", value, template)
    except LookupError:
        return None


def path_regex(template: str) -> re.Pattern[str]:
    out = re.escape(template).replace(r"\*\*", ".*")
    out = re.sub(r"\\\{[^}]+\\\}", "[^/]+", out)
    return re.compile(f"^{out}$")


@dataclass(frozen=True)
class Party:
    account: Pointer | None = None  # a payments account id: the owner's name is looked up
    ident: Pointer | None = None
    name: Pointer | None = None

    @classmethod
    def parse(cls, spec: dict | None) -> Party | None:
        if not spec:
            return None
        return cls(_pointer(spec.get("account")), _pointer(spec.get("id")), _pointer(spec.get("name")))


@dataclass(frozen=True)
class ScreenedOperation:
    """One money-moving operation as declared in the rules file."""

    service: str
    method: str
    path: str
    kind: str
    pattern: re.Pattern[str]
    amount: Pointer
    currency: Pointer
    payer: Party | None
    payee: Party | None
    customer: Pointer | None
    country: Pointer | None
    card_number: Pointer | None
    # The currency the payee receives, when it is not the one paid (a cross-border payment's buy side).
    counter_currency: Pointer | None = None
    # A resource of the same service to read before screening (its path, with {/pointer}s into
    # the body): a cross-border payment's quote, a refund's journal. Under `_lookup` to pointers.
    lookup: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(slots=True)
class Transaction:
    """A money-moving request, reduced to what the rules need. `value` is in reporting minor units."""

    participant_id: str
    service: str
    kind: str
    amount: str
    currency: str
    amount_minor: int
    value: int
    payer: str | None = None
    payee: str | None = None
    customer: str | None = None
    payer_name: str | None = None
    payee_name: str | None = None
    country: str | None = None
    counter_currency: str | None = None  # what the payee receives, when another currency
    card_last4: str | None = None
    payer_is_account: bool = False
    payee_is_account: bool = False

    @property
    def subject(self) -> str | None:
        """Whose activity this is: the payer, or for a top-up the account topped up."""
        return self.payer or self.payee


@dataclass(frozen=True)
class RuleHit:
    rule: str
    score: int
    reason: str
    forces_block: bool = False


@dataclass(frozen=True)
class Decision:
    outcome: str  # approve | review | block
    score: int
    hits: tuple[RuleHit, ...]
    ruleset_version: str

    @property
    def rules(self) -> list[str]:
        return [h.rule for h in self.hits]


# What one `History.record` added: (table, key, entry) triples, so `forget` can take them out.
Recorded = tuple[tuple[dict[str, deque], str, tuple[float, int]], ...]


class History:
    """Recent activity per account, in memory: what velocity, structuring and pass-through read.
    Entries are (epoch seconds, reporting value); older than the longest window they are dropped."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon_s = horizon_s
        self.activity: dict[str, deque[tuple[float, int]]] = {}
        self.inflows: dict[str, deque[tuple[float, int]]] = {}
        self.outflows: dict[str, deque[tuple[float, int]]] = {}

    def _recent(self, table: dict[str, deque[tuple[float, int]]], key: str | None, now: float) -> deque:
        if key is None:
            return deque()
        entries = table.get(key)
        if entries is None:
            return deque()
        cutoff = now - self.horizon_s
        while entries and entries[0][0] < cutoff:
            entries.popleft()
        return entries

    def activity_of(self, key: str | None, now: float) -> deque:
        return self._recent(self.activity, key, now)

    def inflows_of(self, key: str | None, now: float) -> deque:
        return self._recent(self.inflows, key, now)

    def outflows_of(self, key: str | None, now: float) -> deque:
        return self._recent(self.outflows, key, now)

    def record(self, tx: Transaction, now: float) -> Recorded:
        """A transaction the gateway forwards: it counts for later decisions from now on. The
        gateway records before forwarding and `forget`s the entries if the service refuses."""
        entry = (now, tx.value)
        recorded: list[tuple[dict[str, deque], str, tuple[float, int]]] = []
        for table, key in ((self.activity, tx.subject), (self.outflows, tx.payer), (self.inflows, tx.payee)):
            if key is not None:
                table.setdefault(key, deque()).append(entry)
                recorded.append((table, key, entry))
        return tuple(recorded)

    def forget(self, recorded: Recorded) -> None:
        """Take recorded entries out again (the service refused, or another hop owns them now).
        Equal entries are interchangeable, so removing any one of them is removing this one."""
        for table, key, entry in recorded:
            entries = table.get(key)
            if entries is None:
                continue
            try:
                entries.remove(entry)
            except ValueError:  # already past the horizon and dropped
                pass


Rule = Callable[[Transaction, History, float], RuleHit | None]


def _sum_since(entries: deque, since: float) -> tuple[int, int]:
    count = total = 0
    for t, value in entries:
        if t >= since:
            count += 1
            total += value
    return count, total


class RuleSet:
    """The compiled rules file: operations to screen, rules with weights, thresholds, version."""

    def __init__(self, config: dict[str, Any], base_dir: Path) -> None:
        self.version = str(config["version"])
        self.reporting_currency = config["reporting_currency"]
        self.reporting_exponent = exponent(self.reporting_currency)
        self.rates = {k: Decimal(v) for k, v in config.get("reference_rates", {}).items()}
        self.review_at = int(config["thresholds"]["review"])
        self.block_at = int(config["thresholds"]["block"])
        self.operations = [self._operation(op) for op in config["operations"]]
        self._by_key: dict[tuple[str, str], list[ScreenedOperation]] = {}
        for op in self.operations:
            self._by_key.setdefault((op.service, op.method), []).append(op)
        self.config = config
        rules = config["rules"]
        self.watch_list = WatchList.load(base_dir / rules["sanctions"]["watch_list"])
        self.rules: list[tuple[str, Rule]] = [
            ("large_value", self._large_value(rules["large_value"])),
            ("structuring", self._structuring(rules["structuring"], rules["large_value"])),
            ("velocity", self._velocity(rules["velocity"])),
            ("rapid_pass_through", self._pass_through(rules["rapid_pass_through"])),
            ("high_risk_jurisdiction", self._jurisdiction(rules["high_risk_jurisdiction"])),
            ("round_amount", self._round_amount(rules["round_amount"])),
            ("sanctions", self._sanctions(rules["sanctions"])),
        ]
        windows = [rules[r]["window_hours"] for r in ("structuring", "velocity", "rapid_pass_through")]
        self.horizon_s = max(windows) * 3600.0

    @classmethod
    def load(cls, path: Path = DEFAULT_RULES_FILE) -> RuleSet:
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")), path.parent)

    # -- which requests are screened, and what they say ------------------------------------

    @staticmethod
    def _operation(op: dict[str, Any]) -> ScreenedOperation:
        return ScreenedOperation(
            service=op["service"], method=op["method"].upper(), path=op["path"], kind=op["kind"],
            pattern=path_regex(op["path"]), amount=_pointer(op["amount"]),  # type: ignore[arg-type]
            currency=_pointer(op["currency"]),  # type: ignore[arg-type]
            payer=Party.parse(op.get("payer")), payee=Party.parse(op.get("payee")),
            customer=_pointer(op.get("customer")), country=_pointer(op.get("country")),
            card_number=_pointer(op.get("card_number")), lookup=op.get("lookup"),
            counter_currency=_pointer(op.get("counter_currency")),
        )

    def screened_operation(self, service: str, method: str, path: str) -> ScreenedOperation | None:
        for op in self._by_key.get((service, method), ()):
            if op.pattern.match(path):
                return op
        return None

    def to_reporting(self, amount: Decimal, currency: str) -> int:
        rate = self.rates.get(currency, Decimal(1))
        return int((amount * rate).scaleb(self.reporting_exponent).to_integral_value(ROUND_HALF_EVEN))

    def transaction(self, op: ScreenedOperation, body: Any, participant_id: str) -> Transaction:
        """Read amount and parties at the pointers the rules file declares; account owners'
        names are filled in later by whoever can look them up."""
        amount = _resolve(body, op.amount)
        currency = _resolve(body, op.currency)
        if isinstance(amount, str) and amount.startswith("-") and _AMOUNT.match(amount[1:]):
            # Readable but negative: say what the service would say of it.
            raise Unscreenable(f"the amount at {_describe(op.amount)} must be positive: {amount!r} is negative")
        if not isinstance(amount, str) or not _AMOUNT.match(amount):
            raise Unscreenable(f"the amount at {_describe(op.amount)} is missing or not a decimal string")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            raise Unscreenable(f"the currency at {_describe(op.currency)} is missing or not an ISO 4217 code")
        try:
            decimal_amount = Decimal(amount)
        except InvalidOperation as exc:  # pragma: no cover - the regex already refused it
            raise Unscreenable(str(exc)) from exc
        tx = Transaction(
            participant_id=participant_id, service=op.service, kind=op.kind, amount=amount,
            currency=currency, amount_minor=int(decimal_amount.scaleb(exponent(currency))),
            value=self.to_reporting(decimal_amount, currency),
        )
        for side in ("payer", "payee"):
            party: Party | None = getattr(op, side)
            if party is None:
                continue
            ident = _resolve(body, party.account or party.ident)
            if isinstance(ident, str):
                setattr(tx, side, ident)
                setattr(tx, f"{side}_is_account", party.account is not None)
            name = _resolve(body, party.name)
            if isinstance(name, str):
                setattr(tx, f"{side}_name", name)
        customer = _resolve(body, op.customer)
        tx.customer = customer if isinstance(customer, str) else None
        country = _resolve(body, op.country)
        tx.country = country.upper() if isinstance(country, str) else None
        counter = _resolve(body, op.counter_currency)
        tx.counter_currency = counter if isinstance(counter, str) and re.fullmatch(r"[A-Z]{3}", counter) else None
        card = _resolve(body, op.card_number)
        if isinstance(card, str) and len(card) >= 4:
            tx.card_last4 = card[-4:]  # the only part of a card number the gateway keeps
        return tx

    # -- the decision ------------------------------------------------------------------------

    def screen(self, tx: Transaction, history: History, now: float) -> Decision:
        """Every rule adds to the score and explains itself; thresholds decide."""
        hits = []
        for _name, rule in self.rules:
            hit = rule(tx, history, now)
            if hit is not None:
                hits.append(hit)
        score = sum(h.score for h in hits)
        if any(h.forces_block for h in hits) or score >= self.block_at:
            outcome = "block"
        elif score >= self.review_at:
            outcome = "review"
        else:
            outcome = "approve"
        return Decision(outcome, score, tuple(hits), self.version)

    def money(self, minor: int) -> str:
        return f"{Decimal(minor).scaleb(-self.reporting_exponent):.{self.reporting_exponent}f} {self.reporting_currency}"

    def _large_value(self, cfg: dict) -> Rule:
        weight, threshold = int(cfg["weight"]), self.to_reporting(Decimal(cfg["threshold"]), self.reporting_currency)

        def large_value(tx: Transaction, _h: History, _now: float) -> RuleHit | None:
            if tx.value >= threshold:
                return RuleHit("large_value", weight, f"{self.money(tx.value)} is at or above the "
                               f"large-value threshold of {self.money(threshold)}")
            return None

        return large_value

    def _structuring(self, cfg: dict, large: dict) -> Rule:
        weight, min_count = int(cfg["weight"]), int(cfg["min_count"])
        threshold = self.to_reporting(Decimal(large["threshold"]), self.reporting_currency)
        low = int(threshold * Decimal(cfg["band_low"]))
        window = float(cfg["window_hours"]) * 3600

        def structuring(tx: Transaction, history: History, now: float) -> RuleHit | None:
            if not low <= tx.value < threshold:
                return None
            count, total = 1, tx.value
            since = now - window
            for t, value in history.activity_of(tx.subject, now):
                if t >= since and low <= value < threshold:
                    count += 1
                    total += value
            if count >= min_count and total >= threshold:
                return RuleHit("structuring", weight, f"{count} amounts just below the "
                               f"{self.money(threshold)} threshold within {cfg['window_hours']} h, "
                               f"{self.money(total)} in all")
            return None

        return structuring

    def _velocity(self, cfg: dict) -> Rule:
        weight, max_count = int(cfg["weight"]), int(cfg["max_count"])
        window = float(cfg["window_hours"]) * 3600

        def velocity(tx: Transaction, history: History, now: float) -> RuleHit | None:
            entries = history.activity_of(tx.subject, now)
            if len(entries) < max_count:
                return None
            # Newest first, stopping at the window's edge or once over the limit: O(max_count).
            since, count = now - window, 1
            for t, _value in reversed(entries):
                if t < since or count > max_count:
                    break
                count += 1
            if count > max_count:
                return RuleHit("velocity", weight, f"{count} transactions on {tx.subject} within "
                               f"{cfg['window_hours']} h (more than {max_count})")
            return None

        return velocity

    def _pass_through(self, cfg: dict) -> Rule:
        weight, ratio = int(cfg["weight"]), Decimal(cfg["ratio"])
        min_inflow = self.to_reporting(Decimal(cfg["min_inflow"]), self.reporting_currency)
        window = float(cfg["window_hours"]) * 3600

        def rapid_pass_through(tx: Transaction, history: History, now: float) -> RuleHit | None:
            if tx.payer is None:
                return None
            inflows = history.inflows_of(tx.payer, now)
            if not inflows:
                return None
            since = now - window
            _, total_in = _sum_since(inflows, since)
            if total_in < min_inflow:
                return None
            _, total_out = _sum_since(history.outflows_of(tx.payer, now), since)
            total_out += tx.value
            if total_out >= total_in * ratio:
                return RuleHit("rapid_pass_through", weight, f"{self.money(total_out)} out of "
                               f"{tx.payer} within {cfg['window_hours']} h of {self.money(total_in)} coming in")
            return None

        return rapid_pass_through

    def _jurisdiction(self, cfg: dict) -> Rule:
        severe = (int(cfg["call_for_action"]["weight"]), frozenset(cfg["call_for_action"]["countries"]))
        watch = (int(cfg["increased_monitoring"]["weight"]), frozenset(cfg["increased_monitoring"]["countries"]))
        by_currency = dict(cfg.get("currency_jurisdictions", {}))

        def high_risk_jurisdiction(tx: Transaction, _h: History, _now: float) -> RuleHit | None:
            sources = [(tx.country, "creditor address"), (by_currency.get(tx.currency), f"currency {tx.currency}")]
            if tx.counter_currency:  # buying a currency is dealing in its jurisdiction too
                sources.append((by_currency.get(tx.counter_currency), f"currency bought {tx.counter_currency}"))
            for country, source in sources:
                if country is None:
                    continue
                if country in severe[1]:
                    return RuleHit("high_risk_jurisdiction", severe[0],
                                   f"{source} points to {country}, on the call-for-action list")
                if country in watch[1]:
                    return RuleHit("high_risk_jurisdiction", watch[0],
                                   f"{source} points to {country}, under increased monitoring")
            return None

        return high_risk_jurisdiction

    def _round_amount(self, cfg: dict) -> Rule:
        weight, multiple, minimum = int(cfg["weight"]), Decimal(cfg["multiple"]), Decimal(cfg["minimum"])

        def round_amount(tx: Transaction, _h: History, _now: float) -> RuleHit | None:
            scale = exponent(tx.currency)
            step, floor = int(multiple.scaleb(scale)), int(minimum.scaleb(scale))
            if tx.amount_minor >= floor and tx.amount_minor % step == 0:
                return RuleHit("round_amount", weight, f"{tx.amount} {tx.currency} is a round "
                               f"multiple of {multiple} at or above {minimum}")
            return None

        return round_amount

    def _sanctions(self, cfg: dict) -> Rule:
        review_score, block_score = float(cfg["review_score"]), float(cfg["block_score"])
        weight = int(cfg["review_weight"])
        watch_list = self.watch_list

        def sanctions(tx: Transaction, _h: History, _now: float) -> RuleHit | None:
            best = None
            for role, name in (("payer", tx.payer_name), ("payee", tx.payee_name)):
                if name:
                    # The creditor's country is the payee's; nothing says where the payer lives.
                    match = watch_list.best_match(name, review_score, tx.country if role == "payee" else None)
                    if match is not None and (best is None or match.score > best[1].score):
                        best = (role, match, name)
            if best is None:
                return None
            role, match, name = best
            forced = match.score >= block_score
            listed = match.listed_name if match.listed_name == match.primary_name else \
                f"{match.listed_name} (alias of {match.primary_name})"
            return RuleHit("sanctions", weight, f"{role} name {name!r} matches watch-list entry "
                           f"{match.entity_id} {listed} at {match.score:g}/100"
                           + (" (a block-level match)" if forced else "") + f": {match.explain()}",
                           forces_block=forced)

        return sanctions


def exponent(currency: str) -> int:
    """ISO 4217 minor-unit exponent; the shared kit's table when it knows the code."""
    known = currency_exponents().get(currency)
    return known if known is not None else _EXPONENTS.get(currency, 2)
