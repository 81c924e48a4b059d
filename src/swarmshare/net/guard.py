"""Limits on the peer server's connections: how many in all and per address, and how long a
connection may take to send its first request (slow-loris senders are cut off).

It wraps the connection hooks of aiohttp's `web.Server` instance; aiohttp itself bounds header
sizes (`max_line_size`, `max_field_size`) and closes idle keep-alive connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from swarmshare.limits import (
    FIRST_REQUEST_TIMEOUT_SECONDS,
    MAX_CONNECTIONS_PER_PEER,
    MAX_CONNECTIONS_TOTAL,
)


@dataclass
class GuardStats:
    """What the guard refused."""

    refused_total: int = 0
    refused_per_peer: int = 0
    slow_cut: int = 0


class ConnectionGuard:
    """Install on a web.Server with `ConnectionGuard(server)`; mark requests with `started`."""

    def __init__(self, server: web.Server) -> None:
        self.stats = GuardStats()
        self._per_peer: dict[str, int] = {}
        self._total = 0
        self._served: set[int] = set()
        self._open: dict[int, tuple[str, int]] = {}  # handler -> (peer, transport id)
        made: Callable[..., Any] = server.connection_made
        lost: Callable[..., Any] = server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._opened(id(handler), transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self._closed(id(handler))
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def started(self, transport: asyncio.BaseTransport | None) -> None:
        """A request arrived on this connection (it is not a slow loris)."""
        if transport is not None:
            self._served.add(id(transport))

    def _opened(self, handler: int, transport: asyncio.Transport) -> None:
        peer = str((transport.get_extra_info("peername") or ("?",))[0])
        self._open[handler] = (peer, id(transport))
        count = self._per_peer.get(peer, 0)
        self._per_peer[peer] = count + 1
        self._total += 1
        if self._total > MAX_CONNECTIONS_TOTAL:
            self.stats.refused_total += 1
            transport.close()
            return
        if count >= MAX_CONNECTIONS_PER_PEER:
            self.stats.refused_per_peer += 1
            transport.close()
            return
        loop = asyncio.get_running_loop()
        loop.call_later(FIRST_REQUEST_TIMEOUT_SECONDS, self._check_slow, transport)

    def _closed(self, handler: int) -> None:
        entry = self._open.pop(handler, None)
        if entry is None:
            return
        peer, transport = entry
        self._total = max(0, self._total - 1)
        left = self._per_peer.get(peer, 1) - 1
        if left > 0:
            self._per_peer[peer] = left
        else:
            self._per_peer.pop(peer, None)
        self._served.discard(transport)

    def _check_slow(self, transport: asyncio.Transport) -> None:
        if not transport.is_closing() and id(transport) not in self._served:
            self.stats.slow_cut += 1
            transport.close()
