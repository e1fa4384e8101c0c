"""The seeded market: the same day gives the same prices, and teachers can move it."""

from __future__ import annotations

from decimal import Decimal

from fastapi.testclient import TestClient

from services.advisor.assumptions import assumptions
from services.advisor.market import MarketSimulator, Shock
from tests.advisor.conftest import advance, advisor_app


def test_the_same_seed_and_day_replay_the_same_prices() -> None:
    first, second = MarketSimulator(assumptions(), 2026), MarketSimulator(assumptions(), 2026)
    second.navs(900)  # asking for a later day first changes nothing
    assert first.navs(400) == second.navs(400)
    assert MarketSimulator(assumptions(), 7).navs(400) != first.navs(400)


def test_a_substitute_tracks_its_primary_closely() -> None:
    import numpy as np

    market = MarketSimulator(assumptions(), 2026)
    days = np.array([list(market.navs(d).values()) for d in range(0, 730, 7)], dtype=float)
    returns = np.diff(np.log(days), axis=0)
    codes = market.fund_codes
    corr = np.corrcoef(returns[:, codes.index("SBX-CSI300")], returns[:, codes.index("SBX-A500")])[0, 1]
    assert corr > 0.95


def test_a_shock_moves_one_class_from_its_day_on() -> None:
    market = MarketSimulator(assumptions(), 2026)
    calm, shocked = market.navs(30), market.navs(30, [Shock(30, "us_equity", -20.0)])
    assert shocked["SBX-USTM"] == round(calm["SBX-USTM"] * 0.8)
    assert shocked["SBX-CSI300"] == calm["SBX-CSI300"]
    assert market.navs(29, [Shock(30, "us_equity", -20.0)]) == market.navs(29)


def test_advancing_the_market_moves_the_clock_and_prices(advisor: TestClient) -> None:
    start = advisor.get("/market").json()
    moved = advance(advisor, 30, us_equity=-20)
    assert (start["day"], moved["day"]) == (0, 30)
    assert advisor.get("/_sandbox/clock").json()["now"].startswith("2026-02-04")
    nav = {f["code"]: Decimal(f["nav"]) for f in moved["funds"]}
    assert nav["SBX-USTM"] < Decimal("2.5000") and moved["shocks"][0]["asset_class"] == "us_equity"


def test_moving_the_market_can_be_switched_off(tmp_path) -> None:
    with TestClient(advisor_app(tmp_path, allow_time_travel=False)) as client:
        response = client.post("/_sandbox/market/advance", json={"days": 1})
        assert response.status_code == 403
