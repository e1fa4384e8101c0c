"""The webhook rules without a database or a network: types, backoff, disabling, allowed hosts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sandbox.gateway.webhook_rules import (
    AllowList,
    DisablePolicy,
    RetryPolicy,
    host_refusal,
    needs_resolving,
    retry_delay,
    should_disable,
    subscribed,
    url_host,
)

LOOPBACK = AllowList.from_setting("")


def test_a_type_pattern_names_a_type_or_every_type_under_it() -> None:
    assert subscribed("payments.transfer.completed", ["payments.transfer.completed"])
    assert subscribed("payments.transfer.completed", ["payments"])
    assert subscribed("payments.transfer.completed", ["payments.*"])
    assert not subscribed("payments.transfer.completed", ["pay"])
    assert not subscribed("credit.loan.disbursed", ["payments"])
    assert subscribed("credit.loan.disbursed", [])  # no patterns: every event


def test_retries_back_off_exponentially_with_jitter_up_to_a_cap_then_stop() -> None:
    policy = RetryPolicy(base_s=2, cap_s=30, max_attempts=6)
    rng = random.Random(7)
    waits = [retry_delay(policy, n, rng) for n in range(1, 6)]
    schedule = [2, 4, 8, 16, 30]
    assert all(full / 2 <= wait <= full for wait, full in zip(waits, schedule, strict=True))  # type: ignore[operator]
    assert retry_delay(policy, 6) is None  # out of attempts: the delivery has failed


def test_an_endpoint_is_disabled_after_enough_failures_over_long_enough() -> None:
    policy = DisablePolicy(failures=5, over_s=3600)
    since = datetime(2026, 1, 5, 9, tzinfo=UTC)
    assert not should_disable(policy, 5, since, since + timedelta(minutes=10))  # down for a moment
    assert not should_disable(policy, 4, since, since + timedelta(hours=2))
    assert should_disable(policy, 5, since, since + timedelta(hours=1))


def test_loopback_is_allowed_by_default_and_nothing_else() -> None:
    assert host_refusal("127.0.0.1", [], LOOPBACK) is None
    assert host_refusal("::1", [], LOOPBACK) is None
    assert host_refusal("localhost", ["127.0.0.1", "::1"], LOOPBACK) is None
    assert "private address (10.0.0.1)" in host_refusal("10.0.0.1", [], LOOPBACK)  # type: ignore[operator]
    assert host_refusal("93.184.216.34", [], LOOPBACK) is not None
    assert "does not name" in host_refusal("hooks.example.com", [], LOOPBACK)  # type: ignore[operator]


def test_an_unlisted_name_is_refused_without_a_dns_look_up() -> None:
    assert not needs_resolving("hooks.example.com", LOOPBACK)
    assert needs_resolving("localhost", LOOPBACK)
    assert not needs_resolving("127.0.0.1", LOOPBACK)


def test_a_listed_name_that_resolves_inwards_is_refused_unless_that_network_is_listed() -> None:
    listed = AllowList.from_setting("hooks.example.com")
    assert host_refusal("hooks.example.com", ["93.184.216.34"], listed) is None
    assert "private address (10.0.0.5)" in host_refusal("hooks.example.com", ["10.0.0.5"], listed)  # type: ignore[operator]
    assert host_refusal("hooks.example.com", ["10.0.0.5"], AllowList.from_setting("hooks.example.com,10.0.0.0/8")) is None
    assert "does not resolve" in host_refusal("hooks.example.com", [], listed)  # type: ignore[operator]


def test_only_http_urls_without_credentials_name_a_host() -> None:
    assert url_host("http://127.0.0.1:9000/hooks") == ("127.0.0.1", None)
    assert url_host("https://[::1]/h") == ("::1", None)
    assert url_host("ftp://127.0.0.1/")[1] is not None
    assert url_host("http://u:p@127.0.0.1/")[1] is not None
    assert url_host("http://127.0.0.1:notaport/")[1] is not None
    assert url_host("not a url")[1] is not None
