"""Opaque, prefixed, URL-safe ids that sort roughly by creation time (acc_…, tr_…)."""

from __future__ import annotations

import secrets
import time

# Crockford's base32, lower case: no i, l, o, u, so ids read aloud without ambiguity.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_BODY_LENGTH = 26  # the part after `prefix_`; it sorts by creation time
ID_BODY_PATTERN = "[0-9a-hjkmnp-tv-z]{26}"


def new_id(prefix: str) -> str:
    """`prefix_` + 10 chars of millisecond time + 16 random chars (a lower-case ULID)."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def id_pattern(prefix: str) -> str:
    """The regular expression an id with this prefix matches, for path and body validation."""
    return f"^{prefix}_{ID_BODY_PATTERN}$"
