"""The narration kit: a scenario is a plain sequence of Steps, each a real call to the running
gateway, printed as it happens: why it is made, the method and path, whose key it carries, the
body, then the answer's status and the fields worth reading, the gateway's screening decision
and receipt, and the console link to the request. `Scene.check` states a claim and stops the
scenario loudly when the sandbox answers otherwise, so a scenario run is also a test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from rich.console import Console
from rich.text import Text

from services.common.demo import DEMO_PARTICIPANTS, DEMO_REGULATOR_KEY


@dataclass(frozen=True)
class Participant:
    """Whose key a call carries, named as the narration shows it: "Demo Wallet Co (sbx_demo_wallet_key)"."""

    name: str
    api_key: str

    def __str__(self) -> str:
        return f"{self.name} ({self.api_key})"


def _demo(name: str) -> Participant:
    participant = next(p for p in DEMO_PARTICIPANTS if p.name == name)
    return Participant(participant.name, participant.api_key)


# The seeded participants the scenarios speak as (services/common/demo.py is the one source).
WALLET_CO = _demo("Demo Wallet Co")
DEMO_TPP = _demo("Demo TPP Ltd")
DEMO_LENDER = _demo("Demo Lender")
DEMO_ROBO = _demo("Demo Robo")
REGULATOR = Participant("the regulator", DEMO_REGULATOR_KEY)


class ScenarioFailed(Exception):
    """The sandbox answered otherwise than the scenario claims: the run fails with this message."""


def fresh_key() -> str:
    """A new Idempotency-Key: each run is a new payment, never a replay of the last run's."""
    return str(uuid.uuid4())


def new_request_id() -> str:
    # The gateway takes the caller's X-Request-ID and sends it on every hop, so one id finds
    # the call in the audit log, the services' logs and the console.
    return "req_" + uuid.uuid4().hex


def dig(document: Any, path: str) -> Any:
    """A field by dotted path ("decision.limit.amount", "Data.Balance.0.Amount"), or None."""
    value = document
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def money(document: Any, path: str) -> Decimal:
    """An amount on the wire (a decimal string) as a Decimal, never a float."""
    value = dig(document, path)
    if not isinstance(value, str):
        raise ScenarioFailed(f"expected a decimal string at {path!r}, got {value!r}")
    return Decimal(value)


@dataclass
class Step:
    """One call: why it is made, what is sent and as whom, and what to show of the answer."""

    why: str
    method: str
    path: str  # at the gateway, e.g. /payments/transfers
    who: Participant
    json: Any = None
    form: dict[str, str] | None = None  # sent form-encoded (OAuth token requests)
    headers: dict[str, str] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None
    expect: int | tuple[int, ...] = 200
    show: Sequence[str] = ()  # dotted paths of the answer's fields worth printing


@dataclass
class Answer:
    status: int
    body: Any  # the parsed JSON, or the text when the answer is not JSON
    headers: httpx.Headers
    request_id: str

    def __getitem__(self, path: str) -> Any:
        return dig(self.body, path)

    @property
    def decision(self) -> str:
        """The gateway's screening verdict on a money movement ("approve; score=0; rules=none; …"), else ""."""
        return self.headers.get("x-sandbox-decision", "")


class Scene:
    """Runs a scenario's steps against one gateway and narrates them on one rich console."""

    def __init__(self, http: httpx.Client, out: Console, console_url: str) -> None:
        self.http = http
        self.out = out
        self.console_url = console_url.rstrip("/")
        self.steps = 0
        self.checks = 0

    def say(self, text: str) -> None:
        """The narrator's aside: what the next steps are about."""
        self.out.print(Text(text, style="italic"))

    def call(self, step: Step) -> Answer:
        self.steps += 1
        request_id = new_request_id()
        headers = {"X-API-Key": step.who.api_key, "X-Request-ID": request_id, **step.headers}
        out = self.out
        out.print(Text.assemble((f"{self.steps:>2}. ", "bold"), (step.why, "bold")))
        out.print(Text.assemble("    ", (f"{step.method} {step.path}", "cyan"), "  as ", (str(step.who), "magenta")))
        sent = step.json if step.json is not None else step.form
        if sent is not None:
            out.print(Text("    " + _compact(sent), style="dim"))
        try:
            response = self.http.request(step.method, step.path, headers=headers, json=step.json,
                                         data=step.form, auth=step.basic_auth)
        except httpx.HTTPError as exc:
            raise ScenarioFailed(f"{step.method} {step.path}: the gateway did not answer ({exc!r})") from exc
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        answer = Answer(response.status_code, body, response.headers, request_id)
        expected = step.expect if isinstance(step.expect, tuple) else (step.expect,)
        ok = answer.status in expected
        status_line = Text.assemble("    → ", (f"{answer.status} {response.reason_phrase}", "green" if ok else "red"))
        shown = [(path, answer[path]) for path in step.show]
        if shown:
            status_line.append("  " + "  ".join(f"{path}={_short(value)}" for path, value in shown))
        out.print(status_line)
        decision = response.headers.get("x-sandbox-decision")
        receipt = response.headers.get("x-sandbox-receipt")
        if decision or receipt:  # a screened movement has both; any other logged call a receipt
            out.print(Text.assemble("    gateway: ", (f"{decision} · " if decision else "", "yellow"),
                                    f"receipt {receipt}" if receipt else "no receipt"))
        out.print(Text(f"    console: {self.console_url}/requests/{request_id}", style="blue"))
        if not ok:
            raise ScenarioFailed(f"{step.method} {step.path} answered {answer.status}, expected "
                                 f"{' or '.join(map(str, expected))}: {_problem(body)}")
        return answer

    def check(self, holds: bool, claim: str, otherwise: str = "") -> None:
        """A claim the scenario makes about what the sandbox did; false stops the scenario."""
        if not holds:
            raise ScenarioFailed(claim + (f" — but {otherwise}" if otherwise else ""))
        self.checks += 1
        self.out.print(Text.assemble(("    ✓ ", "bold green"), claim))


def _compact(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    return _compact(value)


def _problem(body: Any) -> str:
    if isinstance(body, Mapping):
        if "title" in body or "detail" in body:
            return f"{body.get('title')}: {body.get('detail')}"
        if "Errors" in body:  # an OBIE error answer
            return _compact(body["Errors"])
    return _compact(body)[:500] if not isinstance(body, str) else body[:500]
