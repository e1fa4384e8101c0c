"""One sandbox clock: the regulator's move takes the gateway and every service forward, each
service says what fell due, and the events that caused are relayed at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.clock import frozen_clock
from tests.gateway.conftest import REGULATOR, build_gateway
from tests.gateway.events_world import EventsWorld
from tests.gateway.outbox_service import outbox_service


@pytest.fixture
def two_services(tmp_path: Path) -> Iterator[tuple[EventsWorld, TestClient]]:
    """Outbox services standing in for payments and credit; the gateway's relay on a slow timer,
    so only the clock's own relay can bring the events in during the test."""
    payments, credit = outbox_service(tmp_path / "p", frozen_clock()), outbox_service(tmp_path / "c", frozen_clock())
    app = build_gateway(tmp_path / "gateway", frozen_clock(), {"payments": httpx.ASGITransport(app=payments),
                                                              "credit": httpx.ASGITransport(app=credit)},
                        relay_interval_s=3600)
    with TestClient(payments) as p, TestClient(credit) as c, TestClient(app) as client:
        yield EventsWorld(client, p, frozen_clock()), c


def test_the_sandbox_clock_moves_every_service_and_relays_what_fired(two_services: tuple[EventsWorld, TestClient]) -> None:
    world, credit = two_services
    _, key = world.admit()
    world.send_parcel(key)
    moved = world.client.post("/sandbox/clock/advance", headers=REGULATOR, json={"seconds": 3 * 86400})
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert body["now"] == "2026-01-08T09:00:00Z"
    assert body["services"]["payments"] == {"reached": True, "now": "2026-01-08T09:00:00Z",
                                            "fired": {"parcel-delivery": 1}, "error": None}
    assert body["services"]["credit"]["reached"] is True and body["services"]["credit"]["fired"] == {}
    assert body["services"]["advisor"]["reached"] is False  # not running in this test: said so
    assert credit.get("/_sandbox/clock").json()["now"] == "2026-01-08T09:00:00Z"
    assert world.client.get("/sandbox/clock", headers=REGULATOR).json()["now"] == "2026-01-08T09:00:00Z"
    # Relayed at once: the parcel's sending and its delivery, without waiting for the relay's timer.
    assert body["events_relayed"] == 2
    assert [e["type"] for e in world.events(key)["data"]] == ["lesson.parcel.sent", "lesson.parcel.delivered"]


def test_the_sandbox_clock_move_is_logged_and_needs_the_regulator(two_services: tuple[EventsWorld, TestClient]) -> None:
    world, _ = two_services
    _, key = world.admit()
    refused = world.client.post("/sandbox/clock/advance", headers={"X-API-Key": key}, json={"seconds": 60})
    assert refused.status_code == 403 and refused.json()["type"].endswith("regulator-only")
    world.client.post("/sandbox/clock/advance", headers=REGULATOR, json={"seconds": 60})
    entries = world.client.get("/sandbox/audit/entries", headers=REGULATOR,
                               params={"participant_id": "regulator"}).json()["data"]
    assert entries[-1]["operation"].startswith("advance_sandbox_clock +60 s to 2026-01-05T09:01:00")
