"""A block of free ports for launching the whole sandbox from a test."""

from __future__ import annotations

import os
import socket

import pytest

from sandbox.topology import built_services


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port_offset() -> int:
    """20000 + a pid-based step, so parallel runs on one machine pick different ports; every
    port stays below the kernel's ephemeral range (32768+)."""
    specs = built_services()
    for attempt in range(40):
        offset = 20000 + ((os.getpid() + attempt * 37) % 400) * 10
        if not any(port_in_use(s.port + offset) for s in specs):
            return offset
    pytest.skip("no free block of ports for launching the sandbox")
