"""The regulator's audit of a run: after faults and recovery, does the gateway's promise hold?

Each check returns findings (empty: it holds), precise enough to act on: journal ids, audit
indices, keys, expected against seen. `regulators_audit` runs them all:

(a) the ledger's invariants hold (payments' `GET /invariants`, on its own port);
(b) every 2xx a sender got has its journal in the ledger;
(c) every journal moved through the gateway is in the audit log exactly once as counted (an
    `outcome` or `reconciled` entry for its idempotency key whose counts_toward has "limits"),
    no counted entry lacks its journal, and the participant's activity volume is their sum;
(d) a keyed retry of a used key replays the first answer, and counts toward nothing;
(e) `GET /sandbox/audit/verify` is ok;
(f) no intent is left open: each has an `outcome` or `reconciled` entry.

Journals are matched to entries by their idempotency key, read from payments' own database
(journals.idempotency_key_id → idempotency_keys): the public journal does not show the key, and
an unkeyed request's key is the one the gateway assigned.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from services.common.demo import DEMO_REGULATOR_KEY, WALLET_CO
from services.common.money import to_minor
from tests.faults.stack import GATEWAY_PATIENCE_S, Stack
from tests.faults.traffic import Sent, Wallet

CLOSING = ("outcome", "reconciled")
PAGE = 100
# Every intent can be reconciled within the gateway's patience, its 1 s deadline grace and the
# 2 s it waits past a deadline before "no record" means "not applied", plus reconciler rounds.
RECONCILE_TIMEOUT_S = GATEWAY_PATIENCE_S + 1 + 2 + 5


@dataclass(frozen=True)
class LedgerJournal:
    id: str
    kind: str
    amount_minor: int
    currency: str
    key: str | None
    scope: str | None

    def __str__(self) -> str:
        return f"{self.id} ({self.kind} {self.amount_minor / 100:.2f} {self.currency}, key {self.key})"


def regulator(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.gateway_url, headers={"X-API-Key": DEMO_REGULATOR_KEY}, timeout=10)


def audit_entries(stack: Stack) -> list[dict[str, Any]]:
    """The whole log, oldest first."""
    entries: list[dict[str, Any]] = []
    after = None
    with regulator(stack) as client:
        while True:
            params: dict[str, Any] = {"limit": PAGE} | ({"after": after} if after is not None else {})
            response = client.get("/sandbox/audit/entries", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            entries += page["data"]
            if not page["has_more"]:
                return entries
            after = page["next_after"]


def ledger_journals(stack: Stack) -> list[LedgerJournal]:
    """Every journal but the demo's opening balances, with the key that produced it."""
    engine = stack.database("payments")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT j.id, j.kind, j.amount_minor, j.currency, k.key, k.scope FROM journals j "
                "LEFT JOIN idempotency_keys k ON k.id = j.idempotency_key_id "
                "WHERE j.kind <> 'opening' ORDER BY j.created_at, j.id")).all()
    finally:
        engine.dispose()
    return [LedgerJournal(*row) for row in rows]


def open_intents(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    closed = {e["intent_index"] for e in entries if e["phase"] in CLOSING}
    return [e for e in entries if e["phase"] == "intent" and e["index"] not in closed]


def wait_until_reconciled(stack: Stack, timeout_s: float) -> list[dict[str, Any]]:
    """Poll the log until every intent is closed (or the time is up); the log as last read.
    An intent whose key payments has no record of closes once the gateway's deadline for it is
    2 s past, so allow the gateway's patience plus a few reconciler rounds."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = audit_entries(stack)
        if not open_intents(entries) or time.monotonic() >= deadline:
            return entries
        time.sleep(0.3)


def wait_for_intent(stack: Stack, key: str | Callable[[dict[str, Any]], bool], timeout_s: float = 5) -> dict[str, Any]:
    """The last intent entry the gateway wrote ahead for this idempotency key (or that matches),
    once it is logged."""
    matches = key if callable(key) else (lambda e: e["idempotency_key"] == key)
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in audit_entries(stack) if e["phase"] == "intent" and matches(e)]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no intent logged for {key} within {timeout_s} s"
        time.sleep(0.05)


def entries_closing(entries: list[dict[str, Any]], intent: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries that follow an intent: its outcome or unanswered entry, its reconciliation,
    and replays of its key."""
    return [e for e in entries if e["intent_index"] == intent["index"]]


def balance_minor(stack: Stack, account_id: str) -> int:
    account = httpx.get(f"{stack.payments_url}/accounts/{account_id}", timeout=10).json()
    return to_minor(account["balance"]["amount"], account["balance"]["currency"])


def _describe(entry: dict[str, Any]) -> str:
    amount = (entry.get("amount") or {}).get("amount")
    return (f"#{entry['index']} {entry['phase']} {entry['status']} {amount} counts={entry['counts_toward']}"
            f"{' error=' + entry['error'] if entry.get('error') else ''}")


# -- the checks ---------------------------------------------------------------------------------

def invariants_hold(stack: Stack) -> list[str]:
    report = httpx.get(f"{stack.payments_url}/invariants", timeout=10).json()
    if report["ok"]:
        return []
    return [f"invariant {c['name']} fails: {c['violations'][:5]}" for c in report["checks"] if not c["ok"]] \
        or [str(report)]


def answered_journals_in_ledger(stack: Stack, sent: list[Sent]) -> list[str]:
    findings = []
    with httpx.Client(base_url=stack.payments_url, timeout=10) as client:
        for s in sent:
            if not s.succeeded:
                continue
            if s.journal_id is None:
                findings.append(f"{s}: a 2xx without a journal id")
                continue
            response = client.get(f"/journals/{s.journal_id}")
            if response.status_code != 200:
                findings.append(f"{s}: answered {s.journal_id}, which the ledger answers {response.status_code}")
    return findings


def journals_counted_once(entries: list[dict[str, Any]], journals: list[LedgerJournal]) -> list[str]:
    """Both ways: each journal counted by exactly one entry of its key and amount, each counted
    entry backed by a journal."""
    findings = []
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        if e["service"] == "payments" and e["idempotency_key"]:
            by_key[e["idempotency_key"]].append(e)

    def counted(e: dict[str, Any]) -> bool:
        return e["phase"] in CLOSING and "limits" in (e["counts_toward"] or [])

    keys_with_journals = set()
    for j in journals:
        if j.key is None:
            findings.append(f"journal {j} has no idempotency key: it moved without one the gateway can reconcile")
            continue
        keys_with_journals.add(j.key)
        logged = by_key.get(j.key, [])
        counting = [e for e in logged if counted(e)]
        trail = "; ".join(_describe(e) for e in logged) or "no entry with that key"
        if len(counting) != 1:
            findings.append(f"journal {j} counted {len(counting)} times in the log, expected once: {trail}")
        elif to_minor(counting[0]["amount"]["amount"], counting[0]["amount"]["currency"]) != j.amount_minor:
            findings.append(f"journal {j} counted with another amount: {trail}")
    for key, logged in by_key.items():
        if key not in keys_with_journals:
            for e in logged:
                if counted(e):
                    findings.append(f"entry {_describe(e)} (key {key}) counts a movement the ledger does not have")
    return findings


def volume_matches(stack: Stack, journals: list[LedgerJournal], participant_id: str = WALLET_CO) -> list[str]:
    with regulator(stack) as client:
        activity = client.get(f"/sandbox/participants/{participant_id}/activity").json()
    volume = to_minor(activity["volume"]["amount"], activity["volume"]["currency"])
    applied = sum(j.amount_minor for j in journals if j.scope in (participant_id, None))
    if volume == applied:
        return []
    return [f"{participant_id}'s activity volume is {activity['volume']['amount']}, the ledger's applied "
            f"journals sum to {applied / 100:.2f}"]


def log_verifies(stack: Stack) -> list[str]:
    with regulator(stack) as client:
        verified = client.get("/sandbox/audit/verify").json()
    return [] if verified["ok"] else [f"audit log does not verify: {verified}"]


def intents_closed(entries: list[dict[str, Any]]) -> list[str]:
    return [f"intent {_describe(e)} key {e['idempotency_key']} has no outcome or reconciled entry"
            for e in open_intents(entries)]


def retries_replay(retries: list[Sent], entries: list[dict[str, Any]]) -> list[str]:
    """Keyed retries of requests that succeeded: the first answer again, marked replayed, and
    logged as counting toward nothing."""
    by_index = {e["index"]: e for e in entries}
    findings = []
    for retry in retries:
        first = retry.retry_of
        assert first is not None
        same_answer = first.journal_id is None or retry.journal_id == first.journal_id  # None: never heard
        if not (retry.succeeded and retry.replayed and same_answer):
            findings.append(f"retry of {first} answered {retry.status} replayed={retry.replayed} "
                            f"journal {retry.journal_id}, expected the first answer ({first.journal_id}) replayed")
            continue
        entry = by_index.get(retry.receipt_index)  # type: ignore[arg-type]
        if entry is None or entry["counts_toward"] != []:
            findings.append(f"replayed retry of {first}: its entry {entry and _describe(entry)} should count "
                            "toward nothing")
    return findings


# -- the whole audit -----------------------------------------------------------------------------

def settle_unknown_outcomes(wallet: Wallet, sent: list[Sent], timeout_s: float = RECONCILE_TIMEOUT_S) -> list[Sent]:
    """Retry every keyed request whose sender never learnt its outcome, as a careful client
    would; the retries' last answers."""
    return [wallet.retry_until_settled(s, timeout_s) for s in sent if s.key and s.outcome_unknown]


def replay_some(wallet: Wallet, sent: list[Sent], most: int = 8) -> list[Sent]:
    """Retry up to `most` keyed requests that succeeded (their keys are used)."""
    return [wallet.retry(s) for s in [s for s in sent if s.key and s.succeeded][:most]]


def regulators_audit(stack: Stack, sent: list[Sent], replays: list[Sent] | None = None, *,
                     reconcile_timeout_s: float = RECONCILE_TIMEOUT_S) -> dict[str, list[str]]:
    """Every check over the run; only the checks that found something, by name."""
    entries = wait_until_reconciled(stack, reconcile_timeout_s)
    journals = ledger_journals(stack)
    checks: dict[str, Callable[[], list[str]]] = {
        "(a) ledger invariants": lambda: invariants_hold(stack),
        "(b) every 2xx in the ledger": lambda: answered_journals_in_ledger(stack, sent),
        "(c) every journal counted once": lambda: journals_counted_once(entries, journals),
        "(c) activity volume = applied journals": lambda: volume_matches(stack, journals),
        "(d) keyed retries replay": lambda: retries_replay(replays or [], entries),
        "(e) audit log verifies": lambda: log_verifies(stack),
        "(f) no intent left open": lambda: intents_closed(entries),
    }
    findings = {name: check() for name, check in checks.items()}
    return {name: found for name, found in findings.items() if found}


def audit_after_recovery(stack: Stack, wallet: Wallet, sent: list[Sent]) -> dict[str, list[str]]:
    """What the regulator does once the faults are over: let the gateway reconcile, have the
    senders retry what they never heard back about, replay a few used keys, then audit it all."""
    wait_until_reconciled(stack, RECONCILE_TIMEOUT_S)
    retries = settle_unknown_outcomes(wallet, sent)
    replays = replay_some(wallet, sent)
    return regulators_audit(stack, sent + retries + replays, replays)


def report(findings: dict[str, list[str]], stack: Stack) -> str:
    lines = ["The regulator's audit found:"]
    for name, found in findings.items():
        lines.append(f"  {name}:")
        lines += [f"    - {f}" for f in found[:15]]
        if len(found) > 15:
            lines.append(f"    ... and {len(found) - 15} more")
    lines += ["gateway log (tail):", stack.log_tail("gateway", 15)]
    return "\n".join(lines)
