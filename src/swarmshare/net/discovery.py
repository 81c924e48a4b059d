"""UDP discovery: send this peer's announcement, hear everyone else's.

Two sockets. The listener is bound to the wildcard address on the discovery port with
SO_REUSEADDR, because a socket bound to one address hears no broadcasts, and several peers may
share a host. The sender is bound to this peer's own address (so receivers see the right source)
on an ephemeral port; it sends every announcement and hears unicast answers to solicitations.

Announcements go out at start (soliciting answers), soon after every catalogue change (debounced
by CHANGE_ANNOUNCE_DELAY_SECONDS), every interval, and as a `bye` at shutdown.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from swarmshare.core.announce import (
    Announcement,
    decode_announcement,
    decode_private,
    encode_private,
    is_native,
)
from swarmshare.core.ratelimit import RateLimiter
from swarmshare.errors import DaemonError, RemoteProtocolError
from swarmshare.limits import (
    CHANGE_ANNOUNCE_DELAY_SECONDS,
    DATAGRAM_BURST_PER_SOURCE,
    DATAGRAMS_PER_SECOND_PER_SOURCE,
    MAX_DATAGRAM_BYTES,
    SOLICIT_REPLY_MAX_DELAY_SECONDS,
)

Address = tuple[str, int]
OnAnnouncement = Callable[[Announcement, str], None]
OnForeign = Callable[[bytes, str], None]


@dataclass
class DiscoveryStats:
    """Counters of what discovery received."""

    received: int = 0
    announcements: int = 0
    malformed: int = 0
    oversized: int = 0
    rate_limited: int = 0
    foreign: int = 0
    sent: int = 0
    send_errors: int = 0


class Discovery:
    """Announces this peer and hears others; use as `async with Discovery(...) as d:`."""

    def __init__(
        self,
        *,
        port: int,
        bind: str,
        targets: list[str],
        unicast: list[Address],
        interval: float,
        make_announcement: Callable[[bool], Announcement],
        on_announcement: OnAnnouncement,
        on_foreign: OnForeign | None = None,
        listen: bool = True,
        key: bytes | None = None,
    ) -> None:
        self.port = port
        self.bind = bind
        self.targets = targets
        self.unicast = unicast
        self.interval = interval
        self.stats = DiscoveryStats()
        self._make = make_announcement
        self._on_announcement = on_announcement
        self._on_foreign = on_foreign
        self._listen = listen
        self._key = key
        self._limiter = RateLimiter(DATAGRAMS_PER_SECOND_PER_SOURCE, DATAGRAM_BURST_PER_SOURCE)
        self._transports: list[asyncio.DatagramTransport] = []
        self._sender: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._change = asyncio.Event()

    async def __aenter__(self) -> Discovery:
        loop = asyncio.get_running_loop()
        try:
            if self._listen:
                listener = _udp_socket(("", self.port), broadcast=False)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), sock=listener
                )
                self._transports.append(transport)
            sender = _udp_socket((self.bind, 0), broadcast=True)
            self._sender, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), sock=sender
            )
            self._transports.append(self._sender)
        except OSError as exc:
            self._close_transports()
            raise DaemonError(
                f"cannot use UDP discovery port {self.port} on {self.bind}: {exc.strerror}"
            ) from None
        self.send(solicit=True)
        self._spawn(self._periodic())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._close_transports()

    @property
    def sender_address(self) -> Address | None:
        """The (address, port) announcements are sent from."""
        if self._sender is None:
            return None
        sockname: Address = self._sender.get_extra_info("sockname")
        return sockname

    def send(self, *, solicit: bool = False, bye: bool = False) -> None:
        """Send the current announcement to every target now."""
        ann = self._make(solicit)
        if bye:
            ann = Announcement(
                ann.peer_id, ann.port, ann.name, ann.catalog_version, ann.interval, False, True
            )
        data = self._encode(ann)
        for target in self.targets:
            self._sendto(data, (target, self.port))
        if self.unicast:
            # Unicast peers always get a solicit, so that they answer back across subnets.
            ask = self._encode(
                Announcement(
                    ann.peer_id,
                    ann.port,
                    ann.name,
                    ann.catalog_version,
                    ann.interval,
                    not bye,
                    bye,
                )
            )
            for address in self.unicast:
                self._sendto(ask, address)

    def send_raw(self, data: bytes) -> None:
        """Send pre-encoded datagram bytes to every broadcast target (legacy announcements)."""
        for target in self.targets:
            self._sendto(data, (target, self.port))

    def changed(self) -> None:
        """The catalogue changed: announce within CHANGE_ANNOUNCE_DELAY_SECONDS."""
        self._change.set()

    def _encode(self, ann: Announcement) -> bytes:
        if self._key is None:
            return ann.encode()
        return encode_private(ann, self._key, time.time())

    def _sendto(self, data: bytes, address: Address) -> None:
        if self._sender is None:
            return
        try:
            self._sender.sendto(data, address)
            self.stats.sent += 1
        except OSError:
            self.stats.send_errors += 1

    def _received(self, data: bytes, address: Address) -> None:
        self.stats.received += 1
        if not self._limiter.allow(address[0], time.monotonic()):
            self.stats.rate_limited += 1
            return
        if len(data) > MAX_DATAGRAM_BYTES:
            self.stats.oversized += 1
            return
        if self._key is not None:
            try:
                ann = decode_private(data, self._key, time.time())
            except RemoteProtocolError:
                self.stats.foreign += 1  # open peers, other swarms, forgeries: all dropped
                return
        elif not is_native(data):
            self.stats.foreign += 1
            if self._on_foreign is not None:
                self._on_foreign(data, address[0])
            return
        else:
            try:
                ann = decode_announcement(data)
            except RemoteProtocolError:
                self.stats.malformed += 1
                return
        self.stats.announcements += 1
        if ann.solicit and ann.peer_id != self._make(False).peer_id:
            self._spawn(self._answer(address))
        self._on_announcement(ann, address[0])

    async def _answer(self, address: Address) -> None:
        await asyncio.sleep(random.uniform(0, SOLICIT_REPLY_MAX_DELAY_SECONDS))
        ann = self._make(False)
        if ann.port:
            self._sendto(self._encode(ann), address)

    async def _periodic(self) -> None:
        loop = asyncio.get_running_loop()
        next_due = loop.time() + self.interval
        while True:
            try:
                await asyncio.wait_for(self._change.wait(), max(0.0, next_due - loop.time()))
            except TimeoutError:
                pass
            if self._change.is_set():
                await asyncio.sleep(CHANGE_ANNOUNCE_DELAY_SECONDS)
                self._change.clear()
            self.send()
            next_due = loop.time() + self.interval

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_transports(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        self._sender = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: Discovery) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            self._owner._received(data, addr)
        except Exception:  # one bad datagram must never stop discovery
            self._owner.stats.malformed += 1

    def error_received(self, exc: Exception) -> None:
        self._owner.stats.send_errors += 1


def _udp_socket(address: Address, *, broadcast: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def monotonic() -> float:
    """The clock discovery's callers use for `now`."""
    return time.monotonic()
