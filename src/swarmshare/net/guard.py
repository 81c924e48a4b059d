"""Limits on the peer server's connections: how many in all and per address, and how long a
connection may go without a request in progress.

How it works: every connection is either busy (a request is being read or answered) or idle
(connected, or kept alive after a reply, waiting for its next request). An idle connection must
deliver its next whole request within `request_timeout` -- the first request and every later
one -- or it is closed: a slow loris is cut whenever it starts. One address may hold at most
`connections_per_peer` connections. When every slot is taken, a new connection takes the slot
of an idle one (from the address holding the most, the one idle longest), so kept-alive
connections that merely wait can never lock honest peers out; only when every connection is busy
is the newcomer refused. Refused connections are closed quietly and counted.

It wraps the connection hooks of aiohttp's `web.Server` instance, and learns when requests start
and end from `middleware` (a request ends when its task, which also writes the reply, ends);
aiohttp itself bounds header sizes (`max_line_size`, `max_field_size`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from swarmshare.limits import (
    MAX_CONNECTIONS_PER_PEER,
    MAX_CONNECTIONS_TOTAL,
    REQUEST_TIMEOUT_SECONDS,
)


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """The bounds the guard keeps (limits.py's by default)."""

    connections_total: int = MAX_CONNECTIONS_TOTAL
    """Connections open at once, from all addresses."""
    connections_per_peer: int = MAX_CONNECTIONS_PER_PEER
    """Connections open at once from one address."""
    request_timeout: float = REQUEST_TIMEOUT_SECONDS
    """Seconds an idle connection has to deliver its next whole request."""


@dataclass
class GuardStats:
    """What the guard refused or closed."""

    refused_total: int = 0
    refused_per_peer: int = 0
    slow_cut: int = 0
    idle_closed: int = 0  # idle connections closed to make room for a new one


class ConnectionGuard:
    """Install on a web.Server with `ConnectionGuard(server)`; requests must pass through
    `middleware` (the peer server adds it)."""

    def __init__(self, server: web.Server, limits: GuardLimits | None = None) -> None:
        self.limits = limits or GuardLimits()
        self.stats = GuardStats()
        self._conns: dict[int, _Connection] = {}  # by id(aiohttp's handler of the connection)
        self._per_peer: dict[str, int] = {}
        made: Callable[..., Any] = server.connection_made
        lost: Callable[..., Any] = server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._opened(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self._forget(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    @property
    def open_connections(self) -> int:
        """Connections holding a slot now."""
        return len(self._conns)

    def started(self, transport: asyncio.BaseTransport | None) -> None:
        """A request arrived on this connection (`middleware` does the work; kept for callers)."""

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Mark the connection busy until this request's task (reply included) ends."""
        conn = self._conns.get(id(request.protocol))
        task = asyncio.current_task()
        if conn is not None and task is not None:
            conn.busy += 1
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
            task.add_done_callback(lambda _task: self._request_done(conn))
        return await handler(request)

    # ---- connections -----------------------------------------------------------------------

    def _opened(self, handler: Any, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        peer = str((transport.get_extra_info("peername") or ("?",))[0])
        limits = self.limits
        if self._per_peer.get(peer, 0) >= limits.connections_per_peer:
            self.stats.refused_per_peer += 1
            self._refuse(handler)
            return
        if len(self._conns) >= limits.connections_total:
            victim = self._idle_victim()
            if victim is None:
                self.stats.refused_total += 1
                self._refuse(handler)
                return
            self.stats.idle_closed += 1
            self._close(victim)
        conn = _Connection(peer, handler, transport)
        self._conns[id(handler)] = conn
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        self._wait_for_request(conn, loop)

    @staticmethod
    def _refuse(handler: Any) -> None:
        # Not at once: aiohttp starts the connection's task after this hook returns, and a
        # connection lost before that task runs makes it fail an assertion (a traceback each).
        asyncio.get_running_loop().call_soon(handler.force_close)

    def _idle_victim(self) -> _Connection | None:
        """The idle connection to close for a newcomer: from the address holding the most
        connections, the one idle longest."""
        idle = [c for c in self._conns.values() if c.busy == 0]
        if not idle:
            return None
        return max(idle, key=lambda c: (self._per_peer.get(c.peer, 0), -c.since))

    def _wait_for_request(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        conn.since = loop.time()
        conn.timer = loop.call_at(conn.since + self.limits.request_timeout, self._expire, conn)

    def _request_done(self, conn: _Connection) -> None:
        conn.busy -= 1
        if conn.busy == 0 and self._conns.get(id(conn.handler)) is conn:
            self._wait_for_request(conn, asyncio.get_running_loop())

    def _expire(self, conn: _Connection) -> None:
        conn.timer = None
        if conn.busy == 0 and self._conns.get(id(conn.handler)) is conn:
            self.stats.slow_cut += 1
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        """Close a connection and free its slot now (aiohttp reports the loss later)."""
        self._release(conn)
        conn.transport.close()

    def _forget(self, handler: Any) -> None:
        conn = self._conns.get(id(handler))
        if conn is not None and conn.handler is handler:
            self._release(conn)

    def _release(self, conn: _Connection) -> None:
        if self._conns.get(id(conn.handler)) is not conn:
            return
        del self._conns[id(conn.handler)]
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        left = self._per_peer.get(conn.peer, 1) - 1
        if left > 0:
            self._per_peer[conn.peer] = left
        else:
            self._per_peer.pop(conn.peer, None)


@dataclass(eq=False, slots=True)
class _Connection:
    """One admitted connection: its address, transport, requests in progress, and since when
    it has been idle (with the timer that cuts it)."""

    peer: str
    handler: Any
    transport: asyncio.Transport
    busy: int = 0
    since: float = 0.0
    timer: asyncio.TimerHandle | None = field(default=None)
