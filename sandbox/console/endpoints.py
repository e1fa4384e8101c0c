"""The console's pages: thin handlers that read the public APIs (sources.py), shape what a page
shows (sequence.py for a request's diagram) and render a template. Errors are problem+json for
API clients and the same problem as a page for a browser."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from sandbox.console import sequence
from sandbox.console.sources import Refused, SandboxApi, SourceUnavailable
from services.common.health import health_router
from services.common.problems import Problem, problem_response

log = logging.getLogger(__name__)
TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
FEED_ROWS = 30  # entries the feed page shows before the stream takes over
ALERT_FILTERS = ("open", "assigned", "closed", "all")
RESOLUTIONS = {"false_positive": "false positive", "suspicious": "suspicious", "reported": "reported"}
JAEGER_TRACE_URL = "http://127.0.0.1:16686/trace/"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

router = APIRouter()
# The console has no database: it is ready when it is serving (the map shows what it can reach).
router.include_router(health_router("console", lambda _request: None))


async def get_api(request: Request) -> SandboxApi:
    return request.app.state.api


ApiDep = Annotated[SandboxApi, Depends(get_api)]


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, template, {"nav": template.removesuffix(".html"), **context},
                                      status_code=status_code)


def problem_page(request: Request, exc: Problem) -> Response:
    """A refusal as a page for a browser, as problem+json for anything else."""
    body = exc.body(instance=request.url.path)
    if wants_html(request):
        return page(request, "problem.html", status_code=exc.status, problem=body)
    return problem_response(exc.status, body, headers=exc.headers)


def unavailable(exc: SourceUnavailable) -> Problem:
    return Problem(503, "source-unavailable", f"The console could not read {exc.what}", exc.detail)


def refused(exc: Refused) -> Problem:
    detail = exc.problem.get("detail") or exc.problem.get("title") or "refused"
    return Problem(exc.status, "refused-by-gateway", exc.problem.get("title") or "Refused by the gateway",
                   detail, gateway_problem=exc.problem.get("type"))


async def participant_names(api: SandboxApi) -> dict[str, str]:
    return {p["id"]: p["name"] for p in await api.participants()}


# -- the service map -----------------------------------------------------------------------

@router.get("/", response_class=HTMLResponse)
async def service_map(request: Request, api: ApiDep) -> HTMLResponse:
    """The service map: every process and whether it is alive and ready, refreshed live."""
    return page(request, "map.html", probes=await api.probe_all())


@router.get("/map/status", response_class=HTMLResponse)
async def service_map_status(request: Request, api: ApiDep) -> HTMLResponse:
    """The map's boxes alone, which the page fetches every few seconds."""
    return TEMPLATES.TemplateResponse(request, "_map_boxes.html", {"probes": await api.probe_all()})


# -- the live feed -------------------------------------------------------------------------

@router.get("/feed", response_class=HTMLResponse)
async def live_feed(request: Request, api: ApiDep) -> HTMLResponse:
    """The latest requests through the gateway, newest first; new ones stream in."""
    try:
        head = await api.audit_head()
        after = max(-1, head["size"] - 1 - FEED_ROWS)
        entries = (await api.audit_entries(after=after, limit=FEED_ROWS + 1))["data"] if head["size"] else []
        names = await participant_names(api)
    except SourceUnavailable as exc:
        raise unavailable(exc) from exc
    last = entries[-1]["index"] if entries else head["size"] - 1
    return page(request, "feed.html", entries=list(reversed(entries)), names=names, after=last)


def _stream_start(request: Request, after: int | None) -> int | None:
    """Where a stream resumes: the browser's Last-Event-ID (the last index it got) wins."""
    last_event = request.headers.get("last-event-id", "")
    if last_event.lstrip("-").isdigit():
        return int(last_event)
    return after


@router.get("/feed/stream")
async def feed_stream(request: Request, api: ApiDep,
                      after: Annotated[int | None, Query(ge=-1, le=2**53)] = None) -> EventSourceResponse:
    """Server-sent events: each new audit entry as a rendered feed row (`entry`, id = its index)."""
    poll_s = request.app.state.settings.feed_poll_s
    row = TEMPLATES.get_template("_feed_row.html")

    async def events() -> AsyncIterator[ServerSentEvent]:
        cursor = _stream_start(request, after)
        names: dict[str, str] = {}
        reported_down = False
        while True:
            try:
                if cursor is None:  # nothing shown yet: start at the head, new entries only
                    cursor = (await api.audit_head())["size"] - 1
                page_ = await api.audit_entries(after=cursor)
                unknown = {e["participant_id"] for e in page_["data"]} | {e["via"] for e in page_["data"]}
                if unknown - set(names) - {None}:
                    names = await participant_names(api)
            except (SourceUnavailable, Refused) as exc:
                if not reported_down:
                    yield ServerSentEvent(data=str(exc), event="unavailable")
                    reported_down = True
                await asyncio.sleep(poll_s * 4)
                continue
            if reported_down:
                yield ServerSentEvent(data="the gateway answers again", event="available")
                reported_down = False
            for entry in page_["data"]:
                html = row.render(entry=entry, names=names)
                yield ServerSentEvent(data=" ".join(html.split()), event="entry", id=str(entry["index"]))
                cursor = entry["index"]
            if not page_["has_more"]:
                await asyncio.sleep(poll_s)

    return EventSourceResponse(events(), ping=15, send_timeout=30)


# -- one request's journey -----------------------------------------------------------------

@router.get("/requests", response_class=RedirectResponse)
async def find_request(request_id: Annotated[str, Query(pattern=REQUEST_ID_PATTERN)]) -> RedirectResponse:
    """The look-up form's target: on to that request's diagram."""
    return RedirectResponse(f"/requests/{request_id.strip()}", status_code=303)


@router.get("/requests/{request_id}", response_class=HTMLResponse)
async def request_sequence(request: Request, api: ApiDep, request_id: str) -> HTMLResponse:
    """One request's sequence diagram across services: every hop with its participant, status,
    decision, screening reasons, timing and receipt."""
    try:
        entries = await api.all_entries_of(request_id)
        if not entries:
            raise Problem(404, "not-found", "No such request in the audit log",
                          f"No audit entry has request id {request_id!r}: the gateway's X-Request-ID "
                          "of a call, echoed in its answer.")
        names = await participant_names(api)
        diagram = sequence.build_diagram(request_id, entries, names)
        alert_ids = {e["alert_id"] for e in entries if e.get("alert_id")}
        alerts = {a: await api.alert(a) for a in sorted(alert_ids)}
    except SourceUnavailable as exc:
        raise unavailable(exc) from exc
    except Refused as exc:
        raise refused(exc) from exc
    return page(request, "request.html", diagram=diagram, layout=layout(diagram), names=names, alerts=alerts,
                jaeger=JAEGER_TRACE_URL)


def _short(label: str, limit: int = 30) -> str:
    """An arrow's label fits between two lifelines; the hop's card below has it whole."""
    if len(label) <= limit:
        return label
    method, _, path = label.partition(" ")
    return f"{method} …/{path.rstrip('/').rsplit('/', 1)[-1]}"[: limit + 6]


def layout(diagram: sequence.SequenceDiagram) -> dict[str, Any]:
    """Coordinates for the SVG: one column per lifeline, one row per arrow."""
    column, row, top = 250, 58, 90
    xs = {name: column // 2 + n * column for n, name in enumerate(diagram.lifelines)}
    arrows = [{"x1": xs[a.source], "x2": xs[a.target], "y": top + n * row, "label": _short(a.label),
               "full": a.label, "returning": a.returning, "hop": a.hop.number,
               "decision": a.hop.decision or "none"} for n, a in enumerate(diagram.arrows)]
    height = top + len(arrows) * row + 20
    return {"width": column * len(diagram.lifelines), "height": height, "lifelines": xs, "arrows": arrows,
            "box_width": column - 30}


# -- events --------------------------------------------------------------------------------

@router.get("/events", response_class=HTMLResponse)
async def events_page(request: Request, api: ApiDep) -> HTMLResponse:
    """The latest events (type, participant, subject, time), and each webhook endpoint's deliveries."""
    try:
        events, endpoints = await asyncio.gather(api.events(), api.webhook_endpoints())
        deliveries = {e["id"]: await api.webhook_deliveries(e["id"]) for e in endpoints}
        names = await participant_names(api)
    except SourceUnavailable as exc:
        raise unavailable(exc) from exc
    return page(request, "events.html", events=events, endpoints=endpoints, deliveries=deliveries, names=names)


# -- alerts --------------------------------------------------------------------------------

@router.get("/alerts", response_class=HTMLResponse)
async def alerts_queue(request: Request, api: ApiDep, status: str = "open", done: str | None = None) -> HTMLResponse:
    """The alerts queue: open, assigned or closed cases, with their reasons; assign or close."""
    if status not in ALERT_FILTERS:
        raise Problem(422, "validation-error", "Unknown alert filter", f"status is one of {', '.join(ALERT_FILTERS)}")
    try:
        alerts = await api.alerts(None if status == "all" else status)
        names = await participant_names(api)
    except SourceUnavailable as exc:
        raise unavailable(exc) from exc
    return page(request, "alerts.html", alerts=list(reversed(alerts)), status=status, filters=ALERT_FILTERS,
                names=names, done=done, resolutions=RESOLUTIONS)


async def _form(request: Request) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded), first value of each."""
    fields = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    return {name: values[0].strip() for name, values in fields.items()}


def _back_to_alerts(status: str, done: str) -> RedirectResponse:
    status = status if status in ALERT_FILTERS else "open"
    return RedirectResponse(f"/alerts?{urlencode({'status': status, 'done': done})}", status_code=303)


@router.post("/alerts/{alert_id}/assign", response_class=RedirectResponse)
async def assign_alert(request: Request, api: ApiDep, alert_id: str) -> RedirectResponse:
    """Give an alert to an investigator (the gateway's assign), then back to the queue."""
    form = await _form(request)
    try:
        await api.assign_alert(alert_id, form.get("assignee") or "")
    except SourceUnavailable as exc:
        raise unavailable(exc) from exc
    except Refused as exc:
        raise refused(exc) from exc
    return _back_to_alerts(form.get("from", "open"), f"{alert_id} assigned to {form.get('assignee')}")


@router.post("/alerts/{alert_id}/close", response_class=RedirectResponse)
async def close_alert(request: Request, api: ApiDep, alert_id: str) -> RedirectResponse:
    """Close an alert with a resolution (the gateway's close), then back to the queue."""
    form = await _form(request)
    try:
        await api.close_alert(alert_id, form.get("resolution") or "", form.get("note"))
    except SourceUnavailable as exc:
        raise unavailable(exc) from exc
    except Refused as exc:
        raise refused(exc) from exc
    resolution = RESOLUTIONS.get(form.get("resolution", ""), form.get("resolution"))
    return _back_to_alerts(form.get("from", "open"), f"{alert_id} closed as {resolution}")


# -- participants --------------------------------------------------------------------------

def _share(used: str | int | float, limit: str | int | float) -> float:
    limit_value = float(limit)
    return min(100.0, 100.0 * float(used) / limit_value) if limit_value else 0.0


def _window(participant: dict[str, Any], now: datetime) -> dict[str, Any]:
    starts = datetime.fromisoformat(participant["window_from"].replace("Z", "+00:00"))
    ends = datetime.fromisoformat(participant["window_to"].replace("Z", "+00:00"))
    if now < starts:
        state = f"opens in {(starts - now).days + 1} days"
    elif now >= ends:
        state = "ended"
    else:
        state = f"day {(now - starts).days + 1} of {(ends - starts).days}, {(ends - now).days} days left"
    return {"from": starts.date().isoformat(), "to": ends.date().isoformat(), "state": state,
            "open": starts <= now < ends}


@router.get("/participants", response_class=HTMLResponse)
async def participants(request: Request, api: ApiDep) -> HTMLResponse:
    """Participants with today's use against their limits, and their testing window."""
    try:
        found = await api.participants()
        activities = await asyncio.gather(*(api.activity(p["id"]) for p in found))
        clock = await api.gateway_clock()
    except SourceUnavailable as exc:
        raise unavailable(exc) from exc
    now = datetime.fromisoformat(clock["now"].replace("Z", "+00:00"))
    rows = []
    for participant, activity in zip(found, activities, strict=True):
        limits = activity["limits"]
        rows.append({
            "participant": participant, "activity": activity, "window": _window(participant, now),
            "volume_share": _share(activity["volume"]["amount"], limits["daily_volume"]["amount"]),
            "customer_share": _share(activity["customers"], limits["max_customers"]),
        })
    return page(request, "participants.html", rows=rows, now=now)


# -- integrity -----------------------------------------------------------------------------

@router.get("/integrity", response_class=HTMLResponse)
async def integrity(request: Request, api: ApiDep) -> HTMLResponse:
    """The ledger's invariants (payments) and the audit log's verification, at a glance."""
    async def read(call: Any) -> tuple[dict[str, Any] | None, str | None]:
        try:
            return await call(), None
        except (SourceUnavailable, Refused) as exc:
            return None, str(exc)

    (invariants, invariants_error), (verification, verification_error), (head, _) = await asyncio.gather(
        read(api.ledger_invariants), read(api.verify_audit), read(api.audit_head))
    return page(request, "integrity.html", invariants=invariants, invariants_error=invariants_error,
                verification=verification, verification_error=verification_error, head=head)
