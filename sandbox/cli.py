"""`fintech-sandbox` (also `python -m sandbox`): run, reset, openapi, compose, k8s, bench, fuzz, demo, listen, trigger, verify-log."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

from sandbox.topology import api_services

BENCHMARKS = ("payments", "gateway", "credit", "advisor", "replicas")


def _run(args: argparse.Namespace) -> int:
    from sandbox.launcher import run

    only = args.services.split(",") if args.services else None
    if args.fresh:
        from sandbox.cli_reset import wipe_databases

        wiped = wipe_databases(Path(args.data_dir))
        print(f"--fresh: deleted {len(wiped)} database files in {args.data_dir}" if wiped
              else f"--fresh: no databases in {args.data_dir} yet", flush=True)
    return run(Path(args.data_dir), args.port_offset, only, args.exit_when_ready)


def _reset(args: argparse.Namespace) -> int:
    from sandbox.cli_reset import reset

    return reset(Path(args.data_dir), args.port_offset)


def _openapi(_args: argparse.Namespace) -> int:
    from sandbox.contracts import export

    for path in export():
        print(f"wrote {path}")
    return 0


def _compose(_args: argparse.Namespace) -> int:
    from sandbox.compose import write

    for path in write():
        print(f"wrote {path}")
    return 0


def _k8s(args: argparse.Namespace) -> int:
    from sandbox.k8s import main as k8s_main

    return k8s_main(check=args.check)


def _bench(args: argparse.Namespace) -> int:
    names = BENCHMARKS if args.name == "all" else (args.name,)
    status = 0
    for name in names:
        try:
            module = importlib.import_module(f"sandbox.bench.{name}")
        except ModuleNotFoundError:
            print(f"(no benchmark for {name} yet)")
            continue
        print(f"\n=== benchmark: {name} ===", flush=True)
        status |= module.main(args.rest)
    return status


def _fuzz(args: argparse.Namespace) -> int:
    """Schemathesis against the running stack: every service's own port, every check; with
    --via-gateway, also openapi/sandbox.json against the gateway as a participant admitted for the run."""
    from services.common.demo import DEMO_REGULATOR_KEY

    st = Path(sys.executable).with_name("schemathesis")
    status = 0
    for spec in api_services():  # the console is a UI, with no OpenAPI document to fuzz
        port = spec.port + args.port_offset
        # Not the clocks: moving a service's clock years ahead (the gateway's, say) would end
        # every participant's testing window for the services fuzzed after it. The suite
        # tests the clocks (tests/gateway/test_clock.py, the idempotency and consent expiries).
        # Nor the resets: they would wipe what the learner (and the run) made in the stack
        # (tests/platform/test_reset.py, tests/common/test_reset.py test them). Nor the door's
        # keyless budget: a random one would hold for up to a day (tests/gateway/test_door_budget.py).
        # Nor the fault flags: a random fault would turn the later phases' answers into 5xx
        # (tests/gateway/test_faults.py tests them).
        cmd = [str(st), "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
               "--max-examples", str(args.max_examples), "--phases", "examples,coverage,fuzzing,stateful",
               "--exclude-path", "/_sandbox/clock/advance", "--exclude-path", "/_sandbox/reset",
               "--exclude-path", "/sandbox/clock/advance",
               "--exclude-path", "/sandbox/reset", "--exclude-path", "/sandbox/door/unauthenticated",
               "--exclude-path", "/sandbox/faults", "--exclude-path", "/sandbox/faults/{fault_id}"]
        if spec.kind == "gateway":
            cmd += ["--header", f"X-API-Key: {DEMO_REGULATOR_KEY}"]
        print(f"\n=== schemathesis: {spec.name} ===", flush=True)
        status |= subprocess.call(cmd)
    if args.via_gateway:
        status |= _fuzz_via_gateway(args, st)
    return status


FUZZ_LIMITS = {"max_single_transaction": "1000000000.00", "daily_volume": "1000000000000.00",
               "max_customers": 1_000_000, "rate_limit_per_minute": 100_000}


# For the length of the run, the door lets this many keyless requests a minute meet their 401:
# schemathesis sends thousands on purpose (no key, a wrong key), and a participant's contract
# says 401 for them; the configured budget (30 a minute) would answer most with 429.
FUZZ_KEYLESS_BUDGET = {"per_minute": 1_000_000, "burst": 1_000_000, "for_seconds": 3600}


def _fuzz_via_gateway(args: argparse.Namespace, st: Path) -> int:
    """openapi/sandbox.json against the running gateway, as a fuzz participant the regulator
    admits for this run (every service, generous limits) with a Sandbox Bank TPP client of its
    own: its key and a client-credentials token go in as schemathesis' OpenAPI-aware auth, so
    cases that leave them out on purpose are sent without them. The regulator raises the door's
    keyless budget for the run and restores it after, and suspends the fuzz participant."""
    import time

    import httpx

    from sandbox.topology import GATEWAY
    from services.common.demo import DEMO_REGULATOR_KEY

    base = f"http://127.0.0.1:{GATEWAY.port + args.port_offset}"
    print("\n=== schemathesis: openapi/sandbox.json through the gateway ===", flush=True)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            admitted = http.post("/sandbox/participants", headers={"X-API-Key": DEMO_REGULATOR_KEY}, json={
                "name": f"Contract Fuzzer {time.strftime('%Y-%m-%d %H:%M:%S')}",
                "role": "schemathesis against openapi/sandbox.json (make fuzz)",
                "services": ["payments", "credit", "advisor", "open-banking"], "limits": FUZZ_LIMITS})
            if admitted.status_code != 201:
                print(f"admitting the fuzz participant: {admitted.status_code} {admitted.text}", file=sys.stderr)
                return 1
            key = admitted.json()["api_key"]
            print(f"fuzz participant {admitted.json()['id']} admitted for the run", flush=True)
            registered = http.post("/open-banking/register", headers={"X-API-Key": key}, json={
                "client_name": "Contract Fuzzer", "redirect_uri": "https://fuzzer.example/callback"})
            if registered.status_code != 201:
                print(f"registering its TPP client: {registered.status_code} {registered.text}", file=sys.stderr)
                return 1
            client = registered.json()
            token = http.post("/open-banking/oauth2/token", headers={"X-API-Key": key}, data={
                "grant_type": "client_credentials", "client_id": client["client_id"],
                "client_secret": client["client_secret"], "scope": "accounts payments fundsconfirmations"})
            if token.status_code != 200:
                print(f"its TPP token: {token.status_code} {token.text}", file=sys.stderr)
                return 1
            bearer = token.json()["access_token"]
            raised = http.put("/sandbox/door/unauthenticated", headers={"X-API-Key": DEMO_REGULATOR_KEY},
                              json=FUZZ_KEYLESS_BUDGET)
            if raised.status_code != 200:
                print(f"raising the door's keyless budget: {raised.status_code} {raised.text}", file=sys.stderr)
                return 1
    except httpx.HTTPError as exc:
        print(f"the gateway at {base} is not answering ({exc}); start the stack with `make run`", file=sys.stderr)
        return 1
    try:
        return _run_contract_fuzz(args, st, base, key, bearer)
    finally:
        with httpx.Client(base_url=base, timeout=30, headers={"X-API-Key": DEMO_REGULATOR_KEY}) as http:
            http.delete("/sandbox/door/unauthenticated")
            http.post(f"/sandbox/participants/{admitted.json()['id']}/suspend",
                      json={"reason": "the contract fuzz run ended"})
        print("door's keyless budget restored; fuzz participant suspended", flush=True)


def _run_contract_fuzz(args: argparse.Namespace, st: Path, base: str, key: str, bearer: str) -> int:
    import json
    import tempfile

    from sandbox.contracts import OPENAPI_DIR

    # schemathesis.toml, plus this run's credentials (never written to the repository). A PSU
    # token cannot be had without a PSU's consent; those operations get the TPP's and answer 401/403.
    root = Path(__file__).resolve().parent.parent
    config = (root / "schemathesis.toml").read_text(encoding="utf-8")
    config = "\n".join([
        f"[auth.openapi.ApiKey]\napi_key = {json.dumps(key)}",
        *(f"[auth.openapi.{json.dumps(scheme)}]\nbearer = {json.dumps(bearer)}"
          for scheme in ("openbanking.TPPOAuth2Security", "openbanking.PSUOAuth2Security")),
        "", config])
    with tempfile.TemporaryDirectory(prefix="sandbox-fuzz-") as scratch:
        path = Path(scratch) / "schemathesis.toml"
        path.write_text(config, encoding="utf-8")
        cmd = [str(st), "--config-file", str(path), "run", str(OPENAPI_DIR / "sandbox.json"), "--url", base,
               "--checks", "all", "--max-examples", str(args.max_examples),
               "--phases", "examples,coverage,fuzzing,stateful", "--exclude-path-regex", "/_sandbox/"]
        return subprocess.call(cmd)


def _demo(args: argparse.Namespace) -> int:
    from sandbox.demo.runner import main as play

    return play(args)


def _load(args: argparse.Namespace) -> int:
    from sandbox.load.run import main as load

    return load(args)


def _verify_log(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module("sandbox.gateway.cli_verify")
    except ModuleNotFoundError:
        print("the gateway is not built yet", file=sys.stderr)
        return 2
    return module.main(args.rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fintech-sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="start the gateway and every service (SQLite), Ctrl-C stops")
    p.add_argument("--data-dir", default=os.environ.get("SANDBOX_DATA_DIR", ".sandbox-data"))
    p.add_argument("--port-offset", type=int, default=0, help="add this to every port")
    p.add_argument("--services", help="comma-separated subset, e.g. gateway,payments")
    p.add_argument("--exit-when-ready", action="store_true", help="start, check, print, stop")
    p.add_argument("--fresh", action="store_true",
                   help="delete the data folder's databases first (the audit log too): a brand-new sandbox")
    p.set_defaults(func=_run)

    p = sub.add_parser("reset", help="back to the seeded demo state: through the running gateway (the "
                       "audit log starts a new epoch), else by deleting the services' databases")
    p.add_argument("--data-dir", default=os.environ.get("SANDBOX_DATA_DIR", ".sandbox-data"))
    p.add_argument("--port-offset", type=int, default=0, help="the offset the sandbox was started with")
    p.set_defaults(func=_reset)

    sub.add_parser("openapi", help="export openapi/<service>.json").set_defaults(func=_openapi)
    sub.add_parser("compose", help="regenerate docker-compose.yml").set_defaults(func=_compose)
    p = sub.add_parser("k8s", help="regenerate the Kubernetes manifests in deploy/k8s (kustomize base, kind overlay)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if deploy/k8s drifted from the topology")
    p.set_defaults(func=_k8s)

    p = sub.add_parser("bench", help="run a benchmark: " + ", ".join(BENCHMARKS) + " or all "
                       "(options after the name go to it: bench payments --help)", add_help=False)
    p.add_argument("name", choices=[*BENCHMARKS, "all"])
    p.set_defaults(func=_bench, passes_rest=True)

    p = sub.add_parser("fuzz", help="schemathesis against the running stack")
    p.add_argument("--port-offset", type=int, default=0)
    p.add_argument("--max-examples", type=int, default=50)
    p.add_argument("--via-gateway", action=argparse.BooleanOptionalAction, default=True,
                   help="also fuzz openapi/sandbox.json through the gateway as a participant admitted for "
                   "the run")
    p.set_defaults(func=_fuzz)

    p = sub.add_parser("demo", help="play the seed's examples as narrated calls against the running sandbox "
                       "(demo --list names them)")
    from sandbox.demo.runner import add_arguments as demo_arguments

    demo_arguments(p)
    p.set_defaults(func=_demo)

    p = sub.add_parser("load", help="drive realistic participant traffic and injected AML typologies through the "
                       "gateway (Locust, headless), then check the regulator's alerts against them")
    from sandbox.load.run import add_arguments as load_arguments

    load_arguments(p)
    p.set_defaults(func=_load)

    from sandbox.cli_events import add_listen, add_trigger  # like `stripe listen` and `stripe trigger`

    add_listen(sub)
    add_trigger(sub)

    p = sub.add_parser("verify-log", help="verify the gateway's tamper-evident audit log "
                       "(options after it go to the verifier: verify-log --help)", add_help=False)
    p.set_defaults(func=_verify_log, passes_rest=True)

    # `bench NAME ...` and `verify-log ...` hand everything they do not know to the module
    # they run, options included (argparse's REMAINDER drops a leading option).
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passes_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    return args.func(args)
