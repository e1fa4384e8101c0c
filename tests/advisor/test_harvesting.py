"""Tax-loss harvesting into substitute funds, with the 30-day wash-sale window on both sides."""

from __future__ import annotations

from decimal import Decimal

from fastapi.testclient import TestClient

from tests.advisor.conftest import advance, deposit, funded_account, holdings


def _harvest(client: TestClient, account_id: str, **body) -> dict:
    response = client.post(f"/accounts/{account_id}/harvest", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_losing_lots_are_sold_into_the_substitute_and_the_loss_reported(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 20, cn_equity=-30)
    result = _harvest(advisor, account_id)
    sold = {lot["fund"] for lot in result["lots"]}
    assert "SBX-CSI300" in sold
    buys = {t["fund"] for t in result["trades"] if t["side"] == "buy"}
    assert "SBX-A500" in buys  # same class, another index
    held = holdings(advisor, account_id)
    assert "SBX-CSI300" not in held and "SBX-A500" in held
    loss = sum(Decimal(lot["loss"]["amount"]) for lot in result["lots"])
    assert Decimal(result["harvested_loss"]["amount"]) == loss > 0
    report = advisor.get(f"/accounts/{account_id}/tax-report").json()
    assert report["harvested_losses"] == result["harvested_loss"]
    assert Decimal(report["realised_losses"]["amount"]) == -loss


def test_a_dry_run_harvest_sells_nothing(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 20, cn_equity=-30)
    dry = _harvest(advisor, account_id, dry_run=True)
    assert dry["lots"] and all(t["id"] is None for t in dry["trades"])
    assert "SBX-CSI300" in holdings(advisor, account_id)


def test_no_repurchase_of_the_harvested_fund_within_30_days_after(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 20, cn_equity=-30)
    _harvest(advisor, account_id)
    advance(advisor, 30, cn_equity=-10)  # day 30 after the sale: still inside the window
    funds = {t["fund"] for t in deposit(advisor, account_id, "1000.00").json()["trades"] if t["asset_class"] == "cn_equity"}
    assert funds == {"SBX-A500"}
    rebalance = advisor.post(f"/accounts/{account_id}/rebalance", json={"threshold": 0.005}).json()
    assert "SBX-CSI300" not in {t["fund"] for t in rebalance["trades"]}
    advance(advisor, 1)  # day 31: the window has closed
    funds = {t["fund"] for t in deposit(advisor, account_id, "1000.00").json()["trades"] if t["asset_class"] == "cn_equity"}
    assert funds == {"SBX-CSI300"}


def test_no_harvest_while_the_fund_was_bought_within_30_days_before(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 20, cn_equity=-30)
    bought = deposit(advisor, account_id, "1000.00").json()["trades"]  # buys CSI 300 at the low
    assert "SBX-CSI300" in {t["fund"] for t in bought}
    advance(advisor, 1)
    blocked = _harvest(advisor, account_id)
    assert "SBX-CSI300" not in {lot["fund"] for lot in blocked["lots"]}
    assert {"fund": "SBX-CSI300", "reason": "wash-sale-lookback"}.items() <= next(
        s for s in blocked["skipped"] if s["fund"] == "SBX-CSI300").items()
    advance(advisor, 30)  # the new lot is now 31 days old
    allowed = _harvest(advisor, account_id)
    assert "SBX-CSI300" in {lot["fund"] for lot in allowed["lots"]}


def test_the_substitute_is_not_harvested_back_into_a_fund_sold_at_a_loss_30_days_ago(advisor: TestClient) -> None:
    account_id = funded_account(advisor)
    advance(advisor, 20, cn_equity=-30)
    _harvest(advisor, account_id)
    advance(advisor, 5, cn_equity=-20)  # now the substitute is at a loss too
    result = _harvest(advisor, account_id)
    skip = next(s for s in result["skipped"] if s["fund"] == "SBX-A500")
    assert skip["reason"] == "replacement-in-wash-window"
    assert "SBX-A500" in holdings(advisor, account_id)
