"""20 concurrent clients making random transfers among a few accounts never lose an update or
overdraw, on SQLite and on PostgreSQL: balances move by one conditional UPDATE each, applied in
account-id order (see repository.AccountsRepository.apply)."""

from __future__ import annotations

import random
from decimal import Decimal
from concurrent.futures import ThreadPoolExecutor

import httpx

from services.payments.main import PaymentsSettings, create_app
from tests.support.servers import serve

CLIENTS = 20
TRANSFERS_EACH = 15


def test_concurrent_random_transfers_conserve_money_and_never_overdraw(database_url, tmp_path) -> None:
    app = create_app(PaymentsSettings(data_dir=tmp_path, database_url=database_url, seed_demo_data=False))
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
