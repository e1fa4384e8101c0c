"""Traces: OpenTelemetry in the gateway and every service, set up here and nowhere else.

`install_tracing(app, name, database)` (called by `build_service_app`, so the gateway and every
service get it) gives the app a tracer provider whose `service.name` is the service's, and
instruments its HTTP server (FastAPI), its database (SQLAlchemy) and, through
`traced_transport`, its outgoing calls (httpx: the kit's payments client, the gateway's proxy).
W3C `traceparent` goes out on every hop and an incoming one is continued.

Three modes, chosen by the environment at start-up:

- `OTEL_SDK_DISABLED=true`: nothing is installed. No spans, no trace ids; the gateway forwards a
  participant's `traceparent` untouched, as any proxy would.
- No `OTEL_EXPORTER_OTLP_ENDPOINT` (the default): trace ids only. Every request gets a span
  context, so the audit log, problem documents and the `X-Trace-Id` header carry a trace id the
  console and a learner can group by, and `traceparent` crosses every hop; but no span is
  sampled, so nothing is recorded and nothing is exported (the sampler is ALWAYS_OFF).
- `OTEL_EXPORTER_OTLP_ENDPOINT` set: every span is recorded and sent over OTLP/HTTP in batches
  (the SDK's default sampler, parent-based: a participant that marks its trace unsampled is
  honoured; `OTEL_TRACES_SAMPLER` changes it).

Tests (and the benchmark's receiver) add an exporter with `also_export_to`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import httpx
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport, SyncOpenTelemetryTransport
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from sqlalchemy import Engine

TRACE_ID_HEADER = "x-trace-id"
# Probes every few seconds (compose healthchecks, the launcher) would bury the requests in Jaeger.
UNTRACED_PATHS = "healthz,readyz"
# Traces only: the instrumentations' metrics go to a meter that records nothing.
_NO_METRICS = NoOpMeterProvider()
_extra_exporters: list[SpanExporter] = []
# service.name → the provider its spans are made with. In production one process is one service;
# in tests several apps share a process, and a client span belongs to the service serving it.
_providers: dict[str, TracerProvider] = {}
_last_provider: TracerProvider | None = None


def tracing_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def otlp_endpoint() -> str | None:
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None


@contextmanager
def also_export_to(exporter: SpanExporter) -> Iterator[SpanExporter]:
    """Apps built inside the block record every span and hand it to `exporter` as it ends (an
    `InMemorySpanExporter` in tests), as well as to OTLP when an endpoint is set."""
    _extra_exporters.append(exporter)
    try:
        yield exporter
    finally:
        _extra_exporters.remove(exporter)


def tracer_provider(service_name: str) -> TracerProvider | None:
    """A new provider for `service_name` in the mode the environment chooses (None: disabled)."""
    global _last_provider
    if tracing_disabled():
        return None
    endpoint = otlp_endpoint()
    resource = Resource.create({SERVICE_NAME: service_name})
    if endpoint is None and not _extra_exporters:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    else:
        provider = TracerProvider(resource=resource)
    if endpoint is not None:
        # Imported here: without an endpoint the exporter (and protobuf) is never loaded.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the OTEL_* variables
    for exporter in _extra_exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _providers[service_name] = _last_provider = provider
    return provider


def install_tracing(app: Any, service_name: str, engines: list[Engine]) -> TracerProvider | None:
    """Trace the app's requests and its database queries under `service_name`; the provider is
    also `app.state.tracer_provider` (None when tracing is disabled)."""
    provider = tracer_provider(service_name)
    app.state.tracer_provider = provider
    if provider is None:
        return None
    if ids_only(provider):
        # Nothing is recorded, so the instrumentations' attributes, route matching and message
        # wrappers would be paid for nothing: a span context per request is all that is needed.
        app.add_middleware(TraceIdHeaderMiddleware)
        app.add_middleware(TraceContextMiddleware, tracer=provider.get_tracer(__name__))
        return provider
    # No spans for each ASGI message: two per request that say nothing a learner can use.
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, meter_provider=_NO_METRICS,
                                       excluded_urls=UNTRACED_PATHS, exclude_spans=["receive", "send"])
    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    connections = _NO_METRICS.get_meter("sqlalchemy").create_up_down_counter("db.client.connections.usage")
    for engine in dict.fromkeys(engines):  # the reader may be the writer's engine
        EngineTracer(tracer, engine, connections)
    app.add_middleware(TraceIdHeaderMiddleware)
    return provider


def ids_only(provider: TracerProvider | None) -> bool:
    """Whether the provider only hands out trace ids (nothing sampled, nothing exported)."""
    return provider is not None and provider.sampler is ALWAYS_OFF


class TraceContextMiddleware:
    """Trace ids only: the request continues the caller's `traceparent` (or starts a trace) as
    an unsampled span, so the trace id and the next hop's `traceparent` exist."""

    def __init__(self, app: Any, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
                   if name in (b"traceparent", b"tracestate")}
        context = propagate.extract(carrier) if carrier else None
        with self.tracer.start_as_current_span("request", context=context, kind=trace.SpanKind.SERVER,
                                               record_exception=False, set_status_on_exception=False):
            await self.app(scope, receive, send)


def _inject_traceparent(request: httpx.Request) -> None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for name, value in carrier.items():
        request.headers[name] = value  # replaces one a participant sent: the hop is ours


class _PropagatingAsyncTransport(httpx.AsyncBaseTransport):
    """Trace ids only: the hop carries `traceparent`, and no client span is made."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _inject_traceparent(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def current_trace_id() -> str | None:
    """The trace id of the span being served, as 32 hex digits (None when there is none)."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _provider_of_current_span() -> TracerProvider | None:
    """The provider of the service whose span is current (the request being served)."""
    resource = getattr(trace.get_current_span(), "resource", None)  # only recorded spans have one
    if resource is not None:
        return _providers.get(resource.attributes.get(SERVICE_NAME)) or _last_provider
    return _last_provider  # unsampled spans record nothing: any provider makes the same context


_statement_tracers: dict[int, trace.Tracer] = {}


def statement_span(dialect: str, sql: str) -> AbstractContextManager[Any]:
    """A client span for a statement run on the driver's own cursor (`Prepared`: the
    SQLAlchemy instrumentation never sees those), only when the request's spans are recorded:
    unsampled, a hot path pays one check."""
    current = trace.get_current_span()
    if not current.is_recording():
        return nullcontext()
    provider = _provider_of_current_span()
    if provider is None:
        return nullcontext()
    tracer = _statement_tracers.get(id(provider))
    if tracer is None:
        tracer = _statement_tracers[id(provider)] = provider.get_tracer("services.common.prepared")
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "SQL"
    return tracer.start_as_current_span(verb, kind=trace.SpanKind.CLIENT,
                                        attributes={"db.system": dialect, "db.statement": sql})


class _ServedServiceTransport(httpx.BaseTransport):
    """A sync transport whose requests are client spans of the service serving the current
    request, with `traceparent` injected (the httpx instrumentation's own transport inside)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self._traced: dict[int, SyncOpenTelemetryTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        provider = _provider_of_current_span()
        if provider is None or not trace.get_current_span().get_span_context().is_valid:
            return self.inner.handle_request(request)  # not inside a traced request
        if ids_only(provider):
            _inject_traceparent(request)
            return self.inner.handle_request(request)
        traced = self._traced.get(id(provider))
        if traced is None:
            traced = self._traced[id(provider)] = SyncOpenTelemetryTransport(
                self.inner, tracer_provider=provider, meter_provider=_NO_METRICS)
        return traced.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def traced_client(client: httpx.Client) -> httpx.Client:
    """`client`, its calls made client spans of the calling service (traceparent injected).
    httpx has no public way to swap a client's transport; the instrumentation itself wraps it."""
    if tracing_disabled() or isinstance(client._transport, _ServedServiceTransport):
        return client
    client._transport = _ServedServiceTransport(client._transport)
    return client


def traced_transport(transport: httpx.AsyncBaseTransport, provider: TracerProvider | None) -> httpx.AsyncBaseTransport:
    """An async transport (the gateway's, per upstream) whose requests are client spans."""
    if provider is None:
        return transport
    if ids_only(provider):
        return _PropagatingAsyncTransport(transport)
    return AsyncOpenTelemetryTransport(transport, tracer_provider=provider, meter_provider=_NO_METRICS)


class TraceIdHeaderMiddleware:
    """Every answer carries `X-Trace-Id` (the trace to look up in Jaeger or the audit log); one
    a proxied service set is replaced by the gateway's, which is the same trace."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = current_trace_id()
        if trace_id is None:
            await self.app(scope, receive, send)
            return
        header = (b"x-trace-id", trace_id.encode())

        async def send_with_trace_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-trace-id"]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_trace_id)
