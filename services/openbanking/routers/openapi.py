"""What every operation of the bank declares in its OpenAPI document: the statuses it answers
with (each an `OBErrorResponse1`, see errors.py) and the OAuth2 token it needs."""

from __future__ import annotations

from typing import Any

_DESCRIPTIONS = {
    400: "Bad request: the request does not match the schema",
    401: "No access token, or an unknown or expired one",
    403: "The token or consent does not allow this (wrong TPP, status, permission or expiry)",
    404: "No such resource",
    409: "Refused by the resource's state, or an idempotency conflict",
    503: "The bank's ledger is unavailable",
}


def responses(*statuses: int, links: dict[str, Any] | None = None, created: Any = None) -> dict[int | str, Any]:
    """The error statuses, described; with `created`, the 201's model and its OpenAPI links."""
    out: dict[int | str, Any] = {s: {"description": _DESCRIPTIONS[s]} for s in statuses}
    if created is not None:
        out[201] = {"model": created, "description": "Created", **({"links": links} if links else {})}
    return out


def security(kind: str, scope: str) -> dict[str, Any]:
    """`openapi_extra` naming the token: the TPP's (client credentials) or the PSU's (a consent's)."""
    scheme = "TPPOAuth2Security" if kind == "tpp" else "PSUOAuth2Security"
    return {"security": [{scheme: [scope]}]}
