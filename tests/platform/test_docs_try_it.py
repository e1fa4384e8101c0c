"""The gateway's /docs used as a participant uses it, in a real headless Chromium (Debian's
`chromium`, driven by the playwright package; its own browser download is never used): a sandbox
started as `make run` starts it, on ports moved by an offset; the participant's contract renders,
Authorize takes the demo wallet's key, and "Try it out" of a transfer answers 201. The API then
shows the money moved and the gateway's audit log holding the call, and no request of the page
left 127.0.0.1 (host names do not even resolve, as in an offline classroom)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.common.demo import DEMO_REGULATOR_KEY, WALLET_CO
from tests.support.ports import free_port_offset
from tests.support.stack import Sandbox, sandbox_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WALLET_KEY = "sbx_demo_wallet_key"  # services/common/demo.py: Demo Wallet Co holds both accounts
LI_WEI = "acc_00000000000000000000000001"
ZHANG_MIN = "acc_00000000000000000000000002"
AMOUNT = "12.34"
IDEMPOTENCY_KEY = "docs-try-it-transfer-1"
RENDER_TIMEOUT_MS = 90_000  # the contract is large; a loaded CI machine takes a while to draw it
STEP_TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: `apt-get install chromium` "
                       "(.ci/run installs it when absent)"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher's clean-up relies on Linux"),
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    yield from sandbox_for(tmp_path_factory.mktemp("docs-try-it"), free_port_offset())


def _is_local(url: str) -> bool:
    return urlsplit(url).hostname == "127.0.0.1"


def _balance(gateway: str, account_id: str) -> Decimal:
    answer = httpx.get(f"{gateway}/payments/accounts/{account_id}", headers={"X-API-Key": WALLET_KEY}, timeout=10)
    assert answer.status_code == 200, answer.text
    return Decimal(answer.json()["balance"]["amount"])


def _transfer_body() -> str:
    return ('{"from_account_id": "%s", "to_account_id": "%s", "amount": {"amount": "%s", "currency": "CNY"}, '
            '"description": "sent from /docs"}' % (LI_WEI, ZHANG_MIN, AMOUNT))


def test_an_authorised_try_it_out_of_a_transfer_moves_money_through_the_gateway(sandbox: Sandbox) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    gateway = sandbox.url
    operations = sum(1 for item in httpx.get(f"{gateway}/sandbox.json", timeout=30).json()["paths"].values()
                     for method in item if method in {"get", "put", "post", "delete", "patch"})
    before = {account: _balance(gateway, account) for account in (LI_WEI, ZHANG_MIN)}
    requested: list[str] = []
    blocked: list[str] = []
    started = time.monotonic()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, timeout=STEP_TIMEOUT_MS,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"])
        try:
            context = browser.new_context()
            context.set_default_timeout(STEP_TIMEOUT_MS)
            context.on("request", lambda request: requested.append(request.url))

            def refuse(route: Any) -> None:  # anything bound elsewhere never goes out
                blocked.append(route.request.url)
                route.abort()

            context.route(lambda url: not _is_local(url), refuse)
            page = context.new_page()
            page.goto(f"{gateway}/docs")

            # The participant's contract renders: every operation, a payments and a credit one among them.
            transfer = page.locator(".opblock-post", has=page.locator('[data-path="/payments/transfers"]'))
            transfer.wait_for(timeout=RENDER_TIMEOUT_MS)
            credit = page.locator(".opblock-post", has=page.locator('[data-path="/credit/applications"]'))
            assert credit.is_visible()
            assert page.locator(".opblock").count() == operations
            rendered_s = time.monotonic() - started

            # Authorize with the demo wallet's key.
            page.locator(".auth-wrapper button.authorize").click()
            api_key = page.locator(".auth-container", has=page.locator("h4", has_text="ApiKey"))
            api_key.locator("input").fill(WALLET_KEY)
            api_key.locator("button.authorize").click()
            api_key.locator("button", has_text="Logout").wait_for()
            page.locator(".dialog-ux .close-modal").click()

            # Try it out: the transfer, with an idempotency key (optional, but what a participant sends).
            transfer.locator(".opblock-summary").click()
            transfer.locator("button.try-out__btn").click()
            transfer.locator('tr[data-param-name="Idempotency-Key"] input').fill(IDEMPOTENCY_KEY)
            transfer.locator("textarea.body-param__text").fill(_transfer_body())
            with page.expect_response(lambda r: urlsplit(r.url).path == "/payments/transfers"
                                      and r.request.method == "POST") as answered:
                transfer.locator("button.execute").click()
            response = answered.value
            shown = transfer.locator(".live-responses-table tr.response .response-col_status")
            shown.wait_for()
            assert shown.inner_text().strip() == "201", transfer.locator(".live-responses-table").inner_text()
            assert response.status == 201
            assert response.request.headers["x-api-key"] == WALLET_KEY
            assert _is_local(response.url) and response.url.startswith(gateway)  # the served server URL, offset and all
            journal = response.json()
            request_id = response.headers["x-request-id"]
        finally:
            browser.close()

    # The API agrees: the money moved, and the gateway's audit log holds the call.
    assert _balance(gateway, LI_WEI) == before[LI_WEI] - Decimal(AMOUNT)
    assert _balance(gateway, ZHANG_MIN) == before[ZHANG_MIN] + Decimal(AMOUNT)
    entries = httpx.get(f"{gateway}/sandbox/audit/entries", params={"request_id": request_id},
                        headers={"X-API-Key": DEMO_REGULATOR_KEY}, timeout=10).json()["data"]
    call = [e for e in entries if e["method"] == "POST" and e["path"] == "/payments/transfers" and e["status"] == 201]
    assert len(call) == 1, entries
    assert call[0]["participant_id"] == WALLET_CO and call[0]["decision"] == "approve"
    assert call[0]["idempotency_key"] == IDEMPOTENCY_KEY and call[0]["amount"] == {"amount": AMOUNT, "currency": "CNY"}
    assert (call[0]["payer"], call[0]["payee"]) == (LI_WEI, ZHANG_MIN)
    replay = httpx.post(f"{gateway}/payments/transfers", content=_transfer_body(), timeout=10, headers={
        "X-API-Key": WALLET_KEY, "Idempotency-Key": IDEMPOTENCY_KEY, "Content-Type": "application/json"})
    assert replay.status_code == 201 and replay.json()["id"] == journal["id"]  # the same transfer, not a second one
    assert _balance(gateway, LI_WEI) == before[LI_WEI] - Decimal(AMOUNT)

    # Nothing the page asked for left the machine.
    assert blocked == []
    assert requested and all(_is_local(url) for url in requested), sorted(set(requested))
    print(f"/docs rendered in {rendered_s:.1f} s; the whole browser session took {time.monotonic() - started:.1f} s")
