"""Wealthfront in the seed: a 30-year-old with medium risk tolerance gets about 60% equity funds
and 40% bond funds; robo-advice costs 0.25% a year against 1–2% for a traditional adviser."""

from __future__ import annotations

from decimal import Decimal

from sandbox.demo.narration import DEMO_ROBO, WALLET_CO, Scene, Step, money
from sandbox.demo.payments import ensure_li_wei_holds
from services.common.demo import DEMO_MANDATES, demo_account

LI_WEI = demo_account("Li Wei").id
# Seeded: Demo Wallet Co lets Demo Robo debit Li Wei's wallet to fund her portfolio.
FUNDING_MANDATE = next(m.id for m in DEMO_MANDATES if m.debtor_account_id == LI_WEI)
INVESTED = Decimal("1000.00")  # a few hundred yuan is the seed's minimum; 1,000 buys every fund


def portfolio_60_40(scene: Scene) -> None:
    scene.say("Li Wei is 30, saving for retirement, and would hold on through a 20% fall: medium risk "
              "tolerance. The questionnaire scores her willingness and capacity to take risk.")
    profile = scene.call(Step(
        "the risk questionnaire", "POST", "/advisor/risk-profiles", DEMO_ROBO, expect=201,
        json={"age": 30, "horizon_years": 30, "annual_income": {"amount": "150000.00", "currency": "CNY"},
              "liquid_net_worth": {"amount": "100000.00", "currency": "CNY"}, "goal": "retirement",
              "loss_reaction": "hold", "priority": "balanced", "experience": "some"},
        show=("score", "recommended.level", "recommended.equity_share", "recommended.bond_share",
              "recommended.expected_return")))
    equity, bonds = profile["recommended.equity_share"], profile["recommended.bond_share"]
    allocations = profile["recommended.allocations"] or []
    for a in allocations:
        scene.say(f"      {a['fund']:<11} {a['kind']:<6} {a['weight']:.1%}  {a['name']}")
    scene.check(isinstance(equity, float) and 0.55 <= equity <= 0.65 and abs(equity + bonds - 1) < 0.001,
                f"about 60/40: {equity:.1%} equity funds, {bonds:.1%} bond funds", f"the split is {equity}/{bonds}")

    mandate = scene.call(Step("what is left this month of the mandate Li Wei's wallet firm gave Demo Robo", "GET",
                              f"/payments/mandates/{FUNDING_MANDATE}", WALLET_CO,
                              show=("status", "max_per_period.amount", "used_this_period.amount")))
    left = money(mandate.body, "max_per_period.amount") - money(mandate.body, "used_this_period.amount")
    scene.check(mandate["status"] == "active" and left >= INVESTED,
                f"the mandate can fund {INVESTED} CNY ({left} left this {mandate['period']})",
                f"it is {mandate['status']} with {left} left: run `make reset` (or `fintech-sandbox reset`) "
                "to start the month's allowance afresh")
    ensure_li_wei_holds(scene, INVESTED)
    account = scene.call(Step("Demo Robo opens her investment account, funded from her wallet under that mandate",
                              "POST", "/advisor/accounts", DEMO_ROBO, expect=201,
                              json={"owner_name": "Li Wei", "wallet_account_id": LI_WEI,
                                    "funding_mandate_id": FUNDING_MANDATE, "risk_profile_id": profile["id"]},
                              show=("id", "risk_level")))
    funded = scene.call(Step(f"she invests {INVESTED} CNY: a real debit of her wallet through the gateway, then "
                             "one buy per fund at its target weight", "POST",
                             f"/advisor/accounts/{account['id']}/deposits", DEMO_ROBO, expect=(200, 201),
                             json={"amount": {"amount": str(INVESTED), "currency": "CNY"}}, show=("status",)))
    kinds = {a["fund"]: a["kind"] for a in allocations}
    trades = funded["trades"] or []
    for t in trades:
        scene.say(f"      {t['side']} {t['fund']:<11} {t['amount']['amount']:>8} CNY")
    bought_equity = sum((Decimal(t["amount"]["amount"]) for t in trades if kinds.get(t["fund"]) == "equity"), Decimal(0))
    bought = sum((Decimal(t["amount"]["amount"]) for t in trades), Decimal(0))
    scene.check(funded["status"] == "completed" and bought == INVESTED,
                f"the whole {INVESTED} CNY is invested", f"status {funded['status']}, {bought} bought")
    scene.check(abs(bought_equity / bought - Decimal(str(equity))) < Decimal("0.02"),
                f"{bought_equity} CNY went into equity funds: the portfolio is {bought_equity / bought:.0%} equity")

    scene.say("The seed's fees: 0.25% a year for robo-advice, 1–2% for a traditional adviser. The advisor "
              "projects her savings both ways (3,000 CNY and 500 a month for 30 years, 10,000 simulated paths).")
    projection = scene.call(Step(
        "the projection, robo-advisor (0.25%) against traditional adviser (1.5%)", "POST", "/advisor/projections",
        DEMO_ROBO, json={"risk_level": profile["recommended.level"],
                         "initial": {"amount": "3000.00", "currency": "CNY"},
                         "monthly_contribution": {"amount": "500.00", "currency": "CNY"},
                         "years": 30, "paths": 10000, "seed": 42},
        show=("median_fee_drag.amount",)))
    scenarios = {s["annual_fee"]: s for s in projection["scenarios"] or []}
    scene.check(set(scenarios) == {0.0025, 0.015}, "one projection at 0.25% a year and one at 1.5%",
                f"the fees projected are {sorted(scenarios)}")
    robo, adviser = (money(scenarios[fee]["years"][-1], "p50.amount") for fee in (0.0025, 0.015))
    drag = money(projection.body, "median_fee_drag.amount")
    scene.check(robo - adviser == drag and drag > 0,
                f"after 30 years the median saver has {robo} CNY with the robo and {adviser} with the adviser: "
                f"the fee gap costs her {drag} CNY ({drag / robo:.0%} of the final value)",
                f"medians {robo} and {adviser}, drag {drag}")
