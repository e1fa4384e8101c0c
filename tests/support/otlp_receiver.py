"""A stand-in for an OpenTelemetry collector on loopback: accepts OTLP/HTTP `POST /v1/traces`
and keeps the bodies (protobuf `ExportTraceServiceRequest`). For tests, and for the benchmark's
"tracing exported" figure: `python -m tests.support.otlp_receiver PORT`."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class _Receiver(ThreadingHTTPServer):
    def __init__(self, port: int, keep: bool) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.keep = keep
        self.exports: list[ExportTraceServiceRequest] = []
        self.spans_received = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        export = ExportTraceServiceRequest.FromString(body)
        self.server.spans_received += sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
        if self.server.keep:
            self.server.exports.append(export)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@contextmanager
def otlp_receiver(port: int = 0, keep: bool = True) -> Iterator[_Receiver]:
    """A receiver on 127.0.0.1 (`port` 0: a free one), its address `http://127.0.0.1:<port>`."""
    server = _Receiver(port, keep)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def service_names(receiver: _Receiver) -> set[str]:
    return {a.value.string_value for e in receiver.exports for r in e.resource_spans
            for a in r.resource.attributes if a.key == "service.name"}


if __name__ == "__main__":
    with otlp_receiver(int(sys.argv[1]) if len(sys.argv) > 1 else 4318, keep=False) as receiver:
        print(f"OTLP receiver on http://127.0.0.1:{receiver.server_address[1]}/v1/traces", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print(f"{receiver.spans_received} spans received")
