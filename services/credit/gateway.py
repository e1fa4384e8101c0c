"""Calls to other services, always through the gateway with the credit service's own key."""

from __future__ import annotations

from typing import Any

import httpx

from services.common.money import Money
from services.common.requestctx import current_request_id

# Statuses after which payments certainly did not apply the request; anything else (a timeout,
# a 5xx, a key still in flight) leaves the outcome unknown and is retried with the same key.
DEFINITE_REFUSALS = {400, 401, 402, 403, 404, 409, 413, 422}


class Refused(Exception):
    """The other side said no; nothing was applied."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("title", "refused"))
        self.status = status
        self.problem = problem


class Unavailable(Exception):
    """No answer we can trust: the request may or may not have been applied."""


class Gateway:
    def __init__(self, client: httpx.Client, participant_key: str | None) -> None:
        self.client = client
        self.participant_key = participant_key

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.participant_key:
            headers["X-API-Key"] = self.participant_key
        if rid := current_request_id():
            headers["X-Request-ID"] = rid
        return {**headers, **(extra or {})}

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code < 300:
            return response.json()
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        problem.setdefault("title", response.reason_phrase or "Error")
        problem.setdefault("type", "about:blank")
        if response.status_code in DEFINITE_REFUSALS and problem.get("type", "").rsplit(":", 1)[-1] != (
            "idempotency-key-in-flight"
        ):
            raise Refused(response.status_code, problem)
        raise Unavailable(f"{response.status_code} {problem.get('title')}: {problem.get('detail', '')}")

    def transfer(
        self, *, from_account_id: str, to_account_id: str, amount: Money, description: str, key: str
    ) -> dict[str, Any]:
        """POST /payments/transfers; the key makes a retry safe."""
        return self._send(
            "POST",
            "/payments/transfers",
            json={"from_account_id": from_account_id, "to_account_id": to_account_id,
                  "amount": amount.model_dump(), "description": description},
            headers=self._headers({"Idempotency-Key": key}),
        )

    def account_transactions(self, access_token: str, account_id: str, since: str) -> list[dict[str, Any]]:
        """OBIE AISP: every page of the consented account's transactions since `since`."""
        transactions: list[dict[str, Any]] = []
        page, pages = 1, 1
        while page <= min(pages, 40):
            body = self._send(
                "GET",
                f"/open-banking/v3.1/aisp/accounts/{account_id}/transactions",
                params={"fromBookingDateTime": since, "page": page},
                headers=self._headers({"Authorization": f"Bearer {access_token}"}),
            )
            transactions += body.get("Data", {}).get("Transaction", [])
            pages = int(body.get("Meta", {}).get("TotalPages", 1))
            page += 1
        return transactions

    def close(self) -> None:
        self.client.close()
