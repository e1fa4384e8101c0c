"""A retry through a timeout: the regulator injects a lost answer into the gateway's forwarding
(a fault flag, docs/faults.md), and a learner sees why a payment carries an `Idempotency-Key`.
The ledger applies the transfer but its answer never comes back (504: "may or may not have been
applied"); the participant retries with the same key and gets the original outcome, and the
money moves once. The regulator's log shows the intent, the unanswered attempt and its
reconciliation."""

from __future__ import annotations

from decimal import Decimal

from sandbox.demo.narration import REGULATOR, WALLET_CO, Scene, Step, fresh_key
from sandbox.demo.payments import LI_WEI, ZHANG_MIN, balance, ensure_li_wei_holds
from services.common.demo import DEMO_PARTICIPANTS

WALLET_CO_ID = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == WALLET_CO.api_key)
FAULT_ID = "lost-transfer-answer"
AMOUNT = Decimal("52.00")


def _entries(scene: Scene, request_id: str, why: str) -> list[dict]:
    """The log's entries for one request, oldest first."""
    return scene.call(Step(why, "GET", f"/sandbox/audit/entries?request_id={request_id}", REGULATOR))["data"] or []


def _phases(entries: list[dict]) -> list[tuple[str, int]]:
    return [(e["phase"], e["status"]) for e in entries]


def retry_through_timeout(scene: Scene) -> None:
    scene.say("The regulator breaks the payments service on purpose, for Demo Wallet Co's next transfer "
              "only: the ledger will apply it, but its answer will never reach the gateway, as when a "
              "connection drops at the worst moment.")
    fault = scene.call(Step("the regulator sets a one-shot timeout on payments POST /transfers", "PUT",
                            f"/sandbox/faults/{FAULT_ID}", REGULATOR, expect=(200, 201),
                            json={"service": "payments", "operation": "POST /transfers", "kind": "timeout",
                                  "participant_id": WALLET_CO_ID, "remaining": 1, "expires_in_s": 600,
                                  "note": "retry-through-timeout (narrated scenario)"},
                            show=("id", "kind", "operation", "remaining", "expires_at")))
    scene.check(fault["kind"] == "timeout" and fault["remaining"] == 1, "the fault flag is set, for one request",
                f"it is {fault['kind']} for {fault['remaining']}")
    li_before = ensure_li_wei_holds(scene, AMOUNT)
    zhang_before = balance(scene, ZHANG_MIN, "Zhang Min", "Zhang Min's wallet before")
    key = fresh_key()
    body = {"from_account_id": LI_WEI, "to_account_id": ZHANG_MIN,
            "amount": {"amount": str(AMOUNT), "currency": "CNY"}, "description": "rent share"}
    lost = scene.call(Step(f"Li Wei sends Zhang Min {AMOUNT} CNY, with an Idempotency-Key", "POST",
                           "/payments/transfers", WALLET_CO, expect=504, headers={"Idempotency-Key": key},
                           json=body, show=("type", "detail")))
    scene.check("may or may not have been applied" in str(lost["detail"]),
                "the gateway gave up on the answer: 504, the transfer may or may not have been applied",
                f"it said {lost['detail']!r}")
    phases = _phases(_entries(scene, lost.request_id, "the regulator reads the log's entries for that request"))
    scene.check(phases == [("intent", 0), ("unanswered", 504)],
                "the log holds the intent (written before payments saw it) and the unanswered attempt",
                f"its entries are {phases}")
    scene.call(Step("the fault flag is spent: it applied to one request and is gone", "GET",
                    f"/sandbox/faults/{FAULT_ID}", REGULATOR, expect=404, show=("title",)))

    scene.say("Did the money move? The participant cannot tell from a 504, so it retries with the same "
              "key. The gateway first asks payments what became of that key, then forwards the retry.")
    retry = scene.call(Step("Li Wei's app retries: the same body, the same Idempotency-Key", "POST",
                            "/payments/transfers", WALLET_CO, expect=201, headers={"Idempotency-Key": key},
                            json=body, show=("id", "amount.amount")))
    scene.check(retry.headers.get("idempotent-replayed") == "true",
                "payments answered with the original outcome (Idempotent-Replayed: true): it had applied it",
                f"Idempotent-Replayed is {retry.headers.get('idempotent-replayed')!r}")
    li_after = balance(scene, LI_WEI, "Li Wei", "Li Wei's wallet after")
    zhang_after = balance(scene, ZHANG_MIN, "Zhang Min", "Zhang Min's wallet after")
    scene.check(li_before - li_after == AMOUNT and zhang_after - zhang_before == AMOUNT,
                f"the money moved once: Li Wei {li_before} → {li_after}, Zhang Min {zhang_before} → {zhang_after}",
                f"Li Wei's moved by {li_after - li_before}, Zhang Min's by {zhang_after - zhang_before}")
    phases = _phases(_entries(scene, lost.request_id, "the regulator reads the first attempt's entries again"))
    scene.check(phases == [("intent", 0), ("unanswered", 504), ("reconciled", 201)],
                "the log closed it: intent, unanswered, then reconciled as applied (201) from payments' record "
                "of the key", f"its entries are {phases}")
    replay = [(e["phase"], e["status"], e["counts_toward"])
              for e in _entries(scene, retry.request_id, "and the retry's entries")]
    scene.check(replay == [("outcome", 201, [])], "the retry is one entry, a replay that counts toward nothing "
                "(the reconciled attempt already counts toward the limits)", f"its entries are {replay}")
    verified = scene.call(Step("the regulator verifies the hash-chained audit log", "GET", "/sandbox/audit/verify",
                               REGULATOR, show=("ok", "size")))
    scene.check(verified["ok"] is True, "the audit log verifies end to end", f"broken at {verified['first_broken']}")
