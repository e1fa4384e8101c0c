"""Two gateways and two payments processes on one PostgreSQL database for each, as a
Kubernetes Deployment with two replicas runs them: load spread over both must leave what one
process would have left. Limits exact across replicas, one chain that verifies, an idempotency
key sent to both applied once, and a replica killed mid-load changes none of that."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest

from tests.faults.regulator import (
    audit_after_recovery,
    audit_entries,
    balance_minor,
    invariants_hold,
    ledger_journals,
    log_verifies,
    open_intents,
    regulator,
    report,
)
from tests.faults.stack import SERVICES, Stack
from tests.faults.traffic import LI_WEI, ZHANG_MIN, Load, Wallet, fund_new_accounts, new_key
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(tmp_path) -> Iterator[tuple[Stack, Stack]]:
    """Replica 1 (gateway → its payments) and replica 2 (gateway → its payments) on the same
    two databases. Started one after the other, as a rollout starts pods."""
    with ExitStack() as resources:
        urls = {name: resources.enter_context(fresh_database(f"sbx_replica_{name}")) for name in SERVICES}
        first = resources.enter_context(Stack(tmp_path / "replica-1", urls))
        first.start(*SERVICES)
        second = resources.enter_context(Stack(tmp_path / "replica-2", urls))
        second.start(*SERVICES)
        yield first, second


def _admit(stack: Stack, daily_volume: str, rate_limit: int = 600) -> tuple[str, str]:
    """A participant of the test's own: (its id, its API key)."""
    with regulator(stack) as client:
        answer = client.post("/sandbox/participants", json={
            "name": f"Replica Pay {uuid.uuid4().hex[:6]}", "services": ["payments"],
            "limits": {"max_single_transaction": "100.00", "daily_volume": daily_volume,
                       "max_customers": 10, "rate_limit_per_minute": rate_limit}})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["api_key"]


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=15)


def test_a_daily_limit_is_exact_across_two_gateways(replicas: tuple[Stack, Stack]) -> None:
    """420.00 a day; 240.00 topped up leaves 180.00: of eight 60.00 transfers sent at once,
    four to each gateway, exactly three pass, whichever replica they reach."""
    first, second = replicas
    if time.time() % 86_400 > 86_400 - 60:  # the top-ups and the transfers on one UTC day
        time.sleep(86_400 - time.time() % 86_400 + 1)
    _, key = _admit(first, "420.00")
    with _client(first.gateway_url, key) as one, _client(second.gateway_url, key) as two:
        payer = one.post("/payments/accounts", json={"kind": "personal", "owner_name": "Replica Payer"}).json()["id"]
        payee = two.post("/payments/accounts", json={"kind": "personal", "owner_name": "Replica Payee"}).json()["id"]
        for n, amount in enumerate(("100.00", "100.00", "40.00")):
            topped = (one, two)[n % 2].post("/payments/deposits", json={
                "account_id": payer, "amount": {"amount": amount, "currency": "CNY"},
                "card_number": "4242424242424242"})
            assert topped.status_code == 201, topped.text

        def transfer(n: int) -> httpx.Response:
            return (one, two)[n % 2].post("/payments/transfers", json={
                "from_account_id": payer, "to_account_id": payee, "amount": {"amount": "60.00", "currency": "CNY"}},
                headers={"Idempotency-Key": f"replica-limit-{uuid.uuid4().hex}"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(transfer, range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 3 + [403] * 5, [(a.status_code, a.text[:200]) for a in answers]
    refused = [a.json() for a in answers if a.status_code == 403]
    assert {r["limit"] for r in refused} == {"daily_volume"}
    assert balance_minor(first, payer) == 6000 and balance_minor(second, payee) == 18000
    assert log_verifies(first) == [] and log_verifies(second) == []
    assert invariants_hold(first) == []


def test_a_rate_limit_counts_both_gateways(replicas: tuple[Stack, Stack]) -> None:
    """Ten requests a minute: sixteen reads alternating between the replicas get ten answers
    and six 429s, in one window."""
    first, second = replicas
    _, key = _admit(first, "1000.00", rate_limit=10)
    if time.time() % 60 > 45:  # all sixteen in one fixed minute
        time.sleep(61 - time.time() % 60)
    with _client(first.gateway_url, key) as one, _client(second.gateway_url, key) as two:
        statuses = [(one, two)[n % 2].get("/payments/accounts").status_code for n in range(16)]
    assert sorted(statuses) == [200] * 10 + [429] * 6, statuses


def test_one_idempotency_key_sent_to_both_gateways_moves_money_once(replicas: tuple[Stack, Stack]) -> None:
    first, second = replicas
    key = new_key()
    before = balance_minor(first, LI_WEI)
    with Wallet(first.gateway_url) as one, Wallet(second.gateway_url) as two:
        with ThreadPoolExecutor(2) as pool:
            sent = list(pool.map(lambda w: w.transfer(LI_WEI, ZHANG_MIN, "12.34", key=key), (one, two)))
        settled = [s if s.succeeded else (one, two)[n].retry_until_settled(s, 10) for n, s in enumerate(sent)]
    assert all(s.succeeded for s in settled), [str(s) for s in sent + settled]
    assert len({s.journal_id for s in settled}) == 1
    assert [j.key for j in ledger_journals(first)].count(key) == 1
    assert before - balance_minor(second, LI_WEI) == 1234
    counted = [e for e in audit_entries(first) if e["idempotency_key"] == key and "limits" in (e["counts_toward"] or [])]
    assert len(counted) == 1, counted
    assert log_verifies(first) == []


def test_one_replica_killed_mid_load_the_other_finishes_its_work(replicas: tuple[Stack, Stack]) -> None:
    """Load through both gateways; the second is killed (kill -9) while transfers it forwarded
    wait on its payments (stopped), and stays dead. The first reconciles what the dead one had
    forwarded once their deadlines pass, and the regulator's audit of the whole run, on the
    first, finds every movement logged and counted once, and no intent left open."""
    first, second = replicas
    with Wallet(first.gateway_url) as wallet:
        accounts = fund_new_accounts(wallet, 2)
        loads = [Load(first.gateway_url, accounts, clients=2).start(),
                 Load(second.gateway_url, accounts, clients=2).start()]
        try:
            loads[1].wait_for_successes(10)
            second.pause("payments")  # the second gateway's transfers now hang at its payments
            time.sleep(0.5)  # its clients' next transfers are on their way, their intents logged
            open_at_kill = open_intents(audit_entries(first))
            second.kill("gateway")
            second.resume("payments")
            loads[0].wait_for_successes(10)
        finally:
            sent = [s for load in loads for s in load.stop()]
        assert any(s.succeeded for s in loads[1].sent), "the second gateway carried no traffic"
        assert open_at_kill, "no transfer was on its way through the second gateway when it died"
        findings = audit_after_recovery(first, wallet, sent)
        closed = {e["intent_index"]: e for e in audit_entries(first) if e["phase"] == "reconciled"}
    assert not findings, report(findings, first)
    # The dead one's (the first's own in flight then closed with their outcomes).
    assert any(e["index"] in closed for e in open_at_kill), "the live gateway reconciled none of the dead one's"


def test_the_regulators_changes_reach_every_replica(replicas: tuple[Stack, Stack]) -> None:
    """A suspension and a clock move made on one gateway hold on the other from its next request."""
    first, second = replicas
    participant_id, key = _admit(first, "1000.00")
    with _client(second.gateway_url, key) as participant, regulator(first) as regulator_one, \
            regulator(second) as regulator_two:
        assert participant.get("/payments/accounts").status_code == 200  # admitted on the first, known on the second
        suspended = regulator_one.post(f"/sandbox/participants/{participant_id}/suspend", json={"reason": "replica drill"})
        assert suspended.status_code == 200, suspended.text
        refused = participant.get("/payments/accounts")
        assert refused.status_code == 403 and refused.json()["limit"] == "status", refused.text
        before = regulator_two.get("/_sandbox/clock").json()["now"]
        moved = regulator_one.post("/_sandbox/clock/advance", json={"seconds": 86400})
        assert moved.status_code == 200, moved.text
        after = regulator_two.get("/_sandbox/clock").json()["now"]  # the regulator's reads catch up too
    assert after[:10] > before[:10], (before, after)
