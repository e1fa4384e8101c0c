"""Demo Wallet Co's traffic through the gateway, and what each request's sender saw.

Every transfer is kept as a `Sent`: its body, its Idempotency-Key (None: the participant sent
none and the gateway assigned one), and the answer, or the error when none came. The regulator's
audit (tests/faults/regulator.py) checks the run against these.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.common.demo import demo_account
from services.common.idempotency import REPLAY_HEADER
from services.common.problems import PROBLEM_TYPE_BASE

WALLET_KEY = "sbx_demo_wallet_key"
LI_WEI = demo_account("Li Wei").id  # acc_…01, 5000.00
ZHANG_MIN = demo_account("Zhang Min").id  # acc_…02, 1200.00
CLIENT_TIMEOUT_S = 10  # the gateway answers 504 after 2 s; a killed gateway drops at once
RECEIPT_HEADER = "x-sandbox-receipt"


@dataclass
class Sent:
    """One transfer as its sender saw it."""

    body: dict[str, Any]
    key: str | None
    status: int | None = None  # None: no answer (the connection broke)
    journal_id: str | None = None
    replayed: bool = False
    problem: str | None = None  # the problem type's slug, for a refusal
    title: str | None = None  # the problem's title (says who refused: the gateway or payments)
    retry_after: str | None = None
    receipt_index: int | None = None  # the gateway's audit entry for this answer
    error: str | None = None  # why no answer came
    retry_of: Sent | None = field(default=None, repr=False)

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def outcome_unknown(self) -> bool:
        """No answer, or the gateway's 504: the movement may or may not have been applied."""
        return self.status is None or self.status == 504

    def __str__(self) -> str:
        amount = self.body["amount"]["amount"]
        refusal = f" {self.problem} ({self.title})" if self.problem else ""
        seen = f"{self.status}{refusal}" if self.status else f"no answer ({self.error})"
        return f"{amount} {self.body['from_account_id']}→{self.body['to_account_id']} key={self.key}: {seen}"


def _receipt_index(response: httpx.Response) -> int | None:
    receipt = response.headers.get(RECEIPT_HEADER, "")
    for part in receipt.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "index" and value.isdigit():
            return int(value)
    return None


class Wallet:
    """Demo Wallet Co calling the gateway with its key."""

    def __init__(self, gateway_url: str) -> None:
        self.client = httpx.Client(base_url=gateway_url, headers={"X-API-Key": WALLET_KEY},
                                   timeout=CLIENT_TIMEOUT_S)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Wallet:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def open_account(self, owner_name: str) -> str:
        response = self.client.post("/payments/accounts", json={"kind": "personal", "owner_name": owner_name})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def transfer(self, from_account: str, to_account: str, amount: str, key: str | None = None,
                 description: str | None = None) -> Sent:
        body: dict[str, Any] = {"from_account_id": from_account, "to_account_id": to_account,
                                "amount": {"amount": amount, "currency": "CNY"}}
        if description:
            body["description"] = description
        return self.send(body, key)

    def send(self, body: dict[str, Any], key: str | None, retry_of: Sent | None = None) -> Sent:
        sent = Sent(body, key, retry_of=retry_of)
        headers = {"Idempotency-Key": key} if key else {}
        try:
            response = self.client.post("/payments/transfers", json=body, headers=headers)
        except httpx.HTTPError as exc:
            sent.error = type(exc).__name__
            return sent
        sent.status = response.status_code
        sent.receipt_index = _receipt_index(response)
        sent.replayed = response.headers.get(REPLAY_HEADER, "").lower() == "true"
        sent.retry_after = response.headers.get("retry-after")
        try:
            data = response.json()
        except ValueError:
            return sent
        if sent.succeeded:
            sent.journal_id = data.get("id")
        elif str(data.get("type", "")).startswith(PROBLEM_TYPE_BASE):
            sent.problem = data["type"][len(PROBLEM_TYPE_BASE):]
            sent.title = data.get("title")
        return sent

    def retry(self, first: Sent) -> Sent:
        """The same request again, with the same key."""
        return self.send(first.body, first.key, retry_of=first)

    def retry_until_settled(self, first: Sent, timeout_s: float) -> Sent:
        """Retry a keyed request while the answer is "still in flight" (409, Retry-After) or
        "unknown" (504, no answer), for at most `timeout_s`; the last answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            sent = self.retry(first)
            unsettled = sent.outcome_unknown or sent.problem == "idempotency-key-in-flight"
            if not unsettled or time.monotonic() >= deadline:
                return sent
            wait = float(sent.retry_after) if (sent.retry_after or "").isdigit() else 0.5
            time.sleep(max(0.1, min(wait, deadline - time.monotonic())))


def new_key() -> str:
    return f"fault-{uuid.uuid4().hex}"


def fund_new_accounts(wallet: Wallet, count: int, amount: str = "300.00") -> list[str]:
    """Open `count` accounts for Demo Wallet Co and move `amount` into each from Li Wei's
    wallet, so every account of the ring can pay; Li Wei and Zhang Min first. Every account has
    then been screened once: the gateway knows its owner's name and needs payments for no
    look-up while it is down."""
    accounts = [LI_WEI, ZHANG_MIN]
    known = wallet.transfer(ZHANG_MIN, LI_WEI, "1.00", key=new_key(), description="fault suite warm-up")
    assert known.succeeded, str(known)
    for n in range(count):
        account = wallet.open_account(f"Fault Suite Wallet {n + 1}")
        funded = wallet.transfer(LI_WEI, account, amount, key=new_key(), description="fault suite float")
        assert funded.succeeded, str(funded)
        accounts.append(account)
    return accounts


class Load:
    """A few clients sending transfers round a ring of accounts through the gateway, every
    other one keyed, small varied amounts, until stopped (or `per_client` each)."""

    def __init__(self, wallet_url: str, accounts: list[str], clients: int = 3, pause_s: float = 0.05,
                 per_client: int = 100) -> None:
        self.wallet_url = wallet_url
        self.accounts = accounts
        self.clients = clients
        self.pause_s = pause_s
        self.per_client = per_client
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]

    def _client(self, n: int) -> None:
        with Wallet(self.wallet_url) as wallet:
            for j in range(self.per_client):
                if self._stop.is_set():
                    return
                ring = len(self.accounts)
                source = self.accounts[(n + j) % ring]
                target = self.accounts[(n + j + 1) % ring]
                amount = f"{1 + (n * 7 + j) % 9}.{(n * 31 + j * 17) % 100:02d}"
                sent = wallet.transfer(source, target, amount, key=new_key() if j % 2 == 0 else None)
                with self._lock:
                    self.sent.append(sent)
                self._stop.wait(self.pause_s)

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def succeeded(self) -> int:
        with self._lock:
            return sum(1 for s in self.sent if s.succeeded)

    def wait_for_successes(self, count: int, timeout_s: float = 20) -> None:
        """Until `count` more transfers than now have succeeded."""
        target = self.succeeded() + count
        deadline = time.monotonic() + timeout_s
        while self.succeeded() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load stalled: {self.succeeded()} successes, wanted {target}")
            time.sleep(0.02)

    def stop(self) -> list[Sent]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)
        assert not any(t.is_alive() for t in self._threads), "a client did not finish"
        return list(self.sent)


def send_together(gateway_url: str, transfers: list[tuple[str, str, str, str | None]]) -> list[Sent]:
    """Send (from, to, amount, key) transfers at once, one client each; their answers in order."""

    def send(transfer: tuple[str, str, str, str | None]) -> Sent:
        with Wallet(gateway_url) as wallet:
            return wallet.transfer(*transfer)

    with ThreadPoolExecutor(len(transfers)) as senders:
        return list(senders.map(send, transfers))
