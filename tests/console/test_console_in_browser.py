"""The console in a real headless chromium, against a sandbox launched as `make run` launches it:
a transfer arrives in the live feed with its decision; an open-banking payment's two gateway hops
appear in its sequence diagram with participant, status, decision and receipt; an alert closed
with the keyboard leaves the open queue, and the gateway's API agrees. Waits are bounded, never
timed: each step waits for what the user would see."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from services.common.demo import DEMO_REGULATOR_KEY, WALLET_CO
from tests.console.conftest import Browser, screenshot
from tests.support.stack import Sandbox

WALLET = {"X-API-Key": "sbx_demo_wallet_key"}
REGULATOR = {"X-API-Key": DEMO_REGULATOR_KEY}
TPP = {"X-API-Key": "sbx_demo_tpp_key"}
LI_WEI = "acc_00000000000000000000000001"
ZHANG_MIN = "acc_00000000000000000000000002"
HUTONG_COFFEE = "acc_00000000000000000000000b04"


def _request_id(what: str) -> str:
    return f"req_console_{what}_{uuid.uuid4().hex[:12]}"


def _transfer(gateway: str, request_id: str, amount: str = "8.88", to: str = ZHANG_MIN) -> httpx.Response:
    return httpx.post(f"{gateway}/payments/transfers", headers={**WALLET, "X-Request-ID": request_id}, timeout=30,
                      json={"from_account_id": LI_WEI, "to_account_id": to,
                            "amount": {"amount": amount, "currency": "CNY"}, "description": "seen in the console"})


def _entries(gateway: str, request_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{gateway}/sandbox/audit/entries", params={"request_id": request_id},
                       headers=REGULATOR, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _pay_by_open_banking(gateway: str, request_id: str) -> httpx.Response:
    """The demo TPP pays Hutong Coffee from Wang Fang's account: token, consent, the PSU
    authorises (headless, PKCE), then the payment, sent with `request_id`."""
    initiation = {"InstructionIdentification": "CONSOLE-1", "EndToEndIdentification": "CONSOLE-E2E-1",
                  "InstructedAmount": {"Amount": "12.50", "Currency": "CNY"},
                  "CreditorAccount": {"SchemeName": "UK.OBIE.BBAN", "Identification": HUTONG_COFFEE,
                                      "Name": "Hutong Coffee"},
                  "RemittanceInformation": {"Reference": "Console beans"}}
    risk = {"PaymentContextCode": "PartyToParty"}
    with httpx.Client(base_url=f"{gateway}/open-banking", headers=TPP, timeout=30) as bank:
        token = bank.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": "tpp_demo",
                                                 "client_secret": "sbx_demo_tpp_secret"})
        assert token.status_code == 200, token.text
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        consent = bank.post("/v3.1/pisp/domestic-payment-consents", json={"Data": {"Initiation": initiation}, "Risk": risk},
                            headers={**bearer, "x-idempotency-key": uuid.uuid4().hex})
        assert consent.status_code == 201, consent.text
        consent_id = consent.json()["Data"]["ConsentId"]
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        code = bank.post("/authorize", json={"consent_id": consent_id, "client_id": "tpp_demo",
                                             "code_challenge": challenge, "code_challenge_method": "S256",
                                             "psu_id": "wangfang", "otp": "123456"})
        assert code.status_code in (200, 201), code.text
        granted = bank.post("/oauth2/token", auth=("tpp_demo", "sbx_demo_tpp_secret"), data={
            "grant_type": "authorization_code", "code": code.json()["code"], "code_verifier": verifier})
        assert granted.status_code == 200, granted.text
        return bank.post("/v3.1/pisp/domestic-payments", json={"Data": {"ConsentId": consent_id, "Initiation": initiation},
                                                               "Risk": risk},
                         headers={"Authorization": f"Bearer {granted.json()['access_token']}",
                                  "x-idempotency-key": uuid.uuid4().hex, "X-Request-ID": request_id})


def test_the_service_map_shows_every_process_ready(sandbox: Sandbox, console_url: str, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(console_url + "/")
    for name in ("gateway", "payments", "credit", "advisor", "openbanking"):
        box = page.locator(f'li.box[data-service="{name}"]')
        assert "ready" in box.locator(".state").inner_text()
    # The boxes are refreshed in place: the page says when it last asked.
    page.locator("#map-updated", has_text="checked at").wait_for()
    screenshot(page, "map")
    page.close()


def test_a_transfer_arrives_in_the_live_feed_with_its_decision(sandbox: Sandbox, console_url: str,
                                                               browser: Browser) -> None:
    page = browser.new_page()
    page.goto(console_url + "/feed")
    page.locator("#feed-state", has_text="live").wait_for()
    request_id = _request_id("feed")
    answer = _transfer(sandbox.url, request_id)
    assert answer.status_code == 201, answer.text

    # Both entries stream in without a reload: the intent (sent on) and the outcome (201).
    outcome = page.locator(f'tr[data-request-id="{request_id}"]', has_text="201")
    outcome.wait_for()
    text = outcome.inner_text()
    assert "POST /payments/transfers" in text and "approve" in text and "Demo Wallet Co" in text
    assert "8.88 CNY" in text
    assert "row-approve" in (outcome.get_attribute("class") or "")
    page.locator(f'tr[data-request-id="{request_id}"]', has_text="sent on").wait_for()
    assert page.locator(f'tr[data-request-id="{request_id}"]').count() == 2
    screenshot(page, "feed")

    # Its "journey" link opens its sequence diagram.
    outcome.get_by_role("link").click()
    page.wait_for_url(f"**/requests/{request_id}")
    assert page.locator("li.hop").count() == 1
    page.close()


def test_an_open_banking_payment_shows_both_hops_in_its_sequence_diagram(sandbox: Sandbox, console_url: str,
                                                                        browser: Browser) -> None:
    request_id = _request_id("ob")
    paid = _pay_by_open_banking(sandbox.url, request_id)
    assert paid.status_code == 201, paid.text
    entries = _entries(sandbox.url, request_id)
    # The bank's ledger hop carries the TPP's X-Request-ID: both gateway hops share it.
    assert {e["path"] for e in entries} == {"/open-banking/v3.1/pisp/domestic-payments", "/payments/transfers"}
    outcomes = {e["path"]: e for e in entries if e["phase"] == "outcome"}

    page = browser.new_page()
    page.goto(f"{console_url}/requests/{request_id}")
    hops = page.locator("li.hop")
    assert hops.count() == 2
    initiation, ledger = hops.nth(0).inner_text(), hops.nth(1).inner_text()
    assert "POST /open-banking/v3.1/pisp/domestic-payments" in initiation
    assert "POST /payments/transfers" in ledger
    for text, entry in ((initiation, outcomes["/open-banking/v3.1/pisp/domestic-payments"]),
                        (ledger, outcomes["/payments/transfers"])):
        assert "Demo TPP Ltd" in text  # the participant both hops count for
        assert "201" in text and "approve" in text
        assert f"#{entry['index']} outcome: {entry['hash'][:16]}" in text  # the receipt, as the gateway gave it
    assert "Open-banking service" in ledger  # the bank sent the ledger hop on the TPP's behalf
    assert "Demo TPP Ltd → gateway → open-banking" in initiation
    assert "open-banking → gateway → payments" in ledger
    lifelines = page.locator("svg .lifeline text").all_text_contents()
    assert lifelines == ["Demo TPP Ltd", "gateway", "open-banking", "payments"]
    arrows = page.locator("svg .arrow text").all_text_contents()
    # The ledger hop happens inside the payment: between its call to the bank and the bank's answer.
    assert arrows[0].startswith("1. POST") and arrows[-1] == "1. 201 · approve"
    assert [a for a in arrows if a.startswith("2.")] == arrows[2:6]
    screenshot(page, "request")
    page.close()


def test_closing_an_alert_with_the_keyboard_takes_it_off_the_open_queue(sandbox: Sandbox, console_url: str,
                                                                       browser: Browser) -> None:
    # A transfer to a watch-listed name is blocked, and opens an alert.
    account = httpx.post(f"{sandbox.url}/payments/accounts", headers=WALLET, timeout=30,
                         json={"kind": "personal", "owner_name": "Borys Wexlanow", "currency": "CNY"})
    assert account.status_code == 201, account.text
    blocked = _transfer(sandbox.url, _request_id("alert"), amount="50.00", to=account.json()["id"])
    assert blocked.status_code == 403, blocked.text
    alert_id = blocked.json()["alert_id"]

    page = browser.new_page()
    page.goto(console_url + "/alerts")
    card = page.locator(f'li.alert[data-alert-id="{alert_id}"]')
    assert "sanctions" in card.inner_text() and "block" in card.inner_text()
    screenshot(page, "alerts")

    # Keyboard only: focus the resolution, pick one, tab to the note, type, tab to the button, Enter.
    page.locator(f"#resolution-{alert_id}").focus()
    page.keyboard.press("ArrowDown")  # false positive → suspicious
    page.keyboard.press("Tab")
    page.keyboard.type("name match only; a different person")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Close alert"
    page.keyboard.press("Enter")
    page.locator(".done", has_text=f"{alert_id} closed as suspicious").wait_for()
    assert page.locator(f'li.alert[data-alert-id="{alert_id}"]').count() == 0  # no longer in the open queue

    closed = httpx.get(f"{sandbox.url}/sandbox/alerts/{alert_id}", headers=REGULATOR, timeout=30).json()
    assert closed["status"] == "closed" and closed["resolution"] == "suspicious"
    assert closed["note"] == "name match only; a different person"
    page.goto(console_url + "/alerts?status=closed")
    assert "Closed as suspicious" in page.locator(f'li.alert[data-alert-id="{alert_id}"]').inner_text()
    page.close()


def test_participants_and_integrity_read_the_gateway_and_the_ledger(sandbox: Sandbox, console_url: str,
                                                                   browser: Browser) -> None:
    page = browser.new_page()
    page.goto(console_url + "/participants")
    wallet = page.locator(f'tr[data-participant-id="{WALLET_CO}"]').inner_text()
    activity = httpx.get(f"{sandbox.url}/sandbox/participants/{WALLET_CO}/activity", headers=REGULATOR,
                         timeout=30).json()
    assert "Demo Wallet Co" in wallet
    assert f"{activity['volume']['amount']} of 200000.00 CNY" in wallet  # today's use against the daily limit
    assert "days left" in wallet
    screenshot(page, "participants")

    page.goto(console_url + "/integrity")
    assert page.locator("[data-invariants-ok]").get_attribute("data-invariants-ok") == "true"
    assert page.locator("[data-audit-ok]").get_attribute("data-audit-ok") == "true"
    head = httpx.get(f"{sandbox.url}/sandbox/audit/verify", headers=REGULATOR, timeout=30).json()
    # Reads are not logged, and nothing else runs meanwhile: the head shown is the chain's head.
    assert head["ok"] and page.locator("code.hash").inner_text() == head["head_hash"]
    assert f"{head['size']}" in page.locator("section[aria-labelledby=audit-heading] dd").first.inner_text()
    screenshot(page, "integrity")
    page.close()


def test_every_page_can_be_reached_from_the_keyboard(console_url: str, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(console_url + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    reached = []
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.textContent"))
    assert {"Service map", "Live feed", "Alerts", "Participants", "Integrity"} <= set(reached)
    # The focus ring is drawn (an outline), not left to the browser's faint default.
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.close()


def test_the_events_page_shows_a_transfer_s_event_and_an_endpoint_s_deliveries(sandbox: Sandbox, console_url: str,
                                                                               browser: Browser) -> None:
    class Ok(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        endpoint = httpx.post(f"{sandbox.url}/webhooks/endpoints", headers=WALLET, timeout=30, json={
            "url": f"http://127.0.0.1:{receiver.server_address[1]}/hooks", "event_types": ["payments.transfer"]})
        assert endpoint.status_code == 201, endpoint.text
        sent = _transfer(sandbox.url, _request_id("events"))
        assert sent.status_code == 201, sent.text
        transfer_id = sent.json()["id"]
        deadline = time.monotonic() + 20  # bounded: the relay and the delivery take well under a second
        while time.monotonic() < deadline:
            page_ = httpx.get(f"{sandbox.url}/webhooks/endpoints/{endpoint.json()['id']}/deliveries",
                              headers=WALLET, timeout=30).json()["data"]
            if any(d["status"] == "succeeded" for d in page_):
                break
            time.sleep(0.1)
        page = browser.new_page()
        page.goto(console_url + "/events")
        row = page.locator("tr[data-event-type='payments.transfer.completed']", has_text=transfer_id)
        assert "Demo Wallet Co" in row.inner_text()
        section = page.locator(f"section.endpoint[data-endpoint-id='{endpoint.json()['id']}']")
        assert "succeeded" in section.locator("tr[data-delivery-status='succeeded']").first.inner_text()
        assert "204" in section.inner_text()
        screenshot(page, "events")
        page.close()
    finally:
        receiver.shutdown()
        httpx.delete(f"{sandbox.url}/webhooks/endpoints/{endpoint.json()['id']}", headers=WALLET, timeout=30)
