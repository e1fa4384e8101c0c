"""One request's sequence diagram from its audit entries: pure functions over the gateway's
public entries (no HTTP, no database), so tests can feed them entries directly.

A hop is one call through the gateway: a money movement's `intent` and its `outcome` (or
`unanswered`, `reconciled`), or a single entry for any other call. Every hop of a request shares
its X-Request-ID. A hop a sandbox service sends for a participant (`via` set) starts on the
lifeline of the service whose own hop encloses it in time: open banking's ledger transfer is
drawn from the open-banking lifeline, inside the TPP's payment."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

GATEWAY = "gateway"
CLOSING_PHASES = ("outcome", "unanswered", "reconciled")
# Refusals the gateway makes itself, before anything is forwarded.
GATEWAY_ONLY_STATUSES = (401, 429)


@dataclass
class Hop:
    """One call through the gateway, as the regulator's log recorded it."""

    entries: list[dict[str, Any]]  # the hop's entries, oldest first
    caller: str = ""  # the lifeline it starts on
    number: int = 0

    @property
    def last(self) -> dict[str, Any]:
        return self.entries[-1]

    @property
    def first(self) -> dict[str, Any]:
        return self.entries[0]

    @property
    def target(self) -> str:
        return self.first.get("service") or GATEWAY

    @property
    def started(self) -> datetime:
        return _time(self.first["at"])  # an entry's `at` is when the gateway took the request

    @property
    def ended(self) -> datetime:
        """When the gateway had the answer: the request's arrival plus the latency it logged."""
        return max(_time(e["at"]) + timedelta(milliseconds=e.get("latency_ms") or 0) for e in self.entries)

    @property
    def answered(self) -> bool:
        return self.last.get("phase") != "intent"

    @property
    def forwarded(self) -> bool:
        """Whether the gateway passed it on to the service (not refused at the door)."""
        entry = self.last
        return (entry.get("service") is not None and entry.get("decision") != "block"
                and entry.get("limit") is None and entry.get("status") not in GATEWAY_ONLY_STATUSES)

    @property
    def decision(self) -> str | None:
        return self.last.get("decision") or self.first.get("decision")

    @property
    def trace_id(self) -> str | None:
        return next((e["trace_id"] for e in self.entries if e.get("trace_id")), None)


@dataclass
class Arrow:
    """One message on the diagram, from one lifeline to another."""

    source: str
    target: str
    label: str
    hop: Hop
    returning: bool = False
    at: datetime = field(default_factory=datetime.now)


@dataclass
class SequenceDiagram:
    request_id: str
    lifelines: list[str]
    hops: list[Hop]
    arrows: list[Arrow]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def group_hops(entries: list[dict[str, Any]]) -> list[Hop]:
    """Entries into hops: a closing entry joins its intent (`intent_index`), others stand alone."""
    hops: dict[int, Hop] = {}
    ordered: list[Hop] = []
    for entry in sorted(entries, key=lambda e: e["index"]):
        if entry.get("phase") == "reset":
            continue
        opened = hops.get(entry.get("intent_index")) if entry.get("phase") in CLOSING_PHASES else None
        if opened is not None:
            opened.entries.append(entry)
            continue
        hop = Hop([entry])
        hops[entry["index"]] = hop
        ordered.append(hop)
    ordered.sort(key=lambda h: (h.started, h.first["index"]))
    for number, hop in enumerate(ordered, start=1):
        hop.number = number
    return ordered


def _encloses(outer: Hop, inner: Hop) -> bool:
    return outer is not inner and outer.started <= inner.started and inner.ended <= outer.ended


def assign_callers(hops: list[Hop], names: dict[str, str]) -> None:
    """Each hop's first lifeline: the enclosing hop's service for a service's own call, else the
    participant (by name when known)."""
    for hop in hops:
        entry = hop.first
        if entry.get("via"):
            enclosing = [h for h in hops if h.target != hop.target and h.forwarded and _encloses(h, hop)]
            if enclosing:  # the innermost: the service that was serving when this call was made
                hop.caller = max(enclosing, key=lambda h: h.started).target
                continue
            hop.caller = names.get(entry["via"], entry["via"])
            continue
        participant = entry.get("participant_id")
        hop.caller = names.get(participant, participant) if participant else "no key"


def _request_label(entry: dict[str, Any]) -> str:
    return f"{entry['method']} {entry['path']}"


def _answer_label(hop: Hop) -> str:
    status = hop.last.get("status")
    if not hop.answered:
        return "in flight"
    label = str(status) if status else (hop.last.get("error") or "no answer")
    return f"{label} · {hop.decision}" if hop.decision else label


def build_diagram(request_id: str, entries: list[dict[str, Any]], names: dict[str, str]) -> SequenceDiagram:
    """The diagram of one request: lifelines left to right (callers, the gateway, services in the
    order they were reached) and the arrows in time order."""
    hops = group_hops(entries)
    assign_callers(hops, names)
    services = {hop.target for hop in hops} | {GATEWAY}
    callers = [hop.caller for hop in hops if hop.caller not in services]
    lifelines = list(dict.fromkeys(callers)) + [GATEWAY]
    lifelines += list(dict.fromkeys(hop.target for hop in hops if hop.target != GATEWAY))
    lifelines += list(dict.fromkeys(hop.caller for hop in hops if hop.caller not in lifelines))

    arrows: list[Arrow] = []
    for hop in hops:
        entry = hop.first
        arrows.append(Arrow(hop.caller, GATEWAY, _request_label(entry), hop, at=hop.started))
        if hop.forwarded and hop.target != GATEWAY:
            prefix = f"/{hop.target}" if entry["path"].startswith(f"/{hop.target}") else ""
            service_path = entry["path"].removeprefix(prefix) if prefix else entry["path"]
            arrows.append(Arrow(GATEWAY, hop.target, f"{entry['method']} {service_path}", hop, at=hop.started))
            if hop.answered:
                arrows.append(Arrow(hop.target, GATEWAY, str(hop.last.get("status") or "no answer"), hop,
                                    returning=True, at=hop.ended))
        if hop.answered:
            arrows.append(Arrow(GATEWAY, hop.caller, _answer_label(hop), hop, returning=True, at=hop.ended))
    # Stable in time: a call's request arrows before anything it encloses, its answers after.
    order = {id(a): n for n, a in enumerate(arrows)}
    arrows.sort(key=lambda a: (a.at, a.returning, order[id(a)]))
    return SequenceDiagram(request_id, lifelines, hops, arrows)
