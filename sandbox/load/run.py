"""`fintech-sandbox load`: run the locustfile headless in a subprocess (gevent's monkeypatching
stays out of this process), then print what happened: requests by participant and endpoint,
failures, latency, each injected typology and the regulator's alerts that show it, and any
alert no typology explains. Every figure comes from this run's CSV stats, its manifest and the
gateway's regulator API; the exit status is 1 if a typology raised no alert of its rule, was cut
short by a failed call, or an alert is left unexplained."""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from services.common.demo import DEMO_REGULATOR_KEY

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
GATEWAY_PORT = 8000


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gateway-url", help="the gateway to load (default: 127.0.0.1:8000 plus --port-offset)")
    where.add_argument("--port-offset", type=int, default=0, help="the offset the sandbox was started with")
    p.add_argument("--users", type=int, default=8, help="concurrent users, spread over the participant mixes")
    p.add_argument("--spawn-rate", type=float, default=4, help="users started per second")
    bound = p.add_mutually_exclusive_group(required=True)
    bound.add_argument("--run-time", help="how long, e.g. 30s, 5m")
    bound.add_argument("--iterations", type=int, help="stop after this many journeys (typologies included)")
    p.add_argument("--typology-rate", type=float, default=0.05,
                   help="share of journeys replaced by an AML typology (default 0.05)")
    p.add_argument("--every-typology", action="store_true", help="inject each typology once first, then at the rate")
    p.add_argument("--seed", type=int, default=0, help="seeds amounts, choices and which typology comes next")
    p.add_argument("--output-dir", help="keep the manifest, CSV stats and Locust's log here (default: a temp dir)")
    p.add_argument("--json", dest="json_out", help="also write the summary as JSON to this file")


def main(args: argparse.Namespace) -> int:
    url = (args.gateway_url or f"http://127.0.0.1:{GATEWAY_PORT + args.port_offset}").rstrip("/")
    regulator = httpx.Client(base_url=url, headers={"X-API-Key": DEMO_REGULATOR_KEY}, timeout=30)
    try:
        regulator.get("/readyz").raise_for_status()
    except httpx.HTTPError as exc:
        print(f"no gateway answers at {url} ({exc}): start the sandbox first (make run)", file=sys.stderr)
        return 2
    alerts_before = {a["id"] for a in _alerts(regulator)}
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="sandbox-load-"))
    out.mkdir(parents=True, exist_ok=True)
    run_id = secrets.token_hex(4)
    manifest_path, csv_prefix, log_path = out / "manifest.json", out / "stats", out / "locust.log"
    env = {**os.environ, "LOAD_MANIFEST": str(manifest_path), "LOAD_TYPOLOGY_RATE": str(args.typology_rate),
           "LOAD_EVERY_TYPOLOGY": "1" if args.every_typology else "", "LOAD_SEED": str(args.seed),
           "LOAD_ITERATIONS": str(args.iterations or 0), "LOAD_RUN_ID": run_id}
    # An --iterations run still has a ceiling, so a stuck sandbox cannot hold the command forever.
    run_time = args.run_time or "30m"
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
               "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", run_time,
               "--stop-timeout", "120", "--csv", str(csv_prefix), "--only-summary", "--exit-code-on-error", "0"]
    print(f"load: {args.users} users against {url} ({args.run_time or f'{args.iterations} iterations'}, "
          f"typology rate {args.typology_rate}{', every typology first' if args.every_typology else ''}, "
          f"seed {args.seed}); output in {out}", flush=True)
    with open(log_path, "w") as log:
        locust = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if locust.returncode != 0 or not manifest_path.exists():
        print(f"locust failed (exit {locust.returncode}); its log:\n" + log_path.read_text()[-4000:], file=sys.stderr)
        return 2
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    new_alerts = [a for a in _alerts(regulator) if a["id"] not in alerts_before]
    summary = summarise(_stats(Path(f"{csv_prefix}_stats.csv")), _failures(Path(f"{csv_prefix}_failures.csv")),
                        manifest, new_alerts, regulator.get("/sandbox/audit/verify").json())
    print(render(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0 if summary["ok"] else 1


def _alerts(client: httpx.Client) -> list[dict[str, Any]]:
    alerts, after = [], None
    while True:
        page = client.get("/sandbox/alerts", params={"limit": 100, **({"after": after} if after else {})})
        page.raise_for_status()
        body = page.json()
        alerts += body["data"]
        if not body.get("has_more"):
            return alerts
        after = body["next_cursor"]


def _stats(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _failures(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def summarise(stats: list[dict[str, str]], failures: list[dict[str, str]], manifest: dict[str, Any],
              alerts: list[dict[str, Any]], verify: dict[str, Any]) -> dict[str, Any]:
    """Join the run's stats, its manifest and the regulator's new alerts."""
    rows = [r for r in stats if r["Name"] != "Aggregated"]
    total = next((r for r in stats if r["Name"] == "Aggregated"), None)
    endpoints = [{"participant": r["Name"].split(" ", 1)[0], "endpoint": r["Name"].split(" ", 1)[1],
                  "requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                  "p50_ms": r["50%"], "p95_ms": r["95%"], "rps": r["Requests/s"]} for r in rows]
    by_participant: dict[str, dict[str, int]] = defaultdict(lambda: {"requests": 0, "failures": 0})
    for e in endpoints:
        by_participant[e["participant"]]["requests"] += e["requests"]
        by_participant[e["participant"]]["failures"] += e["failures"]

    explained: set[str] = set()
    injections = []
    for inj in manifest["injections"]:
        ids, accounts = set(inj["all_request_ids"]), set(inj["accounts"])
        mine = [a for a in alerts if a.get("request_id") in ids
                or (a.get("payer") in accounts and a.get("payer") not in manifest["clean"]["accounts"])
                or (a.get("payee") in accounts and a.get("payee") not in manifest["clean"]["accounts"])]
        explained |= {a["id"] for a in mine}
        matching = [a for a in mine if set(inj["expected_rules"]) & {h["rule"] for h in a["rules"]}]
        injections.append({
            "typology": inj["typology"], "completed": inj["completed"], "note": inj["note"],
            "expected_rules": inj["expected_rules"], "accounts": inj["accounts"], "payee_names": inj["payee_names"],
            "alerts": [{"id": a["id"], "decision": a["decision"], "rules": [h["rule"] for h in a["rules"]],
                        "request_id": a.get("request_id")} for a in mine],
            "caught": bool(matching),
        })
    clean = set(manifest["clean"]["accounts"])
    unexplained = [{"id": a["id"], "decision": a["decision"], "rules": [h["rule"] for h in a["rules"]],
                    "payer": a.get("payer"), "payee": a.get("payee"), "request_id": a.get("request_id"),
                    "on_clean_account": a.get("payer") in clean or a.get("payee") in clean}
                   for a in alerts if a["id"] not in explained]
    missed = [i for i in injections if i["completed"] and not i["caught"]]
    return {
        # An injection cut short proves nothing either way: the run does not pass with one.
        "ok": not missed and not unexplained and all(i["completed"] for i in injections) and bool(verify.get("ok")),
        "requests": int(total["Request Count"]) if total else 0,
        "failures": int(total["Failure Count"]) if total else 0,
        "rps": total["Requests/s"] if total else "0",
        "p50_ms": total["50%"] if total else "", "p95_ms": total["95%"] if total else "",
        "by_participant": dict(by_participant), "endpoints": endpoints,
        "failure_reasons": [{"name": f["Name"], "error": f["Error"], "occurrences": int(f["Occurrences"])}
                            for f in failures],
        "journeys": manifest["clean"]["journeys"], "skipped": manifest["clean"]["skipped"],
        "typologies_skipped": manifest["typologies_skipped"], "injections": injections,
        "incomplete": [i for i in injections if not i["completed"]],
        "missed": [i["typology"] for i in missed], "unexplained_alerts": unexplained,
        "audit_log": {"ok": verify.get("ok"), "size": verify.get("size"), "first_broken": verify.get("first_broken")},
    }


def render(s: dict[str, Any]) -> str:
    lines = [f"\nrequests {s['requests']}  failures {s['failures']}  {float(s['rps']):.1f} req/s  "
             f"p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms", "", "by participant:"]
    for who, n in sorted(s["by_participant"].items()):
        lines.append(f"  {who:<17} {n['requests']:>6} requests  {n['failures']:>4} failures")
    lines += ["", f"  {'participant':<17} {'endpoint':<58} {'reqs':>5} {'fail':>4} {'p50':>6} {'p95':>6}"]
    for e in s["endpoints"]:
        lines.append(f"  {e['participant']:<17} {e['endpoint']:<58} {e['requests']:>5} {e['failures']:>4} "
                     f"{e['p50_ms']:>6} {e['p95_ms']:>6}")
    if s["failure_reasons"]:
        lines += ["", "failures (refusals, 429s and errors, as the gateway answered):"]
        lines += [f"  {f['occurrences']:>4} x {f['name']}: {f['error']}" for f in s["failure_reasons"]]
    if s["skipped"] or s["typologies_skipped"]:
        lines += ["", "not sent, to stay inside the limits and rules (counted, not hidden):"]
        lines += [f"  {n:>4} x {why}" for why, n in {**s["skipped"], **s["typologies_skipped"]}.items()]
    lines += ["", "typologies injected, and the regulator's alerts that show them:"]
    for i in s["injections"]:
        mark = "caught" if i["caught"] else ("INCOMPLETE" if not i["completed"] else "MISSED")
        shown = ", ".join(f"{a['id']} {a['decision']} [{'+'.join(a['rules'])}]" for a in i["alerts"]) or "no alert"
        extra = f" ({i['note']})" if i["note"] else ""
        names = f" payee {', '.join(i['payee_names'])!s}" if i["payee_names"] else ""
        lines.append(f"  {mark:<10} {i['typology']:<19}{names}{extra}: {shown}")
    lines += ["", f"alerts no typology explains: {len(s['unexplained_alerts'])}"]
    for a in s["unexplained_alerts"]:
        lines.append(f"  {a['id']} {a['decision']} [{'+'.join(a['rules'])}] payer {a['payer']} payee {a['payee']}"
                     + (" (a clean account)" if a["on_clean_account"] else ""))
    log = s["audit_log"]
    lines.append(f"audit log: {'intact' if log['ok'] else 'BROKEN at ' + str(log['first_broken'])}, {log['size']} entries")
    lines.append("OK" if s["ok"] else "FAILED: " + "; ".join(
        ([f"no alert for {', '.join(s['missed'])}"] if s["missed"] else [])
        + ([f"{len(s['incomplete'])} typology injection(s) cut short"] if s["incomplete"] else [])
        + ([f"{len(s['unexplained_alerts'])} unexplained alert(s)"] if s["unexplained_alerts"] else [])
        + ([] if log["ok"] else ["the audit log does not verify"])))
    return "\n".join(lines)
