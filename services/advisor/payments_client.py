"""The advisor's calls to payments, through the gateway with the advisor's own participant key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from services.common.money import format_minor, to_minor
from services.common.requestctx import current_request_id


@dataclass(frozen=True)
class TransferDone:
    journal_id: str
    fee_minor: int


class TransferRefused(Exception):
    """Payments said no (insufficient funds, unknown wallet, currency mismatch…): nothing moved."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.problem = problem


class PaymentsUnavailable(Exception):
    """No answer we can trust (network error, 5xx, in-flight key): the outcome is unknown."""


class PaymentsClient:
    def __init__(self, base_url: str, api_key: str | None, client: httpx.Client | None = None,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._client = client or httpx.Client(timeout=timeout)

    def transfer(self, *, from_account: str, to_account: str, amount_minor: int, currency: str,
                 idempotency_key: str, description: str) -> TransferDone:
        headers = {"Idempotency-Key": idempotency_key}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if request_id := current_request_id():
            headers["X-Request-ID"] = request_id
        body = {
            "from_account_id": from_account,
            "to_account_id": to_account,
            "amount": {"amount": format_minor(amount_minor, currency), "currency": currency},
            "description": description,
        }
        try:
            response = self._client.post(f"{self.base_url}/payments/transfers", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PaymentsUnavailable(f"payments unreachable: {exc}") from exc
        if response.status_code == 201:
            data = response.json()
            fee = data.get("fee") or {"amount": "0", "currency": currency}
            return TransferDone(journal_id=data["id"], fee_minor=to_minor(fee["amount"], fee["currency"]))
        problem = _problem(response)
        slug = str(problem.get("type", "")).rsplit(":", 1)[-1]
        if response.status_code >= 500 or slug == "idempotency-key-in-flight" or response.status_code == 429:
            raise PaymentsUnavailable(f"payments answered {response.status_code}: {problem.get('title')}")
        raise TransferRefused(response.status_code, problem)

    def close(self) -> None:
        self._client.close()


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"title": f"HTTP {response.status_code}", "status": response.status_code}
    return data if isinstance(data, dict) else {"title": str(data), "status": response.status_code}
