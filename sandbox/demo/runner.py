"""`fintech-sandbox demo [name]`: list, or play one or every scenario against the running gateway."""

from __future__ import annotations

import argparse
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from sandbox.demo import SCENARIOS, Scenario, scenario
from sandbox.demo.narration import ScenarioFailed, Scene
from sandbox.topology import GATEWAY

# The request console listens five ports above the gateway (8005 beside 8000, and moved by the
# same --port-offset), showing every hop of a request by its X-Request-ID.
CONSOLE_PORT_ABOVE_GATEWAY = 5
CALL_TIMEOUT_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", choices=[s.name for s in SCENARIOS], metavar="NAME",
                        help="one scenario (see --list); all of them, in order, when left out")
    parser.add_argument("--list", action="store_true", help="list the scenarios with one line each")
    parser.add_argument("--port-offset", type=int, default=0, help="the offset the sandbox was started with")
    parser.add_argument("--gateway-url", help=f"the gateway (default http://127.0.0.1:{GATEWAY.port} + offset)")
    parser.add_argument("--console-url", help="the request console the narration links to (default: the "
                        f"gateway's host, its port + {CONSOLE_PORT_ABOVE_GATEWAY})")
    parser.add_argument("--no-color", action="store_true", help="plain text (also when not on a terminal)")


def console_url_beside(gateway_url: str) -> str:
    parts = urlsplit(gateway_url)
    port = (parts.port or GATEWAY.port) + CONSOLE_PORT_ABOVE_GATEWAY
    return urlunsplit((parts.scheme, f"{parts.hostname}:{port}", "", "", ""))


def main(args: argparse.Namespace) -> int:
    # soft_wrap: a long line (a body, a console link) stays one line, readable and greppable in CI logs.
    # --no-color: no styles at all (rich also goes plain when not on a terminal, or with NO_COLOR set).
    out = Console(color_system=None if args.no_color else "auto", highlight=False, soft_wrap=True)
    if args.list:
        width = max(len(s.name) for s in SCENARIOS)
        for s in SCENARIOS:
            out.print(Text.assemble((s.name.ljust(width), "bold"), "  ", s.summary))
        return 0
    gateway_url = (args.gateway_url or f"http://127.0.0.1:{GATEWAY.port + args.port_offset}").rstrip("/")
    console_url = args.console_url or console_url_beside(gateway_url)
    chosen = [scenario(args.name)] if args.name else list(SCENARIOS)
    with httpx.Client(base_url=gateway_url, timeout=CALL_TIMEOUT_S) as http:
        try:
            http.get("/healthz")
        except httpx.HTTPError:
            out.print(Text(f"No sandbox answers at {gateway_url}: start it with `make run` (or point "
                           "--gateway-url / --port-offset at yours).", style="bold red"))
            return 2
        results = [_play(s, Scene(http, out, console_url), out) for s in chosen]
    if len(chosen) > 1:
        failed = [s.name for s, ok in zip(chosen, results, strict=True) if not ok]
        out.print(Rule())
        out.print(Text(f"{len(chosen) - len(failed)} of {len(chosen)} scenarios passed"
                       + (f"; failed: {', '.join(failed)}" if failed else ""),
                       style="bold red" if failed else "bold green"))
    return 0 if all(results) else 1


def _play(chosen: Scenario, scene: Scene, out: Console) -> bool:
    out.print(Rule(style="dim"))
    out.print(Text(f"{chosen.name}: {chosen.summary}", style="bold underline"))
    started = time.monotonic()
    try:
        chosen.play(scene)
    except ScenarioFailed as failure:
        out.print(Text(f"FAILED {chosen.name}: {failure}", style="bold red"))
        return False
    out.print(Text(f"PASSED {chosen.name}: {scene.steps} calls, {scene.checks} checks, "
                   f"{time.monotonic() - started:.1f} s", style="bold green"))
    return True
