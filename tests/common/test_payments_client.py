"""The kit's payments client: one exception pair, one rule for which refusals are final."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.common.caller import ON_BEHALF_HEADER
from services.common.money import Money
from services.common.payments_client import (
    PaymentRefused,
    PaymentsClient,
    PaymentsUnavailable,
    is_final_refusal,
)

PROBLEM = "urn:fintech-sandbox:problem:"


def client_answering(status: int, body: Any = None, seen: list[httpx.Request] | None = None) -> PaymentsClient:
    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="oops")

    return PaymentsClient("http://gateway", "key_x", transport=httpx.MockTransport(answer))


def transfer(client: PaymentsClient, **extra: Any) -> dict[str, Any]:
    return client.transfer(from_account="acc_a", to_account="acc_b", amount=Money.of(1234, "CNY"),
                           key="k-1", description="Lesson", on_behalf_of=extra.get("on_behalf_of"),
                           mandate_id=extra.get("mandate_id"))


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 413, 422])
def test_a_4xx_refusal_is_final(status: int) -> None:
    assert is_final_refusal(status, {"type": f"{PROBLEM}insufficient-funds"})


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_not_now_and_server_errors_leave_the_outcome_unknown(status: int) -> None:
    assert not is_final_refusal(status, {"type": f"{PROBLEM}whatever"})


def test_a_key_still_in_flight_is_not_a_refusal() -> None:
    assert not is_final_refusal(409, {"type": f"{PROBLEM}idempotency-key-in-flight"})


def test_transfer_sends_the_key_the_participant_and_the_mandate() -> None:
    seen: list[httpx.Request] = []
    journal = transfer(client_answering(201, {"id": "jrn_1"}, seen), on_behalf_of="ptp_1", mandate_id="mdt_1")
    assert journal == {"id": "jrn_1"}
    request = seen[0]
    assert request.url.path == "/payments/transfers"
    assert request.headers["Idempotency-Key"] == "k-1" and request.headers["X-API-Key"] == "key_x"
    assert request.headers[ON_BEHALF_HEADER] == "ptp_1"
    assert b'"mandate_id":"mdt_1"' in request.content and b'"amount":"12.34"' in request.content


def test_a_final_refusal_carries_the_problem() -> None:
    problem = {"type": f"{PROBLEM}mandate-inactive", "title": "Mandate not live", "status": 403}
    with pytest.raises(PaymentRefused) as refused:
        transfer(client_answering(403, problem))
    assert refused.value.status == 403 and refused.value.slug == "mandate-inactive"
    assert refused.value.body == problem


def test_an_answer_without_a_problem_gets_rfc_defaults() -> None:
    with pytest.raises(PaymentRefused) as refused:
        transfer(client_answering(404))
    assert refused.value.problem == {"title": "Not Found", "type": "about:blank"} and refused.value.body == {}


def test_a_5xx_is_unavailable_with_its_status() -> None:
    with pytest.raises(PaymentsUnavailable) as down:
        transfer(client_answering(503, {"type": f"{PROBLEM}upstream-unavailable", "title": "Down"}))
    assert down.value.status == 503


def test_no_answer_is_unavailable() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = PaymentsClient("http://gateway", None, transport=httpx.MockTransport(fail))
    with pytest.raises(PaymentsUnavailable) as down:
        transfer(client)
    assert down.value.status is None


def test_reads_answer_none_for_an_unknown_account() -> None:
    assert client_answering(404, {"title": "Not Found"}).account("acc_x") is None
    assert client_answering(404, {"title": "Not Found"}).journals("acc_x") == []
