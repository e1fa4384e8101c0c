"""20 concurrent clients making random transfers among a few accounts never lose an update or
overdraw, on SQLite and on PostgreSQL: balances move by one conditional UPDATE each, applied in
account-id order (see repository.AccountsRepository.apply)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx

from tests.payments.factories import MakeApp
from tests.support.servers import serve

CLIENTS = 20
TRANSFERS_EACH = 15


def test_concurrent_random_transfers_conserve_money_and_never_overdraw(database_url, make_app: MakeApp) -> None:
    app = make_app(database_url=database_url, seed_demo_data=False)
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        accounts = []
        for i in range(4):
            acc = client.post("/accounts", json={"kind": "personal", "owner_name": f"P{i}", "currency": "CNY"}).json()
            client.post("/deposits", json={"account_id": acc["id"], "card_number": "4242424242424242",
                                           "amount": {"amount": "100.00", "currency": "CNY"}})
            accounts.append(acc["id"])

        def worker(seed: int) -> list[int]:
            rng = random.Random(seed)
            statuses = []
            with httpx.Client(base_url=base, timeout=30) as c:
                for _ in range(TRANSFERS_EACH):
                    a, b = rng.sample(accounts, 2)
                    amount = f"{rng.randint(1, 6000) / 100:.2f}"
                    r = c.post("/transfers", json={"from_account_id": a, "to_account_id": b,
                                                   "amount": {"amount": amount, "currency": "CNY"}})
                    statuses.append(r.status_code)
            return statuses

        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = [s for result in pool.map(worker, range(CLIENTS)) for s in result]

        assert set(statuses) <= {201, 409}
        assert statuses.count(201) > 0 and statuses.count(409) > 0  # some ran dry and were refused
        balances = [client.get(f"/accounts/{a}").json()["balance"]["amount"] for a in accounts]
        assert all(not b.startswith("-") for b in balances)
        assert sum(Decimal(b) for b in balances) == Decimal("400.00")  # nothing created or lost
        report = client.get("/invariants").json()
        assert report["ok"], report


def test_a_burst_of_100_requests_is_queued_not_refused(database_url, make_app: MakeApp) -> None:
    """More requests at once than the server has worker threads (40): reads and transfers all
    succeed. Sessions are admitted a few at a time (services/common/db.py, REQUEST_SESSIONS), so
    the request holding SQLite's writer lock always finds a thread to finish on."""
    app = make_app(database_url=database_url)
    payer, payee = "acc_00000000000000000000000001", "acc_00000000000000000000000002"  # demo wallets
    with serve(app) as base:

        def one(i: int) -> int:
            with httpx.Client(base_url=base, timeout=120) as c:
                if i % 2:
                    return c.get("/accounts", params={"limit": 5}).status_code
                return c.post("/transfers", json={"from_account_id": payer, "to_account_id": payee,
                                                  "amount": {"amount": "0.01", "currency": "CNY"}}).status_code

        with ThreadPoolExecutor(100) as pool:
            statuses = list(pool.map(one, range(100)))
        assert statuses.count(200) == 50 and statuses.count(201) == 50, statuses
        with httpx.Client(base_url=base) as client:
            assert client.get(f"/accounts/{payer}").json()["balance"]["amount"] == "4999.50"
            assert client.get("/invariants").json()["ok"]
