"""Traces: a 310 loan is one trace, every hop of it a span of the service that made it, as Jaeger
shows it; the participant's own `traceparent` is continued, and its trace id is in the audit
entries, the problem documents and `X-Trace-Id`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sandbox.gateway.main import GatewaySettings
from sandbox.gateway.main import create_app as create_gateway_app
from services.common.demo import DEMO_REGULATOR_KEY
from services.common.tracing import also_export_to
from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.credit.conftest import application, credit_app
from tests.support.servers import serve

# The lender's own trace, as its tracing library would send it (W3C Trace Context).
LENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
LENDER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{LENDER_TRACE}-{LENDER_SPAN}-01"


@dataclass
class Stack:
    lender: httpx.Client
    regulator: httpx.Client
    spans: InMemorySpanExporter

    def audit_entries(self, **filters: Any) -> list[dict[str, Any]]:
        return self.regulator.get("/sandbox/audit/entries", params={"limit": 100, **filters}).json()["data"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Gateway, credit and payments on loopback ports, each app built to record its spans."""
    with also_export_to(InMemorySpanExporter()) as spans:
        yield from _served(tmp_path, spans)


@pytest.fixture
def ids_only_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The same, in the default mode: no endpoint, nothing recorded."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    yield from _served(tmp_path, InMemorySpanExporter())


def _served(tmp_path: Path, spans: InMemorySpanExporter) -> Iterator[Stack]:
    to_gateway = httpx.Client()  # credit's calls go through the gateway, whose port we learn below
    payments = create_payments_app(PaymentsSettings(data_dir=tmp_path / "payments"))
    with serve(payments) as payments_url, serve(credit_app(tmp_path, to_gateway)) as credit_url:
        gateway = create_gateway_app(GatewaySettings(
            data_dir=tmp_path / "gateway", upstream_payments=payments_url, upstream_credit=credit_url))
        with serve(gateway) as gateway_url, \
                httpx.Client(base_url=f"{gateway_url}/credit", headers={"X-API-Key": "sbx_demo_lender_key"},
                             timeout=30) as lender, \
                httpx.Client(base_url=gateway_url, headers={"X-API-Key": DEMO_REGULATOR_KEY}) as regulator:
            to_gateway.base_url = httpx.URL(gateway_url)
            yield Stack(lender, regulator, spans)


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def _http_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind in (SpanKind.SERVER, SpanKind.CLIENT)]


def _parent(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan | None:
    return by_id.get(span.parent.span_id) if span.parent is not None else None


def _chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """The span and its ancestors, outermost first, as `service KIND name`."""
    chain = []
    current: ReadableSpan | None = span
    while current is not None:
        chain.append(f"{_service(current)} {current.kind.name} {current.name}")
        current = _parent(current, by_id)
    return chain[::-1]


def test_a_310_loan_is_one_trace_across_gateway_credit_and_payments(stack: Stack) -> None:
    decided = stack.lender.post("/applications", json=application())
    assert decided.status_code == 201, decided.text
    stack.spans.clear()
    loan = stack.lender.post(f"/loans/{decided.json()['loan_id']}/disbursement", headers={"traceparent": TRACEPARENT})
    assert loan.status_code == 200, loan.text
    assert loan.json()["status"] == "disbursed"
    assert loan.headers["x-trace-id"] == LENDER_TRACE

    spans = [s for s in stack.spans.get_finished_spans() if s.context.trace_id == int(LENDER_TRACE, 16)]
    by_id = {s.context.span_id: s for s in spans}
    assert {_service(s) for s in spans} == {"gateway", "credit", "payments"}
    # The lender's span is the root: the gateway's server span is its child.
    (door,) = [s for s in spans if s.parent is not None and s.parent.span_id == int(LENDER_SPAN, 16)]
    assert (_service(door), door.kind, door.parent.is_remote) == ("gateway", SpanKind.SERVER, True)
    # The ledger transfer, five hops below the lender's call, as Jaeger draws it.
    (transfer,) = [s for s in spans if _service(s) == "payments" and s.kind == SpanKind.SERVER
                   and s.name == "POST /transfers"]
    assert _chain(transfer, by_id) == [
        "gateway SERVER POST /credit/{path:path}",
        "gateway CLIENT POST",
        "credit SERVER POST /loans/{loan_id}/disbursement",
        "credit CLIENT POST",
        "gateway SERVER POST /payments/{path:path}",
        "gateway CLIENT POST",
        "payments SERVER POST /transfers",
    ]
    # Every span of the trace hangs from the lender's (none is a root of its own), database
    # queries included.
    assert all(_parent(s, by_id) is not None for s in spans if s is not door)
    assert any(s.attributes.get("db.system") == "sqlite" or s.attributes.get("db.system.name") == "sqlite"
               for s in spans if _service(s) == "payments")
    assert len(_http_spans(spans)) >= 7

    # Both hops through the door are logged under the lender's trace id: the lender's call to
    # credit, and credit's own transfer on the lender's behalf.
    entries = stack.audit_entries(trace_id=LENDER_TRACE)
    assert {(e["service"], e["via"] is not None) for e in entries} == {("credit", False), ("payments", True)}
    assert all(e["trace_id"] == LENDER_TRACE for e in entries)
    assert stack.regulator.get("/sandbox/audit/verify").json()["ok"] is True


def test_without_a_collector_the_loans_hops_still_share_the_lenders_trace_id(ids_only_stack: Stack) -> None:
    decided = ids_only_stack.lender.post("/applications", json=application())
    loan = ids_only_stack.lender.post(f"/loans/{decided.json()['loan_id']}/disbursement",
                                      headers={"traceparent": TRACEPARENT})
    assert loan.status_code == 200, loan.text
    assert loan.headers["x-trace-id"] == LENDER_TRACE
    entries = ids_only_stack.audit_entries(trace_id=LENDER_TRACE)
    assert {(e["service"], e["via"] is not None) for e in entries} == {("credit", False), ("payments", True)}
    assert ids_only_stack.spans.get_finished_spans() == ()  # nothing recorded


def test_a_refusal_names_the_participants_trace(stack: Stack) -> None:
    refused = stack.lender.post("/applications", json={"records": {}}, headers={"traceparent": TRACEPARENT})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["trace_id"] == LENDER_TRACE == refused.headers["x-trace-id"]
    (entry,) = stack.audit_entries(trace_id=LENDER_TRACE)
    assert (entry["status"], entry["trace_id"]) == (422, LENDER_TRACE)


def test_a_request_without_traceparent_starts_its_own_trace(stack: Stack) -> None:
    answer = stack.lender.get("/scorecard")
    assert answer.status_code == 200
    trace_id = answer.headers["x-trace-id"]
    assert len(trace_id) == 32 and trace_id != LENDER_TRACE
    (entry,) = stack.audit_entries(trace_id=trace_id)
    assert entry["path"] == "/credit/scorecard"
