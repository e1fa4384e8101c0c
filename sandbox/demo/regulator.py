"""RegTech and the regulatory sandbox in the seed: transactions screened in real time for
laundering (structuring) and sanctioned names, and firms admitted to test within limits while the
regulator watches their data, ending with an exit report."""

from __future__ import annotations

from decimal import Decimal

from sandbox.demo.narration import (
    REGULATOR,
    WALLET_CO,
    Participant,
    ScenarioFailed,
    Scene,
    Step,
    fresh_key,
    money,
)
from sandbox.demo.payments import LI_WEI, PAYING_CARD
from services.common.demo import DEMO_PARTICIPANTS

WALLET_CO_ID = next(p.id for p in DEMO_PARTICIPANTS if p.api_key == WALLET_CO.api_key)
# Just below the 10,000.00 CNY large-value threshold, in the structuring band (8,000 up to it).
STRUCTURED_TOP_UPS = (Decimal("9500.00"), Decimal("9400.00"), Decimal("9600.00"))
SANCTIONED_NAME = "Borys Wexlanow"  # a synthetic watch-list alias (sandbox/gateway/watchlist.yaml)


def _open_account(scene: Scene, who: Participant, owner: str, why: str) -> str:
    return scene.call(Step(why, "POST", "/payments/accounts", who, expect=201,
                           json={"kind": "personal", "owner_name": owner, "currency": "CNY"},
                           show=("id", "owner_name")))["id"]


def aml(scene: Scene) -> None:
    scene.say("The gateway screens every money movement before the ledger sees it. Structuring: "
              "amounts kept just below the 10,000 CNY reporting threshold, three within a day.")
    activity = scene.call(Step("the regulator checks Demo Wallet Co has room today for 28,500 CNY of top-ups",
                               "GET", f"/sandbox/participants/{WALLET_CO_ID}/activity", REGULATOR,
                               show=("volume.amount", "limits.daily_volume.amount", "customers")))
    room = money(activity.body, "limits.daily_volume.amount") - money(activity.body, "volume.amount")
    if room < sum(STRUCTURED_TOP_UPS):
        raise ScenarioFailed(f"Demo Wallet Co has {room} CNY of today's volume left, less than this scenario moves: "
                             "run `make reset` (or `fintech-sandbox reset`) and play it again")
    # A new wallet each run: the rule counts one account's deposits over 24 h, so a wallet
    # that earlier runs topped up would be flagged from its first deposit.
    wallet = _open_account(scene, WALLET_CO, "Li Wei", "a new wallet for Li Wei, with no deposits in the last 24 h")
    decisions = []
    for n, amount in enumerate(STRUCTURED_TOP_UPS, 1):
        top_up = scene.call(Step(f"top-up {n} of 3: {amount} CNY by card", "POST", "/payments/deposits", WALLET_CO,
                                 expect=201, headers={"Idempotency-Key": fresh_key()},
                                 json={"account_id": wallet, "amount": {"amount": str(amount), "currency": "CNY"},
                                       "card_number": PAYING_CARD}, show=("id", "amount.amount")))
        decisions.append(top_up.decision)
    scene.check(decisions[0].startswith("approve") and decisions[1].startswith("approve"),
                "the first two top-ups pass screening", f"they were {decisions[:2]}")
    scene.check(decisions[2].startswith("review") and "structuring" in decisions[2],
                "the third is flagged for review as structuring, and still forwarded (review, not block)",
                f"it was {decisions[2]!r}")
    alerts = scene.call(Step("the regulator's open alerts", "GET", "/sandbox/alerts?status=open&limit=100", REGULATOR))
    flagged = [a for a in alerts["data"] or [] if a["request_id"] == top_up.request_id]
    scene.check(len(flagged) == 1 and any(r["rule"] == "structuring" for r in flagged[0]["rules"]),
                "an alert is open for the third top-up: " + "; ".join(r["reason"] for r in flagged[0]["rules"])
                if flagged else "an alert is open for the third top-up", "no open alert names its request")

    scene.say(f"Sanctions: {SANCTIONED_NAME} is an alias on the (synthetic) watch list. A payment to "
              "an account in that name is refused at the gateway.")
    payee = _open_account(scene, WALLET_CO, SANCTIONED_NAME, f"an account in the name {SANCTIONED_NAME}")
    blocked = scene.call(Step(f"Li Wei tries to pay {SANCTIONED_NAME} 50.00 CNY", "POST", "/payments/transfers",
                              WALLET_CO, expect=403, headers={"Idempotency-Key": fresh_key()},
                              json={"from_account_id": LI_WEI, "to_account_id": payee,
                                    "amount": {"amount": "50.00", "currency": "CNY"}},
                              show=("type", "detail", "alert_id")))
    decision = blocked.decision
    scene.check(decision.startswith("block") and "sanctions" in decision,
                "the gateway blocked it on the sanctions rule", f"its decision was {decision!r}")
    scene.check(str(blocked["type"]).endswith("transaction-blocked") and "SBX-SYN-0001" in str(blocked["detail"]),
                "the refusal names the watch-list entry it matched (SBX-SYN-0001)", f"it says {blocked['detail']!r}")
    held = scene.call(Step("the payee's balance", "GET", f"/payments/accounts/{payee}/balance", WALLET_CO,
                           show=("available.amount",)))
    scene.check(money(held.body, "available.amount") == 0, "nothing reached the ledger: the payee holds 0.00 CNY",
                f"it holds {held['available.amount']}")
    alert = scene.call(Step("the regulator reads the block's alert", "GET", f"/sandbox/alerts/{blocked['alert_id']}",
                            REGULATOR, show=("decision", "score", "status")))
    scene.check(alert["decision"] == "block" and alert["status"] == "open", "the block opened an alert of its own",
                f"the alert is {alert['decision']}, {alert['status']}")


def exit_report(scene: Scene) -> None:
    scene.say("The Beijing sandbox admits firms to test a product within limits while the regulator watches "
              "their data. The regulator admits a blockchain remittance start-up: payments only, at most "
              "5,000 CNY at a time.")
    admitted = scene.call(Step("the regulator admits the firm (its key is shown this once)", "POST",
                               "/sandbox/participants", REGULATOR, expect=201,
                               json={"name": "Blockchain Remit Ltd",
                                     "role": "a blockchain cross-border remittance product (narrated scenario)",
                                     "services": ["payments"],
                                     "limits": {"max_single_transaction": "5000.00", "daily_volume": "50000.00",
                                                "max_customers": 10, "rate_limit_per_minute": 120}},
                               show=("id", "name", "status", "limits.max_single_transaction.amount", "window_to")))
    firm = Participant("Blockchain Remit Ltd", admitted["api_key"])
    firm_id = admitted["id"]
    sender = _open_account(scene, firm, "Zhou Xin", "the firm opens a wallet for its first customer")
    receiver = _open_account(scene, firm, "Wu Lan", "and one for the customer's family")
    scene.call(Step("the customer tops up 3,000.00 CNY by card", "POST", "/payments/deposits", firm, expect=201,
                    headers={"Idempotency-Key": fresh_key()},
                    json={"account_id": sender, "amount": {"amount": "3000.00", "currency": "CNY"},
                          "card_number": PAYING_CARD}, show=("id", "amount.amount")))
    scene.call(Step("a remittance of 1,200.00 CNY, within the firm's limits", "POST", "/payments/transfers", firm,
                    expect=201, headers={"Idempotency-Key": fresh_key()},
                    json={"from_account_id": sender, "to_account_id": receiver,
                          "amount": {"amount": "1200.00", "currency": "CNY"}}, show=("id", "amount.amount")))
    breach = scene.call(Step("a remittance of 6,000.00 CNY: above the 5,000 the firm may move at once", "POST",
                             "/payments/transfers", firm, expect=403, headers={"Idempotency-Key": fresh_key()},
                             json={"from_account_id": sender, "to_account_id": receiver,
                                   "amount": {"amount": "6000.00", "currency": "CNY"}}, show=("limit", "detail")))
    scene.check(breach["limit"] == "max_single_transaction", "the gateway refused it: the single-transaction limit",
                f"it answered {breach['limit']!r}")

    report = scene.call(Step("the regulator reads the firm's exit report", "GET",
                             f"/sandbox/participants/{firm_id}/exit-report", REGULATOR,
                             show=("requests", "succeeded", "refused", "screened", "decisions", "volume.amount",
                                   "customers", "limit_breaches", "breaches_by_limit")))
    expected = {"requests": 5, "succeeded": 4, "refused": 1, "limit_breaches": 1}
    got = {k: report[k] for k in expected}
    scene.check(got == expected, "five requests: four succeeded, one refused for a limit breach", f"the report says {got}")
    scene.check(report["breaches_by_limit"] == {"max_single_transaction": 1}
                and money(report.body, "volume.amount") == Decimal("4200.00"),
                "the breach was the single-transaction limit; 4,200.00 CNY moved (the top-up and the remittance)",
                f"breaches {report['breaches_by_limit']}, volume {report['volume.amount']}")
    scene.call(Step("the test ends: the regulator suspends the firm", "POST", f"/sandbox/participants/{firm_id}/suspend",
                    REGULATOR, json={"reason": "its sandbox test ended (narrated scenario)"}, show=("status",)))
    after = scene.call(Step("the firm tries once more", "POST", "/payments/transfers", firm, expect=403,
                            headers={"Idempotency-Key": fresh_key()},
                            json={"from_account_id": sender, "to_account_id": receiver,
                                  "amount": {"amount": "10.00", "currency": "CNY"}}, show=("type",)))
    scene.check("suspended" in str(after["type"]) or "suspended" in str(after["detail"]).lower(),
                "a suspended firm is turned away", f"it answered {after['type']}")
    verified = scene.call(Step("the regulator verifies the whole hash-chained audit log", "GET",
                               "/sandbox/audit/verify", REGULATOR, show=("ok", "size", "first_broken")))
    scene.check(verified["ok"] is True, "the audit log verifies end to end", f"broken at {verified['first_broken']}")
