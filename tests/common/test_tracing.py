"""The three tracing modes a user picks by environment: disabled, trace ids only (the default,
nothing exported), and exported over OTLP to the endpoint they name."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.payments.main import PaymentsSettings
from services.payments.main import create_app as create_payments_app
from tests.support.otlp_receiver import otlp_receiver, service_names

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"
NO_SUCH_ACCOUNT = "/accounts/acc_00000000000000000000000zzz"


@pytest.fixture(autouse=True)
def no_tracing_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def test_by_default_every_answer_has_a_trace_id_and_nothing_is_exported(tmp_path: Path) -> None:
    app = create_payments_app(PaymentsSettings(data_dir=tmp_path))
    with TestClient(app) as payments:
        missing = payments.get(NO_SUCH_ACCOUNT, headers={"traceparent": TRACEPARENT})
        fresh = payments.get(NO_SUCH_ACCOUNT)
    assert missing.status_code == 404
    assert missing.json()["trace_id"] == missing.headers["x-trace-id"] == TRACE
    assert fresh.json()["trace_id"] == fresh.headers["x-trace-id"] != TRACE
    # Unsampled: spans carry ids but record nothing, and no exporter is attached.
    provider = app.state.tracer_provider
    assert provider.sampler.get_description() == "AlwaysOffSampler"
    assert provider._active_span_processor._span_processors == ()


def test_disabled_there_is_no_trace_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    app = create_payments_app(PaymentsSettings(data_dir=tmp_path))
    with TestClient(app) as payments:
        missing = payments.get(NO_SUCH_ACCOUNT, headers={"traceparent": TRACEPARENT})
    assert missing.status_code == 404
    assert "trace_id" not in missing.json() and "x-trace-id" not in missing.headers
    assert app.state.tracer_provider is None


def test_with_an_endpoint_spans_are_sent_over_otlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.server_address[1]}")
        app = create_payments_app(PaymentsSettings(data_dir=tmp_path))
        with TestClient(app) as payments:  # leaving it shuts the provider down: the batch is sent
            assert payments.get(NO_SUCH_ACCOUNT, headers={"traceparent": TRACEPARENT}).status_code == 404
        assert service_names(receiver) == {"payments"}
        spans = [s for e in receiver.exports for r in e.resource_spans for ss in r.scope_spans for s in ss.spans]
        (server,) = [s for s in spans if s.name == "GET /accounts/{account_id}"]
        assert server.trace_id.hex() == TRACE
