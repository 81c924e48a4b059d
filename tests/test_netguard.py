"""The network guard itself trips, in this process and in subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import swarmshare_netguard


def test_guard_refuses_udp_outside_loopback() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(swarmshare_netguard.NetworkGuardViolation):
            sock.sendto(b"x", ("192.0.2.1", 9))  # TEST-NET-1: refused before sending
        with pytest.raises(swarmshare_netguard.NetworkGuardViolation):
            sock.sendto(b"x", ("255.255.255.255", 5001))
    finally:
        sock.close()
    assert len(swarmshare_netguard.violations) == 2
    swarmshare_netguard.violations.clear()  # this test trips the guard on purpose


def test_guard_refuses_tcp_connect_outside_loopback() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(swarmshare_netguard.NetworkGuardViolation):
            sock.connect(("198.51.100.7", 80))
    finally:
        sock.close()
    swarmshare_netguard.violations.clear()


def test_guard_allows_loopback() -> None:
    recv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    recv.bind(("127.0.0.1", 0))
    send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        send.sendto(b"ok", recv.getsockname())
        assert recv.recv(10) == b"ok"
    finally:
        recv.close()
        send.close()
    assert swarmshare_netguard.violations == []


def test_guard_trips_in_subprocess(network_guard: Path) -> None:
    code = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
        " s.sendto(b'x', ('203.0.113.9', 5001))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "network guard" in proc.stderr
    log = network_guard
    assert "203.0.113.9" in log.read_text()
    log.write_text("")  # tripped on purpose; the autouse check reads from its start offset
