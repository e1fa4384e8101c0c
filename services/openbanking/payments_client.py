"""The bank's view of the payments ledger, reached through the gateway with the bank's own key.

Injectable: tests pass a client pointed at a served payments app (or the real gateway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from services.common.caller import ON_BEHALF_HEADER
from services.common.requestctx import current_request_id


class LedgerUnavailable(Exception):
    """The ledger could not be reached or failed: nothing is known about the outcome."""


@dataclass
class LedgerRefusal(Exception):
    """The ledger (or the gateway screening it) refused a movement: it did not happen."""

    status: int
    reason: str


class PaymentsClient:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/") + "/payments", headers=headers,
                                 timeout=timeout, transport=transport)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        request_id = current_request_id()
        if request_id:
            headers["X-Request-ID"] = request_id
        return headers

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self.http.get(path, params=params, headers=self._headers())
        except httpx.HTTPError as exc:
            raise LedgerUnavailable(f"payments unreachable: {exc}") from exc

    def account(self, account_id: str) -> dict[str, Any] | None:
        """The ledger account with its balance, or None when the ledger has no such account."""
        response = self._get(f"/accounts/{account_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise LedgerUnavailable(f"payments answered {response.status_code} for {account_id}")
        return response.json()

    def journals(self, account_id: str) -> list[dict[str, Any]]:
        """Every journal that touched the account, oldest first (all pages)."""
        journals: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            response = self._get(f"/accounts/{account_id}/journals", params)
            if response.status_code == 404:
                return []
            if response.status_code != 200:
                raise LedgerUnavailable(f"payments answered {response.status_code} for journals")
            page = response.json()
            journals.extend(page["data"])
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return journals

    def transfer(self, idempotency_key: str, from_account: str, to_account: str, amount: str,
                 currency: str, description: str | None, on_behalf_of: str | None = None) -> dict[str, Any]:
        """Move money; the same key never moves it twice. Raises LedgerRefusal or LedgerUnavailable.

        `on_behalf_of`: the participant the bank moves it for (a TPP's payment), named to the
        gateway so its limits and screening apply to that participant."""
        body: dict[str, Any] = {"from_account_id": from_account, "to_account_id": to_account,
                                "amount": {"amount": amount, "currency": currency}}
        if description:
            body["description"] = description[:200]
        headers = {"Idempotency-Key": idempotency_key}
        if on_behalf_of:
            headers[ON_BEHALF_HEADER] = on_behalf_of
        try:
            response = self.http.post("/transfers", json=body, headers=self._headers(headers))
        except httpx.HTTPError as exc:
            raise LedgerUnavailable(f"payments unreachable: {exc}") from exc
        if response.status_code in (200, 201):
            return response.json()
        if 400 <= response.status_code < 500 and response.status_code != 429 and not (
            response.status_code == 409 and "idempotency-key-in-flight" in response.text
        ):
            try:
                payload = response.json()
                reason = payload.get("detail") or payload.get("title") or response.text
            except ValueError:
                reason = response.text
            raise LedgerRefusal(response.status_code, str(reason)[:300])
        raise LedgerUnavailable(f"payments answered {response.status_code}")

    def close(self) -> None:
        self.http.close()
