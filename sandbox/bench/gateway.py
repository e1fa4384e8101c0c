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
3. Webhook delivery latency on loopback (p50, p99): from a transfer's commit (its 201) and from
   the gateway storing its event, to the signed delivery reaching a receiver on 127.0.0.1.
Targets: through the gateway ≥ 60% of direct throughput; screening ≥ 20,000 decisions/s.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def delivery_latency(deliveries: int, per_second: float, relay_interval_s: float) -> dict[str, Any]:
    """Commit to receiver on loopback: payments and the gateway as uvicorn processes, a receiver
    on 127.0.0.1 registered as a participant's webhook endpoint, transfers sent one at a time at
    `per_second`. Each transfer's 201 comes after payments committed it (and its event); the
    receiver notes when the signed delivery arrives. Both times are wall clock on one machine."""
    arrivals: dict[str, float] = {}
    stored: dict[str, float] = {}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            at = time.time()
            event = json.loads(body)
            arrivals.setdefault(event["subject_id"], at)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # A relay pass hands the dispatcher a batch of deliveries sent at once: with
        # socketserver's backlog of 5 the kernel drops the rest of the SYNs, and each retries
        # after a second, which measured the backlog rather than the gateway.
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    committed: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        tmpdir = Path(tmp)
        pay_port, gw_port = free_port(), free_port()
        payments, gateway = f"http://127.0.0.1:{pay_port}", f"http://127.0.0.1:{gw_port}"
        nowhere = "http://127.0.0.1:9"  # the other services are not part of this measurement
        procs = [
            start("services.payments.main:create_app", pay_port,
                  {"PAYMENTS_DATA_DIR": str(tmpdir / "data"), "PAYMENTS_LOG_LEVEL": "WARNING"}, tmpdir / "payments.log"),
            start("sandbox.gateway.main:create_app", gw_port,
                  {"GATEWAY_DATA_DIR": str(tmpdir / "data"), "GATEWAY_UPSTREAM_PAYMENTS": payments,
                   "GATEWAY_UPSTREAM_CREDIT": nowhere, "GATEWAY_UPSTREAM_ADVISOR": nowhere,
                   "GATEWAY_UPSTREAM_OPENBANKING": nowhere, "GATEWAY_RELAY_INTERVAL_S": str(relay_interval_s),
                   "GATEWAY_LOG_LEVEL": "WARNING"}, tmpdir / "gateway.log"),
        ]
        try:
            wait_ready(payments, procs[0])
            wait_ready(gateway, procs[1])
            key = _admit_bench_participant(gateway)
            with httpx.Client(base_url=gateway, headers={"X-API-Key": key}, timeout=30) as http:
                accounts = []
                for role in ("payer", "payee"):
                    opened = http.post("/payments/accounts", json={"kind": "personal", "owner_name": f"Latency {role}",
                                                                   "currency": "CNY"})
                    opened.raise_for_status()
                    accounts.append(opened.json()["id"])
                httpx.post(f"{payments}/deposits", json={"account_id": accounts[0], "card_number": "4242424242424242",
                                                         "amount": {"amount": "100000.00", "currency": "CNY"}}).raise_for_status()
                endpoint = http.post("/webhooks/endpoints", json={
                    "url": f"http://127.0.0.1:{server.server_address[1]}/hooks",
                    "event_types": ["payments.transfer.completed"]})
                endpoint.raise_for_status()
                for _ in range(deliveries):
                    started = time.monotonic()
                    sent = http.post("/payments/transfers", json={
                        "from_account_id": accounts[0], "to_account_id": accounts[1],
                        "amount": {"amount": "1.00", "currency": "CNY"}})
                    sent.raise_for_status()
                    committed[sent.json()["id"]] = time.time()
                    time.sleep(max(0.0, 1 / per_second - (time.monotonic() - started)))
                deadline = time.monotonic() + 30
                while len(arrivals) < len(committed) and time.monotonic() < deadline:
                    time.sleep(0.05)
                after = 0
                while True:
                    page = http.get("/events", params={"after": after, "limit": 500,
                                                       "type": "payments.transfer.completed"}).json()
                    for event in page["data"]:
                        stored[event["subject_id"]] = datetime.fromisoformat(
                            event["stored_at"].replace("Z", "+00:00")).timestamp()
                    after = page["next_after"]
                    if not page["has_more"]:
                        break
        finally:
            stop(procs)
            server.shutdown()
    from_commit = [(arrivals[t] - at) * 1000 for t, at in committed.items() if t in arrivals]
    from_store = [(arrivals[t] - stored[t]) * 1000 for t in committed if t in arrivals and t in stored]
    return {"sent": len(committed), "delivered": len(from_commit),
            "commit_p50": _percentile(from_commit, 0.5), "commit_p99": _percentile(from_commit, 0.99),
            "store_p50": _percentile(from_store, 0.5), "store_p99": _percentile(from_store, 0.99)}


def _print_latency(args: argparse.Namespace) -> None:
    print(f"\nwebhook delivery on loopback: {args.deliveries} transfers at {args.rate:g}/s, relay every "
          f"{args.relay_interval:g} s ...", flush=True)
    r = delivery_latency(args.deliveries, args.rate, args.relay_interval)
    print(f"  delivered {r['delivered']} of {r['sent']}")
    print(f"  {'from':<42}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"  {'the transfer committed (its 201 answered)':<42}{r['commit_p50']:>10.1f}{r['commit_p99']:>10.1f}")
    print(f"  {'the gateway stored the event':<42}{r['store_p50']:>10.1f}{r['store_p99']:>10.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fintech-sandbox bench gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes (keep-alive each)")
    parser.add_argument("--pairs", type=int, default=64, help="payer/payee account pairs")
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--deliveries", type=int, default=200, help="transfers whose webhook delivery is timed")
    parser.add_argument("--rate", type=float, default=20.0, help="those transfers per second")
    parser.add_argument("--relay-interval", type=float, default=0.5, help="GATEWAY_RELAY_INTERVAL_S for that phase")
    parser.add_argument("--only-webhooks", action="store_true", help="only the webhook delivery latency")
    args = parser.parse_args(argv)
    if args.only_webhooks:
        _print_latency(args)
        return 0

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
    _print_latency(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
