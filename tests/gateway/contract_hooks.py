"""Schemathesis reaches the gateway's own API (/sandbox/...) with the regulator's key."""

from __future__ import annotations


def prepare(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"X-API-Key": app.state.settings.regulator_key}
