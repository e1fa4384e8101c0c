"""The one client every service uses to reach payments: through the gateway, with the caller's
own participant key, each call naming the participant it acts for.

Contract:

- `PaymentsClient(base_url, api_key)`: `base_url` is the gateway (or a payments service, in
  tests); paths are payments' own (`/payments/transfers`). `PaymentsClient.over(http, api_key)`
  wraps an httpx client a caller already has (its base URL the gateway).
- `transfer(...)` moves money under an Idempotency-Key and returns the journal as payments sent
  it. It raises one of two exceptions, and nothing else:
  - `PaymentRefused`: final. Nothing moved, and the same request under the same key will be
    refused again: record the refusal, and give another attempt a new key.
  - `PaymentsUnavailable`: the outcome is unknown; the money may or may not have moved. Retry
    with the *same* key: payments can never apply it twice.
- Reads (`account`, `journals`) raise `PaymentsUnavailable` for anything but an answer.

**The rule for final refusals** (`is_final_refusal`): a 4xx answer is final, except those
that mean "not now" rather than "no": 408 Request Timeout, 425 Too Early, 429 Too Many
Requests, and 409 `idempotency-key-in-flight` (the first request with this key is still
running). Those, a 5xx (503 unavailable, 504 `deadline-passed`), a network error or a timeout
leave the outcome unknown.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.common.caller import ON_BEHALF_HEADER
from services.common.money import Money
from services.common.requestctx import current_request_id
from services.common.tracing import traced_client

NOT_NOW = frozenset({408, 425, 429})  # 4xx answers that say "retry later", not "no"
IN_FLIGHT = "idempotency-key-in-flight"


def problem_slug(problem: dict[str, Any]) -> str:
    """The last segment of a problem's `type` (`urn:…:problem:mandate-inactive` → `mandate-inactive`)."""
    return str(problem.get("type", "")).rsplit(":", 1)[-1]


def is_final_refusal(status: int, problem: dict[str, Any]) -> bool:
    """Whether an answer is a final refusal: see the module's rule."""
    return 400 <= status < 500 and status not in NOT_NOW and problem_slug(problem) != IN_FLIGHT


class PaymentRefused(Exception):
    """Final: payments (or the gateway in front of it) said no. Nothing moved, and the same
    request under the same key is refused again."""

    def __init__(self, status: int, problem: dict[str, Any], body: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.status = status
        self.problem = problem  # the answer, with a `type` and `title` even when it had none
        self.body = body  # the answer exactly as sent ({} when it was not a JSON object)

    @property
    def slug(self) -> str:
        return problem_slug(self.problem)


class PaymentsUnavailable(Exception):
    """No answer we can trust (a network error, a timeout, a 5xx, a "not now"): the outcome is
    unknown. Retry with the same key."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the answer's status, None when there was no answer


def answer_problem(response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
    """An error answer as (problem, body): the body exactly as sent ({} unless a JSON object),
    and the problem with RFC 9457's defaults for a missing `type` and `title`."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    problem = {**body}
    problem.setdefault("title", response.reason_phrase or "Error")
    problem.setdefault("type", "about:blank")
    return problem, body


def refusal_or_unavailable(response: httpx.Response) -> PaymentRefused | PaymentsUnavailable:
    """The exception for an error answer, by the rule for final refusals."""
    problem, body = answer_problem(response)
    if is_final_refusal(response.status_code, problem):
        return PaymentRefused(response.status_code, problem, body)
    return PaymentsUnavailable(f"payments answered {response.status_code} {problem.get('title')}: "
                               f"{problem.get('detail') or ''}".rstrip(": "), response.status_code)


class PaymentsClient:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        # Each call a client span of the calling service, traceparent on the hop to the gateway.
        self.http = traced_client(httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport))
        self.api_key = api_key

    @classmethod
    def over(cls, http: httpx.Client, api_key: str | None) -> PaymentsClient:
        """A client on an httpx client the caller already has (its base URL the gateway)."""
        client = cls.__new__(cls)
        client.http, client.api_key = traced_client(http), api_key
        return client

    def headers(self, on_behalf_of: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The caller's key, the request id, and the participant the call is made for."""
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if on_behalf_of:
            headers[ON_BEHALF_HEADER] = on_behalf_of
        if request_id := current_request_id():
            headers["X-Request-ID"] = request_id
        return {**headers, **(extra or {})}

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PaymentsUnavailable(f"payments unreachable: {type(exc).__name__}: {exc}") from exc

    def transfer(
        self, *, from_account: str, to_account: str, amount: Money, key: str, description: str | None,
        on_behalf_of: str | None, mandate_id: str | None = None,
    ) -> dict[str, Any]:
        """POST /payments/transfers under the Idempotency-Key `key`: the journal, as payments sent it.

        `on_behalf_of`: the participant the money moves for (None: the caller itself), so the
        gateway counts, limits and screens it as theirs; `mandate_id`: the payer's owner's
        mandate to that participant, when the payer is not its own account."""
        body: dict[str, Any] = {"from_account_id": from_account, "to_account_id": to_account,
                                "amount": amount.model_dump()}
        if description:
            body["description"] = description[:200]
        if mandate_id:
            body["mandate_id"] = mandate_id
        response = self._send("POST", "/payments/transfers", json=body,
                              headers=self.headers(on_behalf_of, {"Idempotency-Key": key}))
        if response.is_success:
            return response.json()
        raise refusal_or_unavailable(response)

    def account(self, account_id: str, on_behalf_of: str | None = None) -> dict[str, Any] | None:
        """The ledger account with its balance, or None when payments has no such account."""
        response = self._send("GET", f"/payments/accounts/{account_id}", headers=self.headers(on_behalf_of))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PaymentsUnavailable(f"payments answered {response.status_code} for {account_id}",
                                      response.status_code)
        return response.json()

    def journals(self, account_id: str, on_behalf_of: str | None = None) -> list[dict[str, Any]]:
        """Every journal that touched the account, oldest first (all pages); [] for no such account."""
        journals: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            response = self._send("GET", f"/payments/accounts/{account_id}/journals", params=params,
                                  headers=self.headers(on_behalf_of))
            if response.status_code == 404:
                return []
            if response.status_code != 200:
                raise PaymentsUnavailable(f"payments answered {response.status_code} for journals",
                                          response.status_code)
            page = response.json()
            journals.extend(page["data"])
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return journals

    def close(self) -> None:
        self.http.close()
