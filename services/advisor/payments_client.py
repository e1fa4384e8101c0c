"""The advisor's calls to payments, through the gateway with the advisor's own participant key,
each naming the participant it serves (the gateway counts, limits and screens the hop as theirs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from services.common.caller import ON_BEHALF_HEADER
from services.common.money import format_minor, to_minor
from services.common.requestctx import current_request_id


@dataclass(frozen=True)
class TransferDone:
    journal_id: str
    fee_minor: int


class TransferRefused(Exception):
    """Payments or the gateway said no (insufficient funds, unknown wallet, no mandate, over a
    limit…): final, nothing moved."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.problem = problem

    @property
    def slug(self) -> str:
        return str(self.problem.get("type", "")).rsplit(":", 1)[-1]


class PaymentsUnavailable(Exception):
    """No answer we can trust (network error, 5xx, in-flight key): the outcome is unknown."""


class PaymentsClient:
    def __init__(self, base_url: str, api_key: str | None, client: httpx.Client | None = None,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._client = client or httpx.Client(timeout=timeout)

    def transfer(self, *, from_account: str, to_account: str, amount_minor: int, currency: str,
                 idempotency_key: str, description: str, on_behalf_of: str | None,
                 mandate_id: str | None = None) -> TransferDone:
        """`on_behalf_of`: the participant served (None for a direct caller); `mandate_id`: the
        payer's owner's mandate to it, needed when the payer is not that participant's own."""
        headers = {"Idempotency-Key": idempotency_key}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if request_id := current_request_id():
            headers["X-Request-ID"] = request_id
        if on_behalf_of:
            headers[ON_BEHALF_HEADER] = on_behalf_of
        body: dict[str, Any] = {
            "from_account_id": from_account,
            "to_account_id": to_account,
            "amount": {"amount": format_minor(amount_minor, currency), "currency": currency},
            "description": description,
        }
        if mandate_id:
            body["mandate_id"] = mandate_id
        try:
            response = self._client.post(f"{self.base_url}/payments/transfers", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PaymentsUnavailable(f"payments unreachable: {exc}") from exc
        if response.status_code == 201:
            data = response.json()
            fee = data.get("fee") or {"amount": "0", "currency": currency}
            return TransferDone(journal_id=data["id"], fee_minor=to_minor(fee["amount"], fee["currency"]))
        refused = TransferRefused(response.status_code, _problem(response))
        if response.status_code >= 500 or refused.slug == "idempotency-key-in-flight" or response.status_code == 429:
            raise PaymentsUnavailable(f"payments answered {response.status_code}: {refused.problem.get('title')}")
        raise refused

    def close(self) -> None:
        self._client.close()


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"title": f"HTTP {response.status_code}", "status": response.status_code}
    return data if isinstance(data, dict) else {"title": str(data), "status": response.status_code}
