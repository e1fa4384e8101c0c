"""`fintech-sandbox bench gateway`: what the sandbox's door costs.

1. The same payments operation (POST /transfers, 1.00 CNY between funded accounts) against
   payments directly and through the gateway (key check, limits, rate limit, AML screening,
   the write-ahead intent and the outcome appended to the audit log, proxying), one run, same
   servers: throughput, p50/p99, ratio. The gateway forwards every movement with an
   Idempotency-Key (it assigns one when the participant sent none, so it can reconcile), which
   costs payments a claim of its own: a third row sends payments keyed requests directly, so the
   ratio against it is the door's own cost.
   Both servers are real uvicorn processes on loopback, one worker each; the load comes from
   several processes holding keep-alive connections (http.client), so the client is cheap.
2. The screening engine alone, in-process: decisions per second over a varied workload.
Targets: through the gateway ≥ 60% of direct throughput; screening ≥ 20,000 decisions/s.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import httpx

from sandbox.bench.load import UNIQUE, free_port, funded_pairs, load, start, stop, transfer_bodies, wait_ready
from services.common.demo import DEMO_REGULATOR_KEY

THROUGHPUT_TARGET = 0.60
SCREENING_TARGET = 20_000


def _admit_bench_participant(gateway: str) -> str:
    r = httpx.post(f"{gateway}/sandbox/participants", headers={"X-API-Key": DEMO_REGULATOR_KEY}, json={
        "name": "Benchmark Firm", "services": ["payments"], "limits": {
            "max_single_transaction": "1000000.00", "daily_volume": "100000000000.00",
            "max_customers": 1_000_000, "rate_limit_per_minute": 100_000}}, timeout=30)
    r.raise_for_status()
    return r.json()["api_key"]


def screening_decisions_per_second(n: int = 100_000) -> tuple[float, dict[str, int]]:
    """The rule engine alone over a varied workload: 5,000 accounts, mixed amounts, currencies
    and names (a few of them near the synthetic watch list), history recorded as it goes."""
    from sandbox.gateway.screening import History, RuleSet

    rules = RuleSet.load()
    op = rules.screened_operation("payments", "POST", "/transfers")
    assert op is not None
    rng = random.Random(7)
    names = [f"Customer {i}" for i in range(2000)] + ["Borys Wexlanow", "Mirela Quandt Sorvino", "Boris Vexlanovitch"]
    amounts = ["1.00", "66.66", "250.00", "999.99", "5000.00", "9500.00", "12000.00", "30.15"]
    txs = []
    for _ in range(n):
        body = {"from_account_id": f"acc_{rng.randrange(5000)}", "to_account_id": f"acc_{rng.randrange(5000)}",
                "amount": {"amount": rng.choice(amounts), "currency": rng.choice(("CNY", "CNY", "CNY", "USD"))}}
        tx = rules.transaction(op, body, "ptp_bench")
        tx.payer_name, tx.payee_name = rng.choice(names), rng.choice(names)
        txs.append(tx)
    history = History(rules.horizon_s)
    outcomes = {"approve": 0, "review": 0, "block": 0}
    now = 1.8e9
    started = time.perf_counter()
    for i, tx in enumerate(txs):
        t = now + i * 0.01
        decision = rules.screen(tx, history, t)
        outcomes[decision.outcome] += 1
        if decision.outcome != "block":
            history.record(tx, t)
    elapsed = time.perf_counter() - started
    return n / elapsed, outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fintech-sandbox bench gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes (keep-alive each)")
    parser.add_argument("--pairs", type=int, default=64, help="payer/payee account pairs")
    parser.add_argument("--decisions", type=int, default=100_000)
    args = parser.parse_args(argv)

    print(f"screening engine in-process, {args.decisions:,} decisions ...", flush=True)
    rate, outcomes = screening_decisions_per_second(args.decisions)
    print(f"  {rate:,.0f} decisions/s  (target {SCREENING_TARGET:,}; Tazama's published target is 3,000 payments/s)")
    print(f"  outcomes: {outcomes}")

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        tmpdir = Path(tmp)
        pay_port, gw_port = free_port(), free_port()
        payments, gateway = f"http://127.0.0.1:{pay_port}", f"http://127.0.0.1:{gw_port}"
        procs = [
            start("services.payments.main:create_app", pay_port,
                  {"PAYMENTS_DATA_DIR": str(tmpdir / "data"), "PAYMENTS_LOG_LEVEL": "WARNING"}, tmpdir / "payments.log"),
            start("sandbox.gateway.main:create_app", gw_port,
                  {"GATEWAY_DATA_DIR": str(tmpdir / "data"), "GATEWAY_UPSTREAM_PAYMENTS": payments,
                   "GATEWAY_LOG_LEVEL": "WARNING"}, tmpdir / "gateway.log"),
        ]
        try:
            wait_ready(payments, procs[0])
            wait_ready(gateway, procs[1])
            bodies = transfer_bodies(funded_pairs(payments, args.pairs))
            key = _admit_bench_participant(gateway)
            print(f"\nPOST /transfers, {args.clients} keep-alive clients, {args.seconds:g} s each "
                  f"(after {args.warmup:g} s warm-up), {args.pairs} account pairs", flush=True)
            direct = load(payments, "/transfers", {}, bodies, args.clients, args.seconds, args.warmup)
            keyed = load(payments, "/transfers", {"Idempotency-Key": UNIQUE}, bodies, args.clients,
                         args.seconds, args.warmup)
            via = load(gateway, "/payments/transfers", {"X-API-Key": key}, bodies, args.clients, args.seconds,
                       args.warmup)
        finally:
            stop(procs)

    print(f"  {'path':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}")
    for label, r in (("direct to payments", direct), ("direct, keyed", keyed), ("through the gateway", via)):
        print(f"  {label:<22}{r['rps']:>10,.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>9}")
    ratio = via["rps"] / direct["rps"] if direct["rps"] else 0.0
    print(f"  gateway / direct throughput: {ratio:.0%}  (target ≥ {THROUGHPUT_TARGET:.0%}); "
          f"added p50 {via['p50_ms'] - direct['p50_ms']:.2f} ms")
    keyed_ratio = via["rps"] / keyed["rps"] if keyed["rps"] else 0.0
    print(f"  gateway / direct keyed: {keyed_ratio:.0%}  (the door alone: every forwarded movement is keyed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
