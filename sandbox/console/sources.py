"""Where the console reads from: only public HTTP APIs, as any client would. The gateway's
regulator API (`/sandbox/…`, the regulator's key), every process's `/healthz` and `/readyz`, and
payments' `/invariants`. Nothing here touches a database or imports a service's code."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

PARTICIPANTS_PAGE = 100  # the gateway's largest page; the demo world has a dozen participants
FEED_PAGE = 100


class SourceUnavailable(Exception):
    """A public API the page needs did not answer (down, or answered 5xx): the page says so."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.detail = detail


class Refused(Exception):
    """The gateway refused an action (4xx): its problem+json, to show as it came."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or str(status))
        self.status = status
        self.problem = problem


@dataclass(frozen=True)
class Probe:
    """One process's health as a client sees it: alive (/healthz), ready (/readyz), how fast."""

    name: str
    url: str
    alive: bool
    ready: bool
    detail: str
    latency_ms: float | None


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"title": response.reason_phrase, "detail": response.text[:300], "status": response.status_code}
    return body if isinstance(body, dict) else {"detail": str(body), "status": response.status_code}


class SandboxApi:
    """The public APIs the console reads, over one pooled HTTP client."""

    def __init__(self, gateway_url: str, regulator_key: str, service_urls: dict[str, str],
                 timeout_s: float = 5.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.service_urls = {name: url.rstrip("/") for name, url in service_urls.items()}
        self._regulator = {"X-API-Key": regulator_key}
        self._http = httpx.AsyncClient(timeout=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, what: str, method: str, url: str, *, regulator: bool = False,
                    params: dict[str, Any] | None = None, json: Any = None) -> dict[str, Any]:
        headers = self._regulator if regulator else None
        try:
            response = await self._http.request(method, url, params=params, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise SourceUnavailable(what, f"{url} did not answer ({type(exc).__name__})") from exc
        if response.status_code >= 500:
            problem = _problem_of(response)
            raise SourceUnavailable(what, f"{url} answered {response.status_code}: "
                                          f"{problem.get('detail') or problem.get('title')}")
        if response.status_code >= 400:
            raise Refused(response.status_code, _problem_of(response))
        return response.json()

    async def _regulator_get(self, what: str, path: str, **params: Any) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None}
        return await self._call(what, "GET", f"{self.gateway_url}/sandbox{path}", regulator=True, params=query)

    # -- health -----------------------------------------------------------------------------

    async def probe(self, name: str) -> Probe:
        url = self.service_urls[name]
        started = time.perf_counter()
        try:
            alive = await self._http.get(f"{url}/healthz")
            ready = await self._http.get(f"{url}/readyz")
        except httpx.HTTPError as exc:
            return Probe(name, url, False, False, f"no answer ({type(exc).__name__})", None)
        latency = (time.perf_counter() - started) * 1000 / 2
        detail = "ready" if ready.status_code == 200 else str(_problem_of(ready).get("detail") or ready.status_code)
        return Probe(name, url, alive.status_code == 200, ready.status_code == 200, detail, latency)

    async def probe_all(self) -> list[Probe]:
        return list(await asyncio.gather(*(self.probe(name) for name in self.service_urls)))

    # -- the audit log ----------------------------------------------------------------------

    async def audit_entries(self, after: int | None = None, request_id: str | None = None,
                            limit: int = FEED_PAGE) -> dict[str, Any]:
        return await self._regulator_get("the audit log", "/audit/entries", after=after,
                                         request_id=request_id, limit=limit)

    async def all_entries_of(self, request_id: str) -> list[dict[str, Any]]:
        """Every hop of one request (its X-Request-ID), oldest first, across pages."""
        entries: list[dict[str, Any]] = []
        after: int | None = None
        while True:
            page = await self.audit_entries(after=after, request_id=request_id)
            entries += page["data"]
            if not page["has_more"]:
                return entries
            after = page["next_after"]

    async def audit_head(self) -> dict[str, Any]:
        return await self._regulator_get("the audit log's head", "/audit/head")

    async def verify_audit(self) -> dict[str, Any]:
        return await self._regulator_get("the audit log's verification", "/audit/verify")

    # -- alerts -----------------------------------------------------------------------------

    async def alerts(self, status: str | None) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self._regulator_get("the alerts", "/alerts", status=status, limit=100, after=cursor)
            alerts += page["data"]
            if not page.get("has_more"):
                return alerts
            cursor = page["next_cursor"]

    async def alert(self, alert_id: str) -> dict[str, Any]:
        return await self._regulator_get("the alert", f"/alerts/{alert_id}")

    async def assign_alert(self, alert_id: str, assignee: str) -> dict[str, Any]:
        return await self._call("assigning the alert", "POST", f"{self.gateway_url}/sandbox/alerts/{alert_id}/assign",
                                regulator=True, json={"assignee": assignee})

    async def close_alert(self, alert_id: str, resolution: str, note: str | None) -> dict[str, Any]:
        return await self._call("closing the alert", "POST", f"{self.gateway_url}/sandbox/alerts/{alert_id}/close",
                                regulator=True, json={"resolution": resolution, "note": note or None})

    # -- participants -----------------------------------------------------------------------

    async def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest events of every participant and the sandbox's own, newest first."""
        after, latest = 0, []
        while True:  # the store is read from a cursor; the page keeps the last `limit`
            page = await self._regulator_get("the events", "/events", after=after, limit=500)
            latest = (latest + page["data"])[-limit:]
            after = page["next_after"]
            if not page["has_more"]:
                return list(reversed(latest))

    async def webhook_endpoints(self) -> list[dict[str, Any]]:
        return (await self._regulator_get("the webhook endpoints", "/webhooks/endpoints", limit=100))["data"]

    async def webhook_deliveries(self, endpoint_id: str) -> list[dict[str, Any]]:
        return (await self._regulator_get("an endpoint's deliveries", f"/webhooks/endpoints/{endpoint_id}/deliveries",
                                          limit=20))["data"]

    async def participants(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self._regulator_get("the participants", "/participants", limit=PARTICIPANTS_PAGE,
                                             after=cursor)
            found += page["data"]
            if not page.get("has_more"):
                return found
            cursor = page["next_cursor"]

    async def activity(self, participant_id: str) -> dict[str, Any]:
        return await self._regulator_get("a participant's activity", f"/participants/{participant_id}/activity")

    async def gateway_clock(self) -> dict[str, Any]:
        """The gateway's time (the regulator may have moved it): testing windows and days follow it."""
        return await self._call("the gateway's clock", "GET", f"{self.gateway_url}/_sandbox/clock", regulator=True)

    # -- the ledger -------------------------------------------------------------------------

    async def ledger_invariants(self) -> dict[str, Any]:
        if "payments" not in self.service_urls:
            raise SourceUnavailable("the ledger's invariants", "no payments service is configured")
        return await self._call("the ledger's invariants", "GET", f"{self.service_urls['payments']}/invariants")
