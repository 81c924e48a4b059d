"""The test suite's network-safety guard.

Installed in the pytest process by conftest.py and in every Python subprocess the tests start
(through sitecustomize.py on PYTHONPATH). Any connect/sendto/sendmsg to an address outside
loopback (127.0.0.0/8, ::1), or outside the subnets of a test's own network namespaces named in
SWARMSHARE_NETGUARD_ALLOW, is refused *before* anything is sent, and recorded in the file named
by SWARMSHARE_NETGUARD_LOG so that the test that caused it fails.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

LOG_ENV = "SWARMSHARE_NETGUARD_LOG"
ALLOW_ENV = "SWARMSHARE_NETGUARD_ALLOW"

violations: list[str] = []
log_to_file = True  # the pytest process keeps its own in `violations` instead
_installed = False


class NetworkGuardViolation(PermissionError):
    """A test tried to send to an address outside loopback and its own namespaces."""


def allowed(address: Any, family: int) -> bool:
    """Whether sending to `address` (a socket address tuple) stays on loopback or in a test LAN."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return True
    host = address[0] if isinstance(address, tuple) else address
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return bool(host == "localhost")
    if ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback):
        return True
    if ip.is_unspecified:  # connect/sendto 0.0.0.0 reaches this host only
        return True
    for net in filter(None, os.environ.get(ALLOW_ENV, "").split(",")):
        if ip in ipaddress.ip_network(net.strip(), strict=False):
            return True
    return False


def _check(sock: socket.socket, address: Any, what: str) -> None:
    if allowed(address, sock.family):
        return
    message = f"network guard: {what} to {address!r} leaves loopback (pid {os.getpid()})"
    violations.append(message)
    log = os.environ.get(LOG_ENV)
    if log and log_to_file:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(message + "\n")
    raise NetworkGuardViolation(message)


def install() -> None:
    """Wrap the socket methods that pick a destination; idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    cls = socket.socket
    real_connect, real_connect_ex = cls.connect, cls.connect_ex
    real_sendto, real_sendmsg = cls.sendto, cls.sendmsg

    def connect(self: socket.socket, address: Any) -> None:
        _check(self, address, "connect")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(self, address, "connect")
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        _check(self, args[-1], "sendto")
        return real_sendto(self, data, *args)

    def sendmsg(self: socket.socket, buffers: Any, *args: Any) -> int:
        if len(args) >= 3 and args[2] is not None:
            _check(self, args[2], "sendmsg")
        return real_sendmsg(self, buffers, *args)

    cls.connect = connect  # type: ignore[method-assign,assignment]
    cls.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    cls.sendto = sendto  # type: ignore[method-assign,assignment]
    cls.sendmsg = sendmsg  # type: ignore[method-assign,assignment]
