"""A request's hops from its audit entries (sandbox/console/sequence.py), without a browser or a
sandbox: entries shaped as the gateway's `GET /sandbox/audit/entries` answers them."""

from __future__ import annotations

from typing import Any

from sandbox.console.sequence import build_diagram, group_hops

LENDER, CREDIT_SERVICE = "ptp_00000000000000000000000003", "ptp_00000000000000000000000011"
NAMES = {LENDER: "Demo Lender", CREDIT_SERVICE: "Credit service"}


def make_entry(index: int, at: str, path: str, service: str, status: int, latency_ms: float, **fields: Any) -> dict[str, Any]:
    entry = {"index": index, "at": f"2026-12-07T15:31:{at}Z", "request_id": "req_loan", "participant_id": LENDER,
             "method": "POST", "path": path, "service": service, "status": status, "latency_ms": latency_ms,
             "decision": None, "score": None, "rules": [], "limit": None, "phase": None, "intent_index": None,
             "via": None, "hash": f"{index:064x}", "error": None}
    return {**entry, **fields}


# A 310 loan's disbursal, as logged: the lender's call to credit is one entry, written after the
# ledger transfer credit made inside it (its intent and outcome), but stamped when it arrived.
DISBURSAL = [
    make_entry(32, "19.075", "/payments/transfers", "payments", 0, 0.0, phase="intent", decision="review",
               via=CREDIT_SERVICE),
    make_entry(33, "19.075", "/payments/transfers", "payments", 201, 20.5, phase="outcome", intent_index=32,
               decision="review", via=CREDIT_SERVICE, trace_id="cc39d38004c20e8cbeeded789df3d099"),
    make_entry(34, "19.043", "/credit/loans/loan_1/disbursement", "credit", 200, 65.7),
]


def test_an_intent_and_its_outcome_are_one_hop_ordered_by_arrival() -> None:
    hops = group_hops(DISBURSAL)
    assert [[e["index"] for e in hop.entries] for hop in hops] == [[34], [32, 33]]
    assert [hop.number for hop in hops] == [1, 2]
    assert hops[1].trace_id == "cc39d38004c20e8cbeeded789df3d099"


def test_a_service_call_inside_another_hop_starts_on_that_service_lifeline() -> None:
    diagram = build_diagram("req_loan", DISBURSAL, NAMES)
    assert diagram.lifelines == ["Demo Lender", "gateway", "credit", "payments"]
    assert [(a.source, a.target, a.label) for a in diagram.arrows] == [
        ("Demo Lender", "gateway", "POST /credit/loans/loan_1/disbursement"),
        ("gateway", "credit", "POST /loans/loan_1/disbursement"),
        ("credit", "gateway", "POST /payments/transfers"),
        ("gateway", "payments", "POST /transfers"),
        ("payments", "gateway", "201"),
        ("gateway", "credit", "201 · review"),
        ("credit", "gateway", "200"),
        ("gateway", "Demo Lender", "200"),
    ]


def test_a_blocked_movement_never_reaches_the_service() -> None:
    blocked = [make_entry(40, "20.000", "/payments/transfers", "payments", 403, 9.0, decision="block",
                          rules=["sanctions"], alert_id="alt_1")]
    diagram = build_diagram("req_blocked", blocked, NAMES)
    assert diagram.lifelines == ["Demo Lender", "gateway", "payments"]
    assert [(a.source, a.target, a.label) for a in diagram.arrows] == [
        ("Demo Lender", "gateway", "POST /payments/transfers"), ("gateway", "Demo Lender", "403 · block")]


def test_a_movement_still_in_flight_has_no_answer_yet() -> None:
    diagram = build_diagram("req_open", DISBURSAL[:1], NAMES)
    assert not diagram.hops[0].answered
    assert [a.returning for a in diagram.arrows] == [False, False]
    # No enclosing hop in the log: the service's call is drawn from the service participant.
    assert diagram.arrows[0].source == "Credit service"
