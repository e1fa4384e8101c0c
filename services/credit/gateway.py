"""Credit's calls to Sandbox Bank's API (bank.py), through the gateway with the credit service's
own key; payments is reached with the kit's client (services/common/payments_client.py), over
the same connection pool.

While credit serves a lender, each call names that lender (`X-Sandbox-On-Behalf-Of`): the gateway
counts, limits and screens the movement as the lender's, and payments checks the lender's mandates.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.common.caller import ON_BEHALF_HEADER
from services.common.payments_client import answer_problem, is_final_refusal
from services.common.requestctx import current_request_id


class Refused(Exception):
    """The other side said no; nothing was applied."""

    def __init__(self, status: int, problem: dict[str, Any], body: dict[str, Any] | None = None) -> None:
        super().__init__(problem.get("title", "refused"))
        self.status = status
        self.problem = problem  # with a title and type even when the answer had none
        self.body = problem if body is None else body  # the answer exactly as sent


class Unavailable(Exception):
    """No answer we can trust: the request may or may not have been applied."""


class Gateway:
    def __init__(self, client: httpx.Client, participant_key: str | None, on_behalf_of: str | None = None) -> None:
        self.client = client
        self.participant_key = participant_key
        self.on_behalf_of = on_behalf_of  # the participant credit serves; None: credit on its own account

    def acting_for(self, participant_id: str | None) -> Gateway:
        """The same client and key, every call naming the participant credit acts for."""
        return Gateway(self.client, self.participant_key, participant_id)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.participant_key:
            headers["X-API-Key"] = self.participant_key
        if self.on_behalf_of:
            headers[ON_BEHALF_HEADER] = self.on_behalf_of
        if rid := current_request_id():
            headers["X-Request-ID"] = rid
        return {**headers, **(extra or {})}

    def send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code < 300:
            return response.json() if response.content else {}
        problem, body = answer_problem(response)
        if is_final_refusal(response.status_code, problem):  # the kit's one rule, as for payments
            raise Refused(response.status_code, problem, body)
        raise Unavailable(f"{response.status_code} {problem.get('title')}: {problem.get('detail', '')}")

    def close(self) -> None:
        self.client.close()
