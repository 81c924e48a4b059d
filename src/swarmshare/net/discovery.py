"""UDP discovery: send this peer's announcement, hear everyone else's.

Two sockets. The listener is bound to the wildcard address on the discovery port with
SO_REUSEADDR, because a socket bound to one address hears no broadcasts, and several peers may
share a host. The sender is bound to this peer's own address (so receivers see the right source)
on an ephemeral port; it sends every announcement and hears unicast answers to solicitations.

When announcements go out is decided by the pure `AnnouncePacer` (core/pacing.py): this
adapter hands it the time and arms one timer for its next deadline. The clock is the event
loop's (`loop.time()`) unless one is passed in; wall-clock time is used only for the timestamp a
private-swarm announcement carries to other machines. A `bye` goes out at shutdown (Swarm).

In a private swarm every announcement is signed together with the address it is sent from, and
a receiver drops one whose signed address is not the datagram's source: a copy rebroadcast from
another host proves nothing.

IPv6 (for IPv6-only networks): given interfaces, two more sockets do the same over the
link-local multicast group DISCOVERY_GROUP_V6 on the same port, joined and sent to on each
interface (its index is the scope). The datagram is the same; a receiver takes the source
address with its scope (`fe80::1%eth0`), which is what the peer client connects to. A private
announcement is signed with the sender's link-local address without scope (the scope is a
local interface name, different on each host).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from swarmshare.core.announce import (
    Announcement,
    decode_announcement,
    decode_private,
    encode_private,
    is_native,
)
from swarmshare.core.pacing import AnnouncePacer, Answer, Broadcast
from swarmshare.core.ratelimit import RateLimiter
from swarmshare.errors import DaemonError, RemoteProtocolError
from swarmshare.limits import (
    DATAGRAM_BURST_PER_SOURCE,
    DATAGRAMS_PER_SECOND_PER_SOURCE,
    MAX_DATAGRAM_BYTES,
    SOLICIT_REPLY_MAX_DELAY_SECONDS,
)
from swarmshare.net.interfaces import Ipv6Interface, scoped

DISCOVERY_GROUP_V6 = "ff12::7377:6172:6d73"
"""IPv6 discovery's multicast group: transient (1), link-local scope (2)."""

Address = tuple[str, int]
OnAnnouncement = Callable[[Announcement, str], None]
OnForeign = Callable[[bytes, str], None]
Clock = Callable[[], float]


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
    others_ipv4: int = 0
    """Announcements from other peers over IPv4 (and over IPv6, below)."""
    others_ipv6: int = 0


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
        clock: Clock | None = None,
        ipv6: list[Ipv6Interface] | None = None,
    ) -> None:
        """`clock` (default: the running loop's `time`) is what `now` is everywhere here;
        `ipv6`: the interfaces to also announce and listen on over IPv6 multicast."""
        self.port = port
        self.bind = bind
        self.targets = targets
        self.unicast = unicast
        self.interval = interval
        self.ipv6 = list(ipv6 or [])
        self.stats = DiscoveryStats()
        self._make = make_announcement
        self._on_announcement = on_announcement
        self._on_foreign = on_foreign
        self._listen = listen
        self._key = key
        self._limiter = RateLimiter(DATAGRAMS_PER_SECOND_PER_SOURCE, DATAGRAM_BURST_PER_SOURCE)
        self._transports: list[asyncio.DatagramTransport] = []
        self._sender: asyncio.DatagramTransport | None = None
        self._sender6: asyncio.DatagramTransport | None = None
        self._clock_arg = clock
        self.clock: Clock = time.monotonic
        self._pacer: AnnouncePacer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sources: dict[str, str] = {}

    async def __aenter__(self) -> Discovery:
        loop = asyncio.get_running_loop()
        self.clock = self._clock_arg or loop.time
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
        if self.ipv6:
            try:
                await self._open_ipv6(loop)
            except OSError as exc:
                self._close_transports()
                raise DaemonError(
                    f"cannot use UDP discovery port {self.port} on IPv6: {exc.strerror}"
                ) from None
        self._pacer = AnnouncePacer(self.interval, self.clock())
        self.wake()  # the first announcement, soliciting answers, goes out now
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pacer = None
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
            ann = replace(ann, solicit=False, bye=True)
        for target in self.targets:
            self._sendto(self._encode(ann, target), (target, self.port))
        for interface in self.ipv6:
            data = self._encode(ann, DISCOVERY_GROUP_V6, interface.link_local)
            self._sendto(data, (DISCOVERY_GROUP_V6, self.port, 0, interface.index))
        if self.unicast:
            # Unicast peers always get a solicit, so that they answer back across subnets.
            ask = replace(ann, solicit=not bye, bye=bye)
            for address in self.unicast:
                self._sendto(self._encode(ask, address[0]), address)

    def send_raw(self, data: bytes) -> None:
        """Send pre-encoded datagram bytes to every broadcast target (legacy announcements)."""
        for target in self.targets:
            self._sendto(data, (target, self.port))

    def changed(self) -> None:
        """The catalogue changed: announce within CHANGE_ANNOUNCE_DELAY_SECONDS."""
        if self._pacer is not None:
            self._pacer.changed(self.clock())
            self._arm()

    def wake(self) -> None:
        """Send what is due now and arm the timer for the next deadline (the timer calls this;
        a test that moves a fake clock may too)."""
        if self._pacer is None:
            return
        for due in self._pacer.due(self.clock()):
            if isinstance(due, Broadcast):
                self._sources.clear()  # addresses may have changed since the last interval
                self.send(solicit=due.solicit)
            elif isinstance(due, Answer):
                ann = self._make(False)
                if ann.port:
                    self._sendto(self._encode(ann, due.address[0]), due.address)
        self._arm(force=True)

    def _arm(self, force: bool = False) -> None:
        if self._pacer is None:
            return
        deadline = self._pacer.next_deadline()
        if self._timer is not None:
            if not force and deadline >= self._timer_at:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - self.clock()), self.wake)

    def _encode(self, ann: Announcement, target: str, source: str | None = None) -> bytes:
        if self._key is None:
            return ann.encode()
        signed_source = source or self._source_for(target)
        return encode_private(ann, self._key, time.time(), signed_source)

    def _source_for(self, target: str) -> str:
        """The address datagrams to `target` leave from (the kernel's choice for a wildcard
        bind, asked by connecting a throw-away UDP socket, which sends nothing)."""
        ipv6 = ":" in target
        if self.bind not in ("", "0.0.0.0") and not ipv6:
            return self.bind
        source = self._sources.get(target)
        if source is None:
            family = socket.AF_INET6 if ipv6 else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                try:
                    if not ipv6:
                        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    probe.connect((target, self.port))
                    source = str(probe.getsockname()[0]).split("%")[0]
                except OSError:
                    source = "::" if ipv6 else "0.0.0.0"
            self._sources[target] = source
        return source

    def _sendto(self, data: bytes, address: tuple[str, int] | tuple[str, int, int, int]) -> None:
        sender = self._sender6 if ":" in address[0] else self._sender
        if sender is None:
            return
        try:
            sender.sendto(data, address)
            self.stats.sent += 1
        except OSError:
            self.stats.send_errors += 1

    async def _open_ipv6(self, loop: asyncio.AbstractEventLoop) -> None:
        """The IPv6 listener (joined to the group on each interface) and sender."""
        if self._listen:
            listener = _udp6_socket(self.port)
            joined = []
            for interface in self.ipv6:
                group = socket.inet_pton(socket.AF_INET6, DISCOVERY_GROUP_V6)
                try:
                    listener.setsockopt(
                        socket.IPPROTO_IPV6,
                        socket.IPV6_JOIN_GROUP,
                        group + struct.pack("@I", interface.index),
                    )
                except OSError:
                    continue  # an interface without multicast: not announced on either
                joined.append(interface)
            self.ipv6 = joined
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), sock=listener
            )
            self._transports.append(transport)
        sender = _udp6_socket(0)
        self._sender6, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sender)
        self._transports.append(self._sender6)

    def _received(self, data: bytes, address: tuple[str, int] | tuple[str, int, int, int]) -> None:
        self.stats.received += 1
        now = self.clock()
        if len(address) == 4:  # IPv6: keep the scope of a link-local source
            address = (scoped(address[0], address[3]), address[1])
        if not self._limiter.allow(address[0], now):
            self.stats.rate_limited += 1
            return
        if len(data) > MAX_DATAGRAM_BYTES:
            self.stats.oversized += 1
            return
        if self._key is not None:
            try:
                signed = address[0].split("%")[0]
                ann = decode_private(data, self._key, time.time(), signed)
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
        own = ann.peer_id == self._make(False).peer_id
        if not own:
            if ":" in address[0]:
                self.stats.others_ipv6 += 1
            else:
                self.stats.others_ipv4 += 1
        if ann.solicit and self._pacer is not None and not own:
            delay = random.uniform(0, SOLICIT_REPLY_MAX_DELAY_SECONDS)
            self._pacer.solicited((address[0], address[1]), now, delay)
            self._arm()
        self._on_announcement(ann, address[0])

    def _close_transports(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        self._sender = None
        self._sender6 = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: Discovery) -> None:
        self._owner = owner

    def datagram_received(
        self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]
    ) -> None:
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


def _udp6_socket(port: int) -> socket.socket:
    """An IPv6-only UDP socket on every IPv6 address, multicasting on the link only."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("::", port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
