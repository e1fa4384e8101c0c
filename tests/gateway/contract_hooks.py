"""Schemathesis reaches the gateway's own API (/sandbox/...) with the regulator's key."""

from __future__ import annotations


def prepare(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"X-API-Key": app.state.settings.regulator_key}


# In process the gateway has no services behind it: its reset can only answer 503
# `service-unreachable` (a server error to schemathesis). tests/platform/test_reset.py resets a
# gateway with the four services behind it, and one started as `make run` does.
EXCLUDED_OPERATIONS = ("reset_sandbox",)
