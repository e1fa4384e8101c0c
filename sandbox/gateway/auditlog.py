"""The tamper-evident audit log: a SHA-256 hash chain over every entry.

hash_i = SHA-256(hash_{i-1} ‖ canonical JSON of entry i's fields), hash_{-1} = 64 zeros.
Editing, deleting or reordering a stored entry breaks the chain at that entry; `verify_chain`
names the first one. A receipt (index, hash) handed to a participant pins the log up to that
entry: a log rewritten later cannot reproduce the receipt's hash. Truncating the tail is only
visible against a head or receipt published earlier, as in Certificate Transparency.

Every append seals on the log's true head: under the log lock (shared.py) the gateway reads the
entries committed since its last one, which are other replicas' if any, then writes one row.
So the hot path computes one hash and writes one row, and replicas on one database make one
chain, never a fork.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64

# The fields the hash covers, in order. Changing this list is a new log format.
HASHED_FIELDS: tuple[str, ...] = (
    "idx", "at", "request_id", "participant_id", "method", "path", "service", "operation",
    "status", "latency_us", "decision", "score", "rules", "ruleset_version", "limit_name",
    "amount", "currency", "value_minor", "payer", "payee", "customer", "card_last4", "error",
    "alert_id",
)


# Fields added later, hashed after the others only when set: entries written before they
# existed (or without them) keep their hashes, and setting or clearing one breaks the entry.
OPTIONAL_HASHED_FIELDS: tuple[str, ...] = ("counts", "phase", "intent_idx", "idempotency_key", "fingerprint",
                                           "deadline_ms", "via", "epoch", "trace_id")


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    values = [fields.get(f) for f in HASHED_FIELDS]
    values += [[f, fields[f]] for f in OPTIONAL_HASHED_FIELDS if fields.get(f) is not None]
    canonical = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}|{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    index: int
    reason: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    size: int
    head_hash: str
    first_broken: ChainBreak | None


def verify_chain(rows: Iterable[Mapping[str, Any]]) -> Verification:
    """Walk the log in index order; the first entry whose index, link or hash is wrong breaks it."""
    expected_idx = 0
    prev = GENESIS
    for row in rows:
        idx = row["idx"]
        if idx != expected_idx:
            return Verification(False, expected_idx, prev, ChainBreak(
                expected_idx, f"entry {expected_idx} is missing (next stored entry is {idx})"))
        if row["prev_hash"] != prev:
            return Verification(False, idx, prev, ChainBreak(
                idx, "its prev_hash does not match the hash of the entry before it"))
        recomputed = entry_hash(prev, row)
        if recomputed != row["hash"]:
            return Verification(False, idx, prev, ChainBreak(
                idx, "its contents do not match its hash (the entry was edited)"))
        prev = row["hash"]
        expected_idx += 1
    return Verification(True, expected_idx, prev, None)


class ChainHead:
    """The next index and the last hash: the only state an append needs."""

    def __init__(self, next_idx: int = 0, last_hash: str = GENESIS) -> None:
        self.next_idx = next_idx
        self.last_hash = last_hash

    def seal(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Give `fields` the next index and its chained hash, and advance the head."""
        fields["idx"] = self.next_idx
        fields["prev_hash"] = self.last_hash
        fields["hash"] = entry_hash(self.last_hash, fields)
        self.next_idx += 1
        self.last_hash = fields["hash"]
        return fields

    def rewind(self, fields: dict[str, Any]) -> None:
        """Undo `seal` when the row could not be written."""
        self.next_idx = fields["idx"]
        self.last_hash = fields["prev_hash"]
