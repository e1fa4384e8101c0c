"""The door stays open for everyone: a real gateway process, started as the launcher starts it,
refuses oversized and unfinished requests and connections past its cap without holding memory;
the JSON depth scanner and the unauthenticated limiter are checked as pure functions."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import launcher
from sandbox.gateway.door import OVERFLOW_ADDRESS, UnauthenticatedLimiter, json_depth_exceeds
from sandbox.topology import GATEWAY
from tests.gateway.conftest import WALLET_KEY
from tests.support.ports import free_port_offset

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 0.5
MAX_CONNECTIONS = 20
MAX_HEADER_BYTES = 16 * 1024  # the defaults
MAX_BODY_BYTES = 1024 * 1024
SLACK_S = 0.75  # the event loop's timer granularity plus a busy test machine


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.Running]:
    """The gateway alone (no service is needed to be refused at the door), short timeouts."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GATEWAY_HEADER_TIMEOUT_S", str(HEADER_TIMEOUT_S))
        env.setenv("GATEWAY_BODY_TIMEOUT_S", str(BODY_TIMEOUT_S))
        env.setenv("GATEWAY_KEEP_ALIVE_S", str(KEEP_ALIVE_S))
        env.setenv("GATEWAY_MAX_CLIENT_CONNECTIONS", str(MAX_CONNECTIONS))
        running = launcher.start(GATEWAY, tmp_path_factory.mktemp("door"), free_port_offset())
    try:
        if launcher.wait_ready([running]):
            pytest.fail(running.log_path.read_text(errors="replace")[-2000:])
        yield running
    finally:
        launcher.stop([running])


def connect(gateway: launcher.Running) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout fails the test)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def read_one_answer(sock: socket.socket) -> bytes:
    """One whole answer (head and Content-Length body) from a connection that stays open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status_and_problem(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the peak so far) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


# --- header size ----------------------------------------------------------------------------------


def test_headers_over_the_limit_in_one_write_get_431_and_the_connection_closed(gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\nX-Big: " + b"a" * 65 * 1024 + b"\r\n\r\n")
        status, problem = status_and_problem(read_until_closed(sock))
    assert status == 431
    assert problem["type"].endswith(":headers-too-large")
    assert str(MAX_HEADER_BYTES) in problem["detail"]


def test_headers_trickled_past_the_limit_get_431_before_they_end(gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\nX-Big: ")
        answer = b""
        for _ in range(40):  # 40 × 1 KiB: more than the limit, never the end of the headers
            try:
                sock.sendall(b"a" * 1024)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.002)
        answer = read_until_closed(sock)
    assert status_and_problem(answer)[0] == 431


def test_headers_under_the_limit_are_served(gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\nConnection: close\r\nX-Fine: "
                     + b"a" * 12 * 1024 + b"\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


def test_fifty_unfinished_2mb_headers_do_not_hold_the_gateways_memory(gateway) -> None:
    peak_before = memory_kib(gateway.process.pid, "VmHWM")
    sockets = [connect(gateway) for _ in range(50)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\nX-Big: ")
        piece = b"a" * 64 * 1024
        for _ in range(32):  # 2 MiB each, the headers never finished
            for sock in sockets:
                try:
                    sock.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused already
        answers = [read_until_closed(sock) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    peak_growth_kib = memory_kib(gateway.process.pid, "VmHWM") - peak_before
    # A refusal can be lost to the reset of a connection closed with unread bytes; none is served.
    assert all(a == b"" or status_and_problem(a)[0] == 431 for a in answers)
    assert sum(a != b"" for a in answers) >= 25
    assert peak_growth_kib < 8 * 1024, f"the gateway's peak memory grew by {peak_growth_kib} KiB"


# --- timeouts -------------------------------------------------------------------------------------


def test_half_sent_headers_get_408_within_the_header_timeout(gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\nX-Slow: ")
        started = time.monotonic()
        status, problem = status_and_problem(read_until_closed(sock))
        waited = time.monotonic() - started
    assert status == 408
    assert problem["type"].endswith(":request-timeout") and "headers" in problem["detail"]
    assert HEADER_TIMEOUT_S - 0.1 <= waited <= HEADER_TIMEOUT_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(gateway) -> None:
    with connect(gateway) as sock:
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started <= HEADER_TIMEOUT_S + SLACK_S


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\n\r\n")
        answer = read_one_answer(sock)
        started = time.monotonic()
        rest = read_until_closed(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in answer.lower()
    assert rest == b""
    assert KEEP_ALIVE_S - 0.1 <= waited <= KEEP_ALIVE_S + SLACK_S


def test_a_body_that_stops_arriving_gets_408_within_the_body_timeout(gateway) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"POST /payments/transfers HTTP/1.1\r\nHost: door\r\nX-API-Key: " + WALLET_KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"amount\": ")
        started = time.monotonic()
        status, problem = status_and_problem(read_until_closed(sock))
        waited = time.monotonic() - started
    assert status == 408 and "body" in problem["detail"]
    assert waited <= BODY_TIMEOUT_S + SLACK_S


def test_a_body_over_the_limit_gets_413(gateway) -> None:
    body = b"[" + b" " * MAX_BODY_BYTES + b"]"  # all of it read by the server: no reset loses the answer
    with connect(gateway) as sock:
        sock.sendall(b"POST /payments/transfers HTTP/1.1\r\nHost: door\r\nX-API-Key: " + WALLET_KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        status, problem = status_and_problem(read_until_closed(sock))
    assert status == 413 and problem["type"].endswith(":payload-too-large")


def test_a_request_in_several_reads_within_the_timeouts_is_served(gateway) -> None:
    with connect(gateway) as sock:
        for part in (b"GET /heal", b"thz HTTP/1.1\r\nHost: do", b"or\r\nConnection: close\r\n\r\n"):
            sock.sendall(part)
            time.sleep(HEADER_TIMEOUT_S / 4)
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


# --- connection cap -------------------------------------------------------------------------------


def test_connections_beyond_the_cap_get_503_and_the_gateway_recovers(gateway) -> None:
    held = [connect(gateway) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)  # accepted by the server
        with connect(gateway) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\n\r\n")
            answer = read_until_closed(extra)
        status, problem = status_and_problem(answer)
        assert status == 503 and problem["type"].endswith(":server-overloaded")
        assert b"retry-after: 1" in answer.lower()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.1)
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: door\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


# --- JSON depth -----------------------------------------------------------------------------------


def nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + closer * depth).encode()


def test_arrays_and_objects_deeper_than_the_limit_are_too_deep() -> None:
    assert json_depth_exceeds(nested(1000))
    assert json_depth_exceeds(b'{"a":' * 33 + b"1" + b"}" * 33, max_depth=32)
    assert json_depth_exceeds(b'[{"a":' * 17 + b"1" + b"}]" * 17, max_depth=32)  # 34 levels, mixed


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert not json_depth_exceeds(nested(32), max_depth=32)
    assert json_depth_exceeds(nested(33), max_depth=32)
    assert not json_depth_exceeds(b"[]" * 5000, max_depth=32)  # many brackets, shallow


def test_brackets_inside_strings_do_not_count() -> None:
    brackets = "[" * 100 + "{" * 100
    assert not json_depth_exceeds(json.dumps({"memo": brackets, "tags": [brackets, brackets]}).encode())


def test_escaped_quotes_do_not_end_a_string() -> None:
    body = json.dumps({"memo": 'he said "' + "[" * 100 + '" and \\ left'}).encode()
    assert b'\\"' in body and b"\\\\" in body
    assert not json_depth_exceeds(body)
    # After an escaped backslash the quote does end the string: the brackets after it count.
    assert json_depth_exceeds(b'["a\\\\", ' + nested(40) + b"]")


def test_a_transfer_body_is_checked_in_microseconds() -> None:
    transfer = json.dumps({"from_account_id": "acc_" + "0" * 26, "to_account_id": "acc_" + "1" * 26,
                           "amount": {"amount": "12.34", "currency": "CNY"}, "memo": "x" * 900}).encode()
    assert 1000 <= len(transfer) <= 1100
    assert microseconds_per_check(transfer) < 50  # measured: under 1


def test_many_brackets_are_scanned_at_c_speed() -> None:
    many = json.dumps({"items": [{"id": i, "tags": ["[", "{"], "memo": 'a \\"quoted\\" [x]'} for i in range(12)]}).encode()
    assert microseconds_per_check(many) < 200  # measured: about 8
    started = time.perf_counter()
    assert not json_depth_exceeds(b"[" + b"[]," * 330_000 + b"[]]")  # 1 MB, shallow
    assert json_depth_exceeds(b"[" * 500_000 + b"]" * 500_000)  # 1 MB, deep
    assert time.perf_counter() - started < 0.5  # measured: about 6 ms for both


def microseconds_per_check(body: bytes, runs: int = 2000) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        json_depth_exceeds(body)
    return (time.perf_counter() - started) / runs * 1e6


def test_an_unterminated_string_hides_the_brackets_after_it() -> None:
    assert not json_depth_exceeds(b'"' + b'\\"' * 50_000 + b"[" * 40)
    assert json_depth_exceeds(b"[" * 40 + b'"never closed')


# --- unauthenticated limiter ----------------------------------------------------------------------


T0 = 1_800_000_000.0


def test_an_address_gets_its_burst_then_429_with_retry_after() -> None:
    limiter = UnauthenticatedLimiter(per_minute=30, burst=30)
    verdicts = [limiter.take("203.0.113.9", T0) for _ in range(31)]
    assert all(v.allowed for v in verdicts[:30])
    assert not verdicts[30].allowed and verdicts[30].retry_after_s == 2  # one token per 2 s
    assert limiter.take("198.51.100.1", T0).allowed  # another address has its own bucket
    assert limiter.take("203.0.113.9", T0 + 2).allowed  # refilled


def test_a_flood_of_4000_is_logged_as_a_few_entries_and_one_summary() -> None:
    limiter = UnauthenticatedLimiter(per_minute=30, burst=30, window_s=60, logged_per_window=5)
    verdicts = [limiter.take("203.0.113.9", T0 + i * 2.5 / 4000) for i in range(4000)]
    assert sum(v.log_now for v in verdicts) == 5
    assert sum(not v.allowed for v in verdicts) == 4000 - 30 - 1  # burst, plus one token refilled
    assert all(v.summary is None for v in verdicts)
    later = limiter.take("203.0.113.9", T0 + 61)  # the next refusal after the window closes
    assert later.log_now and later.allowed
    summary = later.summary
    assert summary is not None
    assert (summary.address, summary.refused, summary.unlogged, summary.limited) == ("203.0.113.9", 4000, 3995, 3969)
    assert summary.first_iso == "2027-01-15T08:00:00.000000Z"
    assert "4000 requests refused from 203.0.113.9" in summary.describe()


def test_a_flood_that_stops_is_summarised_by_the_timer() -> None:
    limiter = UnauthenticatedLimiter(window_s=60, logged_per_window=5)
    for i in range(100):
        limiter.take("203.0.113.9", T0 + i * 0.01)
    limiter.take("198.51.100.1", T0)  # one refusal: logged by itself, nothing to summarise
    assert limiter.due_summaries(T0 + 30) == []
    (summary,) = limiter.due_summaries(T0 + 60)
    assert (summary.address, summary.unlogged) == ("203.0.113.9", 95)
    assert limiter.due_summaries(T0 + 200) == []  # summarised once


def test_memory_is_bounded_and_forgotten_floods_are_still_counted() -> None:
    limiter = UnauthenticatedLimiter(tracked_addresses=100, logged_per_window=1)
    for n in range(1000):
        limiter.take(f"10.0.{n // 256}.{n % 256}", T0)
        limiter.take(f"10.0.{n // 256}.{n % 256}", T0)  # the second is not logged one by one
    assert len(limiter._addresses) == 100
    summaries = limiter.due_summaries(T0 + 60)
    overflow = next(s for s in summaries if s.address == OVERFLOW_ADDRESS)
    assert overflow.unlogged == 900 and len(summaries) == 101


def test_a_clock_set_back_neither_drains_nor_fills_the_bucket() -> None:
    limiter = UnauthenticatedLimiter(per_minute=30, burst=2)
    limiter.take("203.0.113.9", T0)
    limiter.take("203.0.113.9", T0)
    assert not limiter.take("203.0.113.9", T0 - 3600).allowed
