"""The webhook rules that need no database nor network: which event types an endpoint takes,
when a failed delivery is tried again, when an endpoint is disabled, and which hosts the
sandbox delivers to. Tested directly (tests/gateway/test_webhook_rules.py)."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

# -- event types -------------------------------------------------------------------------------

TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$"


def type_matches(event_type: str, pattern: str) -> bool:
    """`payments.transfer.completed` matches itself, `payments.transfer`, `payments` and
    `payments.*`: a pattern names a type or every type under it, never part of a word
    (`pay` does not match `payments.…`)."""
    name = pattern.removesuffix(".*")
    return event_type == name or event_type.startswith(name + ".")


def subscribed(event_type: str, patterns: Sequence[str]) -> bool:
    """An endpoint with no patterns takes every event of its participant."""
    return not patterns or any(type_matches(event_type, p) for p in patterns)


# -- retries -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    base_s: float  # the wait after the first failure, before jitter
    cap_s: float  # no wait longer than this
    max_attempts: int  # after this many failed attempts the delivery has failed


def retry_delay(policy: RetryPolicy, failed_attempts: int, rng: random.Random | None = None) -> float | None:
    """Seconds to wait before the next attempt after `failed_attempts` failures, or None when the
    delivery has run out of attempts. Exponential (base·2^(n-1), capped) with "equal jitter": a
    random half of the wait is taken off, so receivers that fail together are not retried in
    step, and no wait is shorter than half the schedule's."""
    if failed_attempts >= policy.max_attempts:
        return None
    wait = min(policy.cap_s, policy.base_s * 2 ** (failed_attempts - 1))
    return wait / 2 + (rng or random).uniform(0, wait / 2)


@dataclass(frozen=True)
class DisablePolicy:
    failures: int  # consecutive failed attempts …
    over_s: float  # … spanning at least this long (a receiver down for a moment is not disabled)


def should_disable(policy: DisablePolicy, consecutive_failures: int, failing_since: datetime | None,
                   now: datetime) -> bool:
    return (consecutive_failures >= policy.failures and failing_since is not None
            and now - failing_since >= timedelta(seconds=policy.over_s))


# -- where deliveries may go ---------------------------------------------------------------------

# Loopback only unless GATEWAY_WEBHOOK_ALLOWED_HOSTS says otherwise: the sandbox runs on a
# learner's machine, and its receivers (`fintech-sandbox listen`, a test's) are local.
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.0/8", "::1")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowList:
    names: frozenset[str]  # host names, lower case
    networks: tuple[Network, ...]  # addresses and networks (an address is a /32 or /128)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        names, networks = set(), []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    @classmethod
    def from_setting(cls, setting: str) -> AllowList:
        """GATEWAY_WEBHOOK_ALLOWED_HOSTS: comma-separated names, addresses and networks; empty:
        loopback only."""
        entries = [e for e in setting.split(",") if e.strip()]
        return cls.parse(entries or DEFAULT_ALLOWED_HOSTS)

    def names_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.networks)


def url_host(url: str) -> tuple[str | None, str | None]:
    """(host, refusal): the URL's host, or why the URL cannot be a webhook endpoint at all."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return None, "it is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return None, "only http and https URLs can receive webhooks"
    if parts.username is not None or parts.password is not None:
        return None, "credentials in the URL are not allowed: authenticate by the signature"
    if not parts.hostname:
        return None, "it names no host"
    return parts.hostname.lower().rstrip("."), None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def needs_resolving(host: str, allow: AllowList) -> bool:
    """Only a listed name is looked up: an unlisted one is refused without a DNS query."""
    return _address(host) is None and host in allow.names


def host_refusal(host: str, addresses: Sequence[str], allow: AllowList) -> str | None:
    """Why deliveries may not go to `host` (which resolved to `addresses`), or None.

    An address in the URL must be on the list. A name must be on the list, and every address it
    resolves to must be public or itself on the list: a listed name that resolves to a private,
    loopback or link-local address (DNS pointing inwards) is refused unless that address or its
    network is listed too. So private ranges are never reached by surprise."""
    literal = _address(host)
    if literal is not None:
        if allow.names_address(literal):
            return None
        kind = "a private" if not literal.is_global else "an"
        return f"{kind} address ({literal}) that the sandbox's allow-list does not name"
    if host not in allow.names:
        return f"a host ({host}) that the sandbox's allow-list does not name"
    if not addresses:
        return f"a host ({host}) that does not resolve"
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not address.is_global and not allow.names_address(address):
            return f"a host ({host}) that resolves to a private address ({address}) the allow-list does not name"
    return None
