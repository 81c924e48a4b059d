"""TLS listening for the peer server (private swarms), with the handshakes bounded.

asyncio's own TLS server (`create_server(ssl=...)`) gives every accepted connection a 256 KiB
buffer and up to a minute to finish its handshake before the peer server's connection guard
sees it, so a host could open connections by the thousand and never shake hands. Here a
connection is accepted as plain TCP and its handshake started with `loop.start_tls`, counted:
at most `per_peer` handshakes under way from one address (a newcomer over that is closed) and
`total` in all (a newcomer then takes the place of the oldest one: an honest handshake takes
milliseconds, so the oldest are the ones that stall), each cut after `timeout` seconds. A
connection whose handshake finished is handed to the HTTP handler (aiohttp's), which the
connection guard then counts like any other.

`start_tls` may deliver the first decrypted bytes before it returns the new transport; the
handler is given its transport first and those bytes after (`_Handoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class HandshakeStats:
    """What the gate refused or cut."""

    refused_per_peer: int = 0
    evicted: int = 0  # handshakes cut to make room for a newcomer
    failed: int = 0  # handshakes that failed or were not done in time


class TLSGate:
    """Accepts TCP connections for `handler_factory`'s protocols, over TLS with `context`."""

    def __init__(
        self,
        handler_factory: Callable[[], Any],
        context: ssl.SSLContext,
        *,
        timeout: float,
        per_peer: int,
        total: int,
    ) -> None:
        self.handler_factory = handler_factory
        self.context = context
        self.timeout = timeout
        self.per_peer = per_peer
        self.total = total
        self.stats = HandshakeStats()
        self._pending: dict[_Gate, str] = {}  # in arrival order
        self._per_address: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []

    @property
    def pending(self) -> int:
        """Handshakes under way."""
        return len(self._pending)

    async def listen(self, host: str, port: int) -> int:
        """Listen on host:port; the port bound (OSError as create_server raises it)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Gate(self), host, port, reuse_address=True)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def stop_listening(self) -> None:
        """Accept no more connections; cut the handshakes under way."""
        for server in self._servers:
            server.close()
        for gate in list(self._pending):
            gate.cut()

    async def closed(self) -> None:
        """Wait until the listening sockets are closed (after the handlers' connections)."""
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), self.timeout)
        self._servers.clear()

    def _admit(self, gate: _Gate, address: str) -> bool:
        held = self._per_address.get(address, 0)
        if held >= self.per_peer:
            self.stats.refused_per_peer += 1
            return False
        if len(self._pending) >= self.total:
            self.stats.evicted += 1
            next(iter(self._pending)).cut()
        self._pending[gate] = address
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return True

    def _done(self, gate: _Gate) -> None:
        address = self._pending.pop(gate, None)
        if address is None:
            return
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]


class _Gate(asyncio.Protocol):
    """A connection until its handshake is done."""

    def __init__(self, owner: TLSGate) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello waits for start_tls
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        if not self._owner._admit(self, address):
            transport.abort()
            return
        self._transport = transport
        self._task = asyncio.ensure_future(self._upgrade(transport))

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._done(self)  # closed before its handshake began

    def cut(self) -> None:
        """Drop the connection mid-handshake."""
        self._owner._done(self)
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        owner = self._owner
        handoff = _Handoff(owner.handler_factory())
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport,
                handoff,
                owner.context,
                server_side=True,
                ssl_handshake_timeout=owner.timeout,
            )
        except asyncio.CancelledError:
            transport.abort()
            return
        except Exception:  # a failed, refused or timed-out handshake: drop it
            owner.stats.failed += 1
            transport.abort()
            return
        finally:
            owner._done(self)
        if secure is None:
            transport.abort()
            return
        handoff.attach(secure)


class _Handoff(asyncio.Protocol):
    """The TLS transport's protocol: passes everything to the HTTP handler once that has its
    transport (what arrives before is held)."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler
        self._attached = False
        self._early: list[bytes] = []
        self._eof = False
        self._lost: tuple[Exception | None] | None = None

    def attach(self, transport: asyncio.BaseTransport) -> None:
        """Give the handler its transport, then whatever arrived meanwhile."""
        self._handler.connection_made(transport)
        self._attached = True
        for data in self._early:
            self._handler.data_received(data)
        self._early.clear()
        if self._eof:
            self._handler.eof_received()
        if self._lost is not None:
            self._handler.connection_lost(self._lost[0])

    def data_received(self, data: bytes) -> None:
        if self._attached:
            self._handler.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._attached:
            return bool(self._handler.eof_received())
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._attached:
            self._handler.connection_lost(exc)
        else:
            self._lost = (exc,)

    def pause_writing(self) -> None:
        if self._attached:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._attached:
            self._handler.resume_writing()
