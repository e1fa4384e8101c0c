"""`fintech-sandbox listen` and `fintech-sandbox trigger`, as `stripe listen` and `stripe trigger`
are for Stripe: follow a participant's events at the gateway (GET /events) and forward each,
signed as Standard Webhooks says, to a local URL; make the real calls that cause an event."""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from sandbox.gateway.webhook_rules import subscribed
from services.common.demo import DEMO_ACCOUNTS, DEMO_LENDER, DEMO_PARTICIPANTS, WALLET_CO

POLL_S = 0.5
TRIGGER_WAIT_S = 10.0


def _gateway(port_offset: int) -> str:
    from sandbox.topology import GATEWAY

    return f"http://127.0.0.1:{GATEWAY.port + port_offset}"


def _line(event: dict[str, Any]) -> str:
    return (f"{event['seq']:>6}  {event['occurred_at']}  {event['type']:<36} {event['subject_id']:<32} "
            f"{event['id']}")


def _head(http: httpx.Client) -> int:
    """The cursor after the last event stored so far: a listener shows what comes next."""
    after = 0
    while True:
        page = http.get("/events", params={"after": after, "limit": 500}).json()
        after = page["next_after"]
        if not page["has_more"]:
            return after


def listen(args: argparse.Namespace) -> int:
    secret = args.secret or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with httpx.Client(base_url=args.gateway or _gateway(args.port_offset), timeout=10,
                      headers={"X-API-Key": args.key}) as http, httpx.Client(timeout=10) as forward:
        probe = http.get("/events", params={"limit": 1})
        if probe.status_code != 200:
            print(f"GET /events answered {probe.status_code}: {probe.text}", file=sys.stderr)
            return 1
        after = args.after if args.after is not None else _head(http)
        print(f"Listening for events after {after}" + (f", forwarding to {args.forward_to}" if args.forward_to else "")
              + " (Ctrl-C stops)", flush=True)
        if args.forward_to:
            print(f"Your webhook signing secret is {secret} (verify with standardwebhooks.Webhook(secret).verify)",
                  flush=True)
        signer = Webhook(secret)
        deadline = time.monotonic() + args.for_seconds if args.for_seconds else None
        try:
            while deadline is None or time.monotonic() < deadline:
                page = http.get("/events", params={"after": after, "limit": 100}).json()
                for event in page["data"]:
                    if args.types and not subscribed(event["type"], args.types):
                        continue
                    print(_line(event), flush=True)
                    if args.forward_to:
                        print(f"        -> {_forward(forward, signer, args.forward_to, event)}", flush=True)
                after = page["next_after"]
                if not page["has_more"]:
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            pass
    return 0


def _forward(client: httpx.Client, signer: Webhook, url: str, event: dict[str, Any]) -> str:
    """POST the event as a webhook would carry it, signed; what the local receiver answered."""
    body = json.dumps({"id": event["id"], "type": event["type"], "timestamp": event["occurred_at"],
                       "source": event["source"], "participant_id": event["participant_id"],
                       "subject_id": event["subject_id"], "data": event["data"]}, separators=(",", ":"))
    now = datetime.now(UTC)
    headers = {"content-type": "application/json", "webhook-id": event["id"],
               "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signer.sign(event["id"], now, body)}
    started = time.perf_counter()
    try:
        answer = client.post(url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        return f"not delivered: {type(exc).__name__}: {exc}"
    return f"{answer.status_code} in {(time.perf_counter() - started) * 1000:.1f} ms"


# -- trigger -------------------------------------------------------------------------------------

def _key_of(participant_id: str) -> str:
    return next(p.api_key for p in DEMO_PARTICIPANTS if p.id == participant_id)


def _account(owner: str) -> str:
    return next(a.id for a in DEMO_ACCOUNTS if a.owner_name == owner)


@dataclass(frozen=True)
class Trigger:
    participant_id: str  # whose demo key makes the call, and whose event it is
    what: str
    call: Callable[[httpx.Client], httpx.Response]


def _transfer(http: httpx.Client) -> httpx.Response:
    return http.post("/payments/transfers", json={
        "from_account_id": _account("Li Wei"), "to_account_id": _account("Zhang Min"),
        "amount": {"amount": "1.00", "currency": "CNY"}, "description": "fintech-sandbox trigger"})


def _loan_application(http: httpx.Client) -> httpx.Response:
    # The contract's own example application (Chen's Tea Stall), as the gateway serves it.
    contract = http.get("/sandbox.json").json()
    example = contract["components"]["schemas"]["credit.ApplicationCreate"]["examples"][0]
    return http.post("/credit/applications", json=example)


TRIGGERS: dict[str, Trigger] = {
    "payments.transfer.completed": Trigger(WALLET_CO, "POST /payments/transfers: 1.00 CNY from Li Wei to Zhang Min "
                                           "(Demo Wallet Co)", _transfer),
    "credit.application.decided": Trigger(DEMO_LENDER, "POST /credit/applications: Chen's Tea Stall applies "
                                          "(Demo Lender)", _loan_application),
}


def trigger(args: argparse.Namespace) -> int:
    chosen = TRIGGERS.get(args.event_type)
    if chosen is None:
        print(f"no trigger for {args.event_type}; known: {', '.join(TRIGGERS)}", file=sys.stderr)
        return 2
    with httpx.Client(base_url=args.gateway or _gateway(args.port_offset), timeout=30,
                      headers={"X-API-Key": _key_of(chosen.participant_id)}) as http:
        after = _head(http)
        print(f"Running {chosen.what}", flush=True)
        answer = chosen.call(http)
        print(f"  {answer.status_code} {answer.json().get('id', answer.text[:200])}", flush=True)
        if answer.status_code >= 400:
            return 1
        deadline = time.monotonic() + TRIGGER_WAIT_S
        while time.monotonic() < deadline:
            found = [e for e in http.get("/events", params={"after": after, "type": args.event_type}).json()["data"]]
            if found:
                for event in found:
                    print(f"Event: {_line(event).strip()}", flush=True)
                return 0
            time.sleep(POLL_S)
    print(f"no {args.event_type} event reached the gateway within {TRIGGER_WAIT_S:.0f} s", file=sys.stderr)
    return 1


def add_listen(sub: Any) -> None:
    p = sub.add_parser("listen", help="print a participant's events as they arrive (GET /events) and forward "
                       "each, signed (Standard Webhooks), to a local URL")
    p.add_argument("--key", required=True, help="the participant's API key")
    p.add_argument("--forward-to", help="a local URL that receives each event, signed")
    p.add_argument("--types", nargs="*", default=[], help="only these types or prefixes (payments, credit.*)")
    p.add_argument("--secret", help="sign with this whsec_… secret (default: a new one, printed)")
    p.add_argument("--after", type=int, help="start after this cursor (0: replay every event); default: now")
    p.add_argument("--for-seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--gateway", help="the gateway's URL (default http://127.0.0.1:8000 plus --port-offset)")
    p.add_argument("--port-offset", type=int, default=0)
    p.set_defaults(func=listen)


def add_trigger(sub: Any) -> None:
    p = sub.add_parser("trigger", help="make the real calls that cause an event, with the demo keys: "
                       + ", ".join(TRIGGERS))
    p.add_argument("event_type", choices=sorted(TRIGGERS))
    p.add_argument("--gateway", help="the gateway's URL (default http://127.0.0.1:8000 plus --port-offset)")
    p.add_argument("--port-offset", type=int, default=0)
    p.set_defaults(func=trigger)
