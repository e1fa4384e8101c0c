"""Signed webhooks: a participant's endpoint receives its events signed as Standard Webhooks
says, a failing receiver is retried with backoff and disabled after repeated failure, a
delivery can be sent again, a secret rotated, and only allowed hosts receive anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.common.clock import frozen_clock
from tests.gateway.conftest import REGULATOR, build_gateway
from tests.gateway.events_world import FAST_WEBHOOKS, EventsWorld, Receiver, receiver, wait_for, world  # noqa: F401
from tests.gateway.outbox_service import outbox_service


def test_a_registered_endpoint_receives_a_delivery_that_verifies(world: EventsWorld, receiver: Receiver) -> None:
    firm_id, key = world.admit()
    endpoint = world.register(key, receiver.url, event_types=["lesson.parcel"])
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
    parcel = world.send_parcel(key)
    [delivery] = wait_for(lambda: receiver.received, "a delivery")
    payload = Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers)
    assert (payload["type"], payload["subject_id"], payload["participant_id"]) == ("lesson.parcel.sent", parcel, firm_id)
    assert delivery.headers["webhook-id"] == payload["id"]
    with pytest.raises(WebhookVerificationError):  # another secret does not verify it
        Webhook("whsec_" + "A" * 32).verify(delivery.body, delivery.headers)
    # The secret is shown once: reading the endpoint back never shows it.
    assert "secret" not in world.client.get(f"/webhooks/endpoints/{endpoint['id']}", headers={"X-API-Key": key}).json()
    [logged] = wait_for(lambda: [d for d in world.deliveries(key, endpoint["id"]) if d["status"] == "succeeded"],
                        "the delivery logged")
    assert logged["attempts"][0]["status_code"] == 200 and logged["attempts"][0]["latency_ms"] >= 0


def test_an_endpoint_receives_only_the_types_it_asked_for(world: EventsWorld, receiver: Receiver) -> None:
    _, key = world.admit()
    world.register(key, receiver.url, event_types=["lesson.parcel.delivered"])
    world.send_parcel(key)
    world.wait_for_events(key, 1)
    world.client.post("/sandbox/clock/advance", headers=REGULATOR, json={"seconds": 3 * 86400})
    [delivery] = wait_for(lambda: receiver.received, "a delivery")
    assert delivery.json["type"] == "lesson.parcel.delivered"


def test_another_participants_events_are_not_delivered_to_an_endpoint(world: EventsWorld, receiver: Receiver) -> None:
    _, mine = world.admit("Mine")
    _, theirs = world.admit("Theirs")
    world.register(mine, receiver.url)
    world.send_parcel(theirs)
    world.send_parcel(mine)
    wait_for(lambda: receiver.received, "a delivery")
    world.wait_for_events(theirs, 1)
    assert [r.json["participant_id"] for r in receiver.received] == [world.events(mine)["data"][0]["participant_id"]]


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(world: EventsWorld) -> None:
    flaky = Receiver(answers=[500, 503, 200]).start()
    try:
        _, key = world.admit()
        endpoint = world.register(key, flaky.url)
        world.send_parcel(key)
        [delivery] = wait_for(lambda: [d for d in world.deliveries(key, endpoint["id"]) if d["status"] == "succeeded"],
                              "the third attempt to succeed")
    finally:
        flaky.stop()
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
    # Every attempt is the same message: one webhook-id, so the receiver can deduplicate.
    assert len({r.headers["webhook-id"] for r in flaky.received}) == 1
    waits = [(b["at"], a["at"]) for a, b in zip(delivery["attempts"], delivery["attempts"][1:], strict=False)]
    assert all(later > earlier for later, earlier in waits)


def test_an_endpoint_failing_again_and_again_is_disabled_and_can_be_re_enabled(tmp_path: Path) -> None:
    down = Receiver(answers=[500]).start()
    service_app = outbox_service(tmp_path / "lesson", frozen_clock())
    app = build_gateway(tmp_path / "gateway", frozen_clock(), {"payments": httpx.ASGITransport(app=service_app)},
                        **FAST_WEBHOOKS, webhook_disable_after_failures=3, webhook_disable_after_s=0)
    try:
        with TestClient(service_app) as service, TestClient(app) as client:
            world = EventsWorld(client, service, frozen_clock())
            firm_id, key = world.admit()
            endpoint = world.register(key, down.url)
            world.send_parcel(key)
            disabled = wait_for(lambda: (e := client.get(f"/webhooks/endpoints/{endpoint['id']}",
                                                         headers={"X-API-Key": key}).json())["status"] == "disabled" and e,
                                "the endpoint disabled")
            assert disabled["consecutive_failures"] == 3
            assert disabled["disabled_reason"].startswith("3 consecutive failed deliveries")
            [entry] = [e for e in client.get("/sandbox/audit/entries", headers=REGULATOR, params={"limit": 100}).json()["data"]
                       if (e["operation"] or "").startswith("webhook endpoint disabled")]
            assert entry["participant_id"] == firm_id
            [delivery] = world.deliveries(key, endpoint["id"])
            refused = client.post(f"/webhooks/deliveries/{delivery['id']}/redeliver", headers={"X-API-Key": key})
            assert refused.status_code == 409 and refused.json()["type"].endswith("webhook-endpoint-disabled")
            down.answers[:] = [200]
            enabled = client.patch(f"/webhooks/endpoints/{endpoint['id']}", headers={"X-API-Key": key},
                                   json={"enabled": True})
            assert enabled.json()["status"] == "enabled" and enabled.json()["consecutive_failures"] == 0
            # Its pending delivery resumes once it is enabled again.
            wait_for(lambda: world.deliveries(key, endpoint["id"])[0]["status"] == "succeeded", "the delivery resumed")
    finally:
        down.stop()


def test_a_delivery_can_be_sent_again(world: EventsWorld, receiver: Receiver) -> None:
    _, key = world.admit()
    endpoint = world.register(key, receiver.url)
    world.send_parcel(key)
    [delivery] = wait_for(lambda: [d for d in world.deliveries(key, endpoint["id"]) if d["status"] == "succeeded"],
                          "the first delivery")
    again = world.client.post(f"/webhooks/deliveries/{delivery['id']}/redeliver", headers={"X-API-Key": key})
    assert again.status_code == 202 and again.json()["status"] == "pending"
    wait_for(lambda: len(receiver.received) == 2, "the redelivery")
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body
    assert len(world.deliveries(key, endpoint["id"])[0]["attempts"]) == 2


def test_during_a_rotation_both_secrets_verify_then_only_the_new_one(world: EventsWorld, receiver: Receiver) -> None:
    _, key = world.admit()
    endpoint = world.register(key, receiver.url)
    rotated = world.client.post(f"/webhooks/endpoints/{endpoint['id']}/rotate-secret", headers={"X-API-Key": key},
                                json={"grace_seconds": 3600})
    assert rotated.status_code == 200 and rotated.json()["secret"] != endpoint["secret"]
    assert rotated.json()["previous_secret_until"] is not None
    world.send_parcel(key)
    [delivery] = wait_for(lambda: receiver.received, "a delivery")
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    Webhook(endpoint["secret"]).verify(delivery.body, delivery.headers)
    Webhook(rotated.json()["secret"]).verify(delivery.body, delivery.headers)
    # Rotated with no grace: the old secret stops signing at once.
    newest = world.client.post(f"/webhooks/endpoints/{endpoint['id']}/rotate-secret", headers={"X-API-Key": key},
                               json={"grace_seconds": 0}).json()["secret"]
    world.send_parcel(key)
    wait_for(lambda: len(receiver.received) == 2, "a second delivery")
    later = receiver.received[1]
    Webhook(newest).verify(later.body, later.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(rotated.json()["secret"]).verify(later.body, later.headers)


@pytest.mark.parametrize("url", ["http://10.0.0.1/hooks", "http://192.168.1.20:8080/hooks",
                                 "http://169.254.169.254/latest/meta-data", "http://93.184.216.34/hooks",
                                 "http://hooks.example.com/hooks", "ftp://127.0.0.1/hooks",
                                 "http://user:pw@127.0.0.1/hooks"])
def test_a_url_the_sandbox_does_not_allow_is_refused(world: EventsWorld, url: str) -> None:
    firm_id, key = world.admit()
    refused = world.client.post("/webhooks/endpoints", headers={"X-API-Key": key}, json={"url": url})
    assert refused.status_code in (403, 422), refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    # A well-formed URL on a host the sandbox does not allow is refused by policy (403); one that is
    # no http(s) URL at all fails validation (422).
    assert refused.json()["type"].endswith("webhook-url-not-allowed" if refused.status_code == 403 else "validation-error")
    assert world.client.get("/webhooks/endpoints", headers={"X-API-Key": key}).json()["data"] == []
    entries = world.client.get("/sandbox/audit/entries", headers=REGULATOR,
                               params={"participant_id": firm_id}).json()["data"]
    entry = entries[0] if entries else None
    if refused.status_code == 403:
        assert (entry["operation"], entry["status"]) == ("create_webhook_endpoint", 403)


def test_a_listed_host_is_allowed_and_a_private_address_still_needs_listing(tmp_path: Path) -> None:
    app = build_gateway(tmp_path, frozen_clock(), webhook_allowed_hosts="localhost, 10.1.0.0/16")
    with TestClient(app) as client:
        key = "sbx_demo_wallet_key"
        made = client.post("/webhooks/endpoints", headers={"X-API-Key": key}, json={"url": "http://10.1.2.3/hooks"})
        assert made.status_code == 201, made.text
        # localhost is listed by name but resolves to loopback, which the list no longer names.
        refused = client.post("/webhooks/endpoints", headers={"X-API-Key": key}, json={"url": "http://localhost:9/h"})
        assert refused.status_code == 403 and "private address" in refused.json()["detail"]


def test_webhook_changes_are_in_the_audit_log(world: EventsWorld, receiver: Receiver) -> None:
    firm_id, key = world.admit()
    endpoint = world.register(key, receiver.url)
    world.client.patch(f"/webhooks/endpoints/{endpoint['id']}", headers={"X-API-Key": key}, json={"description": "Sync"})
    world.client.post(f"/webhooks/endpoints/{endpoint['id']}/rotate-secret", headers={"X-API-Key": key}, json={})
    assert world.client.delete(f"/webhooks/endpoints/{endpoint['id']}", headers={"X-API-Key": key}).status_code == 204
    entries = world.client.get("/sandbox/audit/entries", headers=REGULATOR, params={"participant_id": firm_id}).json()["data"]
    assert [(e["method"], e["status"], e["operation"].split(" ")[0]) for e in entries] == [
        ("POST", 201, "create_webhook_endpoint"), ("PATCH", 200, "update_webhook_endpoint"),
        ("POST", 200, "rotate_webhook_secret"), ("DELETE", 204, "delete_webhook_endpoint")]
    assert world.client.get(f"/webhooks/endpoints/{endpoint['id']}", headers={"X-API-Key": key}).status_code == 404


def test_another_participants_endpoint_is_not_found(world: EventsWorld, receiver: Receiver) -> None:
    _, mine = world.admit("Mine")
    _, theirs = world.admit("Theirs")
    endpoint = world.register(mine, receiver.url)
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/deliveries")):
        answer = world.client.request(method, f"/webhooks/endpoints/{endpoint['id']}{path}",
                                      headers={"X-API-Key": theirs}, json={} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, path, answer.text)
