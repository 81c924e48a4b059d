"""LocalSend at the edge: discovery (UDP), a receiver (HTTPS server) and a sender (HTTPS client).

The messages are `core.localsend`'s; this module moves them over sockets.

- `LocalSendDiscovery` announces this device to a group (the protocol's multicast group, or in
  tests a loopback broadcast address), remembers the devices it hears, and answers an
  announcement by `POST /register` to the announcer (or, failing that, a datagram).
- `LocalSendReceiver` serves `/api/localsend/v2/{info,register,prepare-upload,upload,cancel}`
  over HTTPS with this peer's certificate. Unlike LocalSend's own receiver it keeps several
  sessions at once. An offer is put to `decide` (the accept rule, maybe a person); each file is
  written to a part file beside its final name, checked against the announced size, synced,
  and only then renamed into place: a cut connection or a cancel leaves nothing under a final
  name.
- `LocalSendSender` offers files to a device and uploads them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from swarmshare.core.localsend import (
    BadFileName,
    DeviceInfo,
    FileOffer,
    LocalSendError,
    SwarmOffer,
    UploadGrant,
    UploadOffer,
    decode_announcement,
    decode_device_bytes,
    decode_grant,
    decode_offer,
    decode_swarm_offer,
    encode_announcement,
    encode_grant,
    encode_offer,
    encode_swarm_offer,
)
from swarmshare.errors import DaemonError, NotFoundError, SwarmshareError
from swarmshare.limits import (
    CONNECT_TIMEOUT_SECONDS,
    LOCALSEND_ANSWER_GAP_SECONDS,
    LOCALSEND_DECISION_SECONDS,
    LOCALSEND_PIN_WINDOW_SECONDS,
    LOCALSEND_SESSION_IDLE_SECONDS,
    LOCALSEND_UPLOAD_IDLE_SECONDS,
    MAX_LOCALSEND_ANSWERS_IN_FLIGHT,
    MAX_LOCALSEND_DEVICES,
    MAX_LOCALSEND_JSON_BYTES,
    MAX_LOCALSEND_OFFER_BYTES,
    MAX_LOCALSEND_PIN_FAILURES,
    MAX_LOCALSEND_SESSIONS,
    MAX_TLS_HANDSHAKES_PER_PEER,
    MAX_TLS_HANDSHAKES_TOTAL,
    REQUEST_TIMEOUT_SECONDS,
)
from swarmshare.net.guard import ConnectionGuard, GuardLimits
from swarmshare.net.interfaces import ipv4_interfaces, is_wildcard
from swarmshare.net.tlsgate import TLSGate

log = logging.getLogger("swarmshare")

API = "/api/localsend/v2"
PART_SUFFIX = ".part"
READ_BYTES = 1 << 20  # what a sent file is read in
SINK_BATCH_BYTES = 4 << 20  # what a received file is written and hashed in, off the event loop
SINK_SYNC_BYTES = 64 << 20  # pushed to the disk after this many bytes (not only at the end)
LINGER_SECONDS = 1.0  # for the rest of a body not taken
SHUTDOWN_SECONDS = 3.0  # for requests under way when the receiver stops
Decide = Callable[["Offer"], Awaitable[bool]]
Received = Callable[[Path], None]
Fetch = Callable[[SwarmOffer, str], Awaitable[None]]
"""Fetch a content through the swarm (the offer, the sender's address); NotFoundError when
this peer's swarm does not have it (the sender then uploads it), OfferMismatch when its
manifest does not name the file offered, another SwarmshareError when it cannot be had."""


class OfferMismatch(SwarmshareError):
    """A swarm offer's content is not the file it was offered as (name or size)."""


class LocalSendRefused(SwarmshareError):
    """A device answered an offer or upload with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Device:
    """A LocalSend device heard on the network: what it says, and where it was heard."""

    info: DeviceInfo
    address: str
    seen: float

    def as_json(self) -> dict[str, Any]:
        """The device as `send` and status show it."""
        i = self.info
        return {
            "alias": i.alias,
            "address": self.address,
            "port": i.port,
            "protocol": i.protocol,
            "fingerprint": i.fingerprint,
            "device_model": i.device_model,
            "device_type": i.device_type,
            "swarmshare": i.is_swarmshare,
        }


@dataclass(frozen=True)
class Offer:
    """An offer waiting for the accept rule: who (and from where), which files."""

    id: str
    offer: UploadOffer
    address: str
    created: float

    def as_json(self) -> dict[str, Any]:
        """The offer as `swarmshare inbox` shows it."""
        return {
            "id": self.id,
            "from": self.offer.sender.alias,
            "address": self.address,
            "device_model": self.offer.sender.device_model,
            "files": [{"name": f.name, "size": f.size} for f in self.offer.files],
            "size": self.offer.total_bytes,
            "created": self.created,
        }


# ---- discovery -----------------------------------------------------------------------------


class LocalSendDiscovery:
    """Announce `info` to `group`:`port` and hear other devices (`async with`)."""

    def __init__(
        self,
        info: DeviceInfo,
        bind: str,
        group: str,
        port: int,
        client_context: ssl.SSLContext | None = None,
        *,
        listen: bool = True,
    ) -> None:
        self.info = info
        self.bind = bind
        self.group = group
        self.port = port
        self.listen = listen
        self.devices: dict[str, Device] = {}
        self._client_context = client_context
        self._transports: list[asyncio.DatagramTransport] = []
        self._sender: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._answered: dict[str, float] = {}
        self._heard = asyncio.Event()
        self._network = _bound_network(bind)

    async def __aenter__(self) -> LocalSendDiscovery:
        loop = asyncio.get_running_loop()
        multicast = _is_multicast(self.group)
        wildcard = self.bind in ("", "0.0.0.0")
        if self.listen:
            listener = _udp_socket(("", self.port))
            if multicast:
                interface = socket.inet_aton("0.0.0.0" if wildcard else self.bind)
                mreq = struct.pack("4s4s", socket.inet_aton(self.group), interface)
                listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self._received), sock=listener
            )
            self._transports.append(transport)
        sender = _udp_socket((self.bind, 0))
        if multicast:
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            if not wildcard:
                sender.setsockopt(
                    socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.bind)
                )
        else:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self._sender, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._received), sock=sender
        )
        self._transports.append(self._sender)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for transport in self._transports:
            transport.close()

    def announce(self, announce: bool = True) -> None:
        """Send this device's datagram to the group."""
        if self._sender is not None:
            with contextlib.suppress(OSError):
                data = encode_announcement(self.info, announce)
                self._sender.sendto(data, (self.group, self.port))

    def hears(self, address: str) -> bool:
        """Whether a device at `address` is one this discovery is for: any, when bound to
        every interface; else one on the bound address's network (the listening socket, bound
        to every address to hear broadcasts, hears the other interfaces' datagrams too)."""
        if self._network is None:
            return True
        try:
            return ipaddress.ip_address(address) in self._network
        except ValueError:
            return False

    def record(self, info: DeviceInfo, address: str) -> None:
        """Remember a device heard (by announcement or register) on this discovery's network."""
        if not info.fingerprint or info.fingerprint == self.info.fingerprint:
            return
        if not self.hears(address):
            return
        if info.fingerprint not in self.devices and len(self.devices) >= MAX_LOCALSEND_DEVICES:
            oldest = min(self.devices.values(), key=lambda d: d.seen)
            del self.devices[oldest.info.fingerprint]
        self.devices[info.fingerprint] = Device(info, address, time.monotonic())
        self._heard.set()

    def find(self, name: str) -> list[Device]:
        """The devices whose alias (or fingerprint) is `name`, case blind."""
        wanted = name.casefold()
        return [
            d
            for d in self.devices.values()
            if d.info.alias.casefold() == wanted or d.info.fingerprint.casefold() == wanted
        ]

    async def wait_heard(self, seconds: float) -> None:
        """Until a device is heard anew or `seconds` passed."""
        self._heard.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._heard.wait(), seconds)

    def _received(self, data: bytes, address: tuple[str, int]) -> None:
        if not self.hears(address[0]):
            return
        try:
            info = decode_announcement(data)
        except LocalSendError:
            return
        if info.fingerprint == self.info.fingerprint:
            return
        self.record(info, address[0])
        if info.announce and self.listen and self._may_answer(address[0]):
            task = asyncio.get_running_loop().create_task(self._answer(info, address[0]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _may_answer(self, address: str) -> bool:
        """Answer an address at most once in a while, and only a few at once: a datagram's
        source can be forged, and each answer is a connection to it."""
        now = time.monotonic()
        if len(self._tasks) >= MAX_LOCALSEND_ANSWERS_IN_FLIGHT:
            return False
        if now - self._answered.get(address, -LOCALSEND_ANSWER_GAP_SECONDS) < (
            LOCALSEND_ANSWER_GAP_SECONDS
        ):
            return False
        if len(self._answered) >= MAX_LOCALSEND_DEVICES:
            self._answered.clear()
        self._answered[address] = now
        return True

    async def _answer(self, info: DeviceInfo, address: str) -> None:
        """Register with an announcer over HTTP(S); a datagram when that fails."""
        url = f"{info.protocol}://{_host(address)}:{info.port}{API}/register"
        try:
            async with (
                _client(self._client_context, self.bind) as http,
                http.post(url, data=encode_announcement(self.info, False)) as reply,
            ):
                if reply.status == 200:
                    return
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        self.announce(announce=False)


def _bound_network(bind: str) -> ipaddress.IPv4Network | None:
    """The network of the interface that has address `bind` (None: every interface)."""
    if is_wildcard(bind):
        return None
    try:
        address = ipaddress.IPv4Address(bind)
    except ValueError:
        return None
    if address.is_loopback:
        return ipaddress.IPv4Network("127.0.0.0/8")
    for _name, interface in ipv4_interfaces():
        if interface.ip == address:
            return interface.network
    return ipaddress.IPv4Network(f"{address}/32")


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._received = received

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass


# ---- the receiver --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiverLimits:
    """The bounds a receiver keeps (limits.py's by default; tests pass smaller ones)."""

    sessions: int = MAX_LOCALSEND_SESSIONS
    """Offers pending, sessions open and swarm fetches running, at once."""
    session_idle_seconds: float = LOCALSEND_SESSION_IDLE_SECONDS
    """An accepted session with no upload under way for this long ends."""
    upload_idle_seconds: float = LOCALSEND_UPLOAD_IDLE_SECONDS
    """An upload that delivers no byte for this long ends, and its session with it."""
    connections: GuardLimits = field(default_factory=GuardLimits)
    """Connections at once, in all and per address (as the peer server's)."""
    handshakes_total: int = MAX_TLS_HANDSHAKES_TOTAL
    handshakes_per_peer: int = MAX_TLS_HANDSHAKES_PER_PEER
    handshake_seconds: float = REQUEST_TIMEOUT_SECONDS
    """TLS handshakes under way at once (in all, per address) and the time each has."""
    offer_bytes: int = MAX_LOCALSEND_OFFER_BYTES
    """An offer's files together (and never more than the download folder's free space)."""
    pin_failures: int = MAX_LOCALSEND_PIN_FAILURES
    pin_window_seconds: float = LOCALSEND_PIN_WINDOW_SECONDS
    """After `pin_failures` wrong PINs within the window an address gets 429, right PIN or not."""


@dataclass
class _Session:
    id: str
    offer: UploadOffer
    address: str
    folder: Path
    tokens: dict[str, str]
    files: dict[str, FileOffer]
    done: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    parts: set[Path] = field(default_factory=set)
    cancelled: bool = False
    touched: float = field(default_factory=time.monotonic)


class LocalSendReceiver:
    """The LocalSend HTTPS server of this peer (`async with`)."""

    def __init__(
        self,
        discovery: LocalSendDiscovery,
        server_context: ssl.SSLContext | None,
        bind: str,
        port: int,
        folder: Callable[[], Path],
        decide: Decide,
        received: Received,
        pin: str | None = None,
        fetch: Fetch | None = None,
        limits: ReceiverLimits | None = None,
    ) -> None:
        self.discovery = discovery
        self.limits = limits or ReceiverLimits()
        self._fetch = fetch
        self.bind = bind
        self.port = port
        self.pin = pin
        self.offers: dict[str, Offer] = {}
        self.sessions: dict[str, _Session] = {}
        self.received_files = 0
        self.refused = 0
        self._folder = folder
        self._decide = decide
        self._received = received
        self._context = server_context
        self._runner: web.AppRunner | None = None
        self.guard: ConnectionGuard | None = None
        self.handshakes: TLSGate | None = None
        self._pin_failures: dict[str, collections.deque[float]] = {}
        self._fetching = 0  # swarm fetches running
        app = web.Application(client_max_size=MAX_LOCALSEND_JSON_BYTES)
        app.middlewares.append(self._guarded)
        r = app.router
        r.add_get(f"{API}/info", self._info)
        r.add_post(f"{API}/register", self._register)
        r.add_post(f"{API}/prepare-upload", self._prepare)
        r.add_post(f"{API}/upload", self._upload)
        r.add_post(f"{API}/cancel", self._cancel)
        if fetch is not None:
            r.add_post(f"{API}/swarmshare-fetch", self._swarm_fetch)
        self._app = app

    async def __aenter__(self) -> LocalSendReceiver:
        """Listen behind the peer server's bounds: TLS handshakes counted and cut by a
        `TLSGate`, connections by a `ConnectionGuard`."""
        limits = self.limits
        # A refused or cut upload's unread body is waited for a moment only (the sender of a
        # stalled one would hold its connection on), and closing waits for no stalled sender.
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            lingering_time=LINGER_SECONDS,
            shutdown_timeout=SHUTDOWN_SECONDS,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        self.guard = ConnectionGuard(self._runner.server, limits.connections)
        host = self.bind  # "": every address, IPv4 and IPv6
        try:
            if self._context is not None:
                self.handshakes = TLSGate(
                    self._runner.server,
                    self._context,
                    timeout=limits.handshake_seconds,
                    per_peer=limits.handshakes_per_peer,
                    total=limits.handshakes_total,
                )
                self.port = await self.handshakes.listen(host, self.port)
            else:
                site = web.TCPSite(self._runner, host, self.port)
                await site.start()
                sockets = getattr(site._server, "sockets", None) or []
                self.port = int(sockets[0].getsockname()[1])
        except OSError as exc:
            await self._runner.cleanup()
            raise DaemonError(
                f"cannot serve LocalSend on {self.bind}:{self.port}: {exc.strerror}"
            ) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in list(self.sessions.values()):
            self._end(session, cancelled=True)
        if self.handshakes is not None:
            self.handshakes.stop_listening()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.handshakes is not None:
            await self.handshakes.closed()

    @web.middleware
    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.guard is None:
            return await handler(request)
        return await self.guard.middleware(request, handler)

    def status(self) -> dict[str, Any]:
        """What `status` shows of the receiver."""
        return {
            "port": self.port,
            "fingerprint": self.discovery.info.fingerprint,
            "sessions": len(self.sessions),
            "offers": len(self.offers),
            "received_files": self.received_files,
            "refused": self.refused,
            "devices": [d.as_json() for d in self.discovery.devices.values()],
        }

    async def _info(self, _request: web.Request) -> web.Response:
        return _json(self.discovery.info.as_json())

    async def _register(self, request: web.Request) -> web.Response:
        try:
            info = decode_device_bytes(await _body(request))
        except LocalSendError as exc:
            return _fail(400, str(exc))
        if request.remote:
            fingerprint = _peer_fingerprint(request)
            self.discovery.record(
                replace(info, fingerprint=fingerprint) if fingerprint else info, request.remote
            )
        return _json(self.discovery.info.as_json())

    def _pin_refusal(self, request: web.Request) -> web.Response | None:
        """None when the request may go on; else 401 (wrong or missing PIN) or 429 (too many
        wrong PINs from this address lately: then even the right one waits)."""
        if self.pin is None:
            return None
        address = request.remote or "?"
        now = time.monotonic()
        limits = self.limits
        failures = self._pin_failures.get(address)
        if failures is not None:
            while failures and now - failures[0] > limits.pin_window_seconds:
                failures.popleft()
            if not failures:
                del self._pin_failures[address]
            elif len(failures) >= limits.pin_failures:
                return _fail(429, "too many wrong PINs from this address; try again in a minute")
        given = request.query.get("pin")
        if given is not None and secrets.compare_digest(given.encode(), self.pin.encode()):
            return None
        if given is not None:  # a missing PIN is a question; a wrong one is a guess
            if address not in self._pin_failures and len(self._pin_failures) >= (
                MAX_LOCALSEND_DEVICES
            ):
                del self._pin_failures[next(iter(self._pin_failures))]
            self._pin_failures.setdefault(address, collections.deque()).append(now)
        return _fail(401, "wrong or missing PIN")

    async def _prepare(self, request: web.Request) -> web.StreamResponse:
        refusal = self._pin_refusal(request)
        if refusal is not None:
            await _drain(request)
            return refusal
        try:
            offer = decode_offer(await _body(request))
        except BadFileName as exc:
            self.refused += 1
            return _fail(400, str(exc))
        except LocalSendError as exc:
            return _fail(400, str(exc))
        self._expire()
        if not offer.files:
            return web.Response(status=204)
        too_big = self._room_refusal(offer.total_bytes)
        if too_big is not None:
            self.refused += 1
            return too_big
        if self._busy():
            return _fail(409, "too many transfers at once; try again later")
        if not await self._put_to_rule(offer, request.remote or ""):
            log.info("LocalSend: refused %d file(s) from %r", len(offer.files), offer.sender.alias)
            return _fail(403, "refused")
        session = _Session(
            id=secrets.token_hex(16),
            offer=offer,
            address=request.remote or "",
            folder=self._folder(),
            tokens={f.id: secrets.token_hex(16) for f in offer.files},
            files={f.id: f for f in offer.files},
        )
        self.sessions[session.id] = session
        log.info(
            "LocalSend: receiving %d file(s), %d bytes from %r",
            len(offer.files),
            offer.total_bytes,
            offer.sender.alias,
        )
        body = encode_grant(UploadGrant(session.id, session.tokens))
        return web.Response(body=body, content_type="application/json")

    async def _put_to_rule(self, offer: UploadOffer, remote: str) -> bool:
        """Hold the offer in the inbox until the accept rule decides (or the deadline passes);
        a refusal is counted."""
        pending = Offer(secrets.token_hex(4), offer, remote, time.time())
        self.offers[pending.id] = pending
        try:
            accepted = await asyncio.wait_for(self._decide(pending), LOCALSEND_DECISION_SECONDS)
        except TimeoutError:
            accepted = False
        finally:
            self.offers.pop(pending.id, None)
        if not accepted:
            self.refused += 1
        return accepted

    def _busy(self) -> bool:
        """Whether offers pending, sessions and swarm fetches fill every slot."""
        return len(self.sessions) + len(self.offers) + self._fetching >= self.limits.sessions

    def _room_refusal(self, size: int) -> web.Response | None:
        """413 for an offer over the limit, 507 for one the download folder has no room for
        (beside what the sessions under way still bring); else None."""
        if size > self.limits.offer_bytes:
            return _fail(413, f"{size} bytes is more than this device takes at once")
        coming = sum(
            f.size for s in self.sessions.values() for i, f in s.files.items() if i not in s.done
        )
        free = _free_bytes(self._folder())
        if free is not None and size + coming > free:
            return _fail(507, f"not enough free space here for {size} bytes (free: {free})")
        return None

    async def _swarm_fetch(self, request: web.Request) -> web.StreamResponse:
        """Our extension: fetch a content through the swarm; answered once it is here."""
        assert self._fetch is not None
        refusal = self._pin_refusal(request)
        if refusal is not None:
            await _drain(request)
            return refusal
        try:
            offer = decode_swarm_offer(await _body(request))
        except LocalSendError as exc:
            return _fail(400, str(exc))
        if self._busy():
            return _fail(409, "too many transfers at once; try again later")
        too_big = self._room_refusal(offer.size)
        if too_big is not None:
            self.refused += 1
            return too_big
        if not await self._put_to_rule(offer.as_offer(), request.remote or ""):
            return _fail(403, "refused")
        if self._busy():  # taken meanwhile
            return _fail(409, "too many transfers at once; try again later")
        log.info("LocalSend: fetching %s through the swarm for %r", offer.name, offer.sender.alias)
        self._fetching += 1
        try:
            await self._fetch(offer, request.remote or "")
        except NotFoundError as exc:
            return _fail(404, str(exc))
        except OfferMismatch as exc:
            self.refused += 1
            return _fail(400, str(exc))
        except SwarmshareError as exc:
            return _fail(500, str(exc))
        finally:
            self._fetching -= 1
        self.received_files += 1
        return web.Response(status=200)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        session_id, file_id, token = q.get("sessionId"), q.get("fileId"), q.get("token")
        if not session_id or not file_id or not token:
            await _drain(request)
            return _fail(400, "missing sessionId, fileId or token")
        session = self.sessions.get(session_id)
        if (
            session is None
            or session.cancelled
            or not secrets.compare_digest(session.tokens.get(file_id, ""), token)
            or request.remote != session.address
        ):
            await _drain(request)
            return _fail(403, "unknown session, file, token or address")
        if file_id in session.done or file_id in session.busy:
            await _drain(request)
            return _fail(409, "that file is already being received")
        offer = session.files[file_id]
        if request.content_length is not None and request.content_length != offer.size:
            await _drain(request)
            return _fail(400, f"the body is not the {offer.size} bytes announced")
        final = session.folder / offer.name
        if not _inside(final.parent, session.folder):  # a folder on the way links elsewhere
            await _drain(request)
            return _fail(403, "that name leads out of the download folder")
        session.busy.add(file_id)
        session.touched = time.monotonic()
        # A short hidden name beside the final one, whatever the final name's length.
        part = final.with_name(f".localsend-{secrets.token_hex(8)}{PART_SUFFIX}")
        session.parts.add(part)
        try:
            try:
                written = await self._write(request, session, offer, part)
            except OSError as exc:
                log.warning("LocalSend: cannot write %s: %s", final, exc.strerror)
                self._end(session, cancelled=True)
                return _fail(500, f"cannot write the file: {exc.strerror}")
            if written is None:
                if not session.cancelled:  # the sender went away mid-file: so does its session
                    self._end(session, cancelled=True)
                    return _fail(400, "the upload was cut short")
                return _fail(409, "the session was cancelled")
            try:
                landed = await asyncio.to_thread(_land, part, final)
            except OSError as exc:
                return _fail(500, f"cannot write the file: {exc.strerror}")
        finally:
            session.busy.discard(file_id)
            session.parts.discard(part)
            with contextlib.suppress(OSError):
                part.unlink()
        session.done.add(file_id)
        session.touched = time.monotonic()
        self.received_files += 1
        log.info("LocalSend: received %s (%d bytes)", landed, written)
        self._received(landed)
        if len(session.done) == len(session.files):
            self.sessions.pop(session.id, None)
        return web.Response(status=200)

    async def _write(
        self, request: web.Request, session: _Session, offer: FileOffer, part: Path
    ) -> int | None:
        """The body into `part` (synced), or None when it was cut, too long or cancelled."""
        part.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        sink = _Sink(fd, hashlib.sha256() if offer.sha256 else None)
        written = 0
        try:
            while written < offer.size:
                try:
                    data = await asyncio.wait_for(
                        request.content.readany(), self.limits.upload_idle_seconds
                    )
                except (aiohttp.ClientError, OSError, TimeoutError):
                    return None
                if not data or session.cancelled or written + len(data) > offer.size:
                    return None
                await sink.add(data)
                written += len(data)
                session.touched = time.monotonic()
            if not request.content.at_eof():
                extra = await request.content.read(1)
                if extra:
                    return None
            digest = await sink.finish()
            if digest is not None and offer.sha256 and digest != offer.sha256.lower():
                return None
            return written
        finally:
            await sink.settle()
            os.close(fd)

    async def _cancel(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.query.get("sessionId", ""))
        if session is None or request.remote != session.address:
            return _fail(403, "unknown session")
        self._end(session, cancelled=True)
        log.info("LocalSend: %r cancelled", session.offer.sender.alias)
        return web.Response(status=200)

    def _end(self, session: _Session, *, cancelled: bool) -> None:
        session.cancelled = cancelled
        self.sessions.pop(session.id, None)
        for part in list(session.parts):
            with contextlib.suppress(OSError):
                part.unlink()

    def _expire(self) -> None:
        """End the sessions idle too long: with no upload under way, or with one that has
        delivered nothing for a while (a stalled sender must not hold a session forever)."""
        now = time.monotonic()
        limits = self.limits
        for session in list(self.sessions.values()):
            idle = limits.upload_idle_seconds if session.busy else limits.session_idle_seconds
            if now - session.touched > idle:
                self._end(session, cancelled=True)


class _Sink:
    """Writes (and hashes) an upload's bytes in a worker thread, a batch at a time, while the
    event loop reads and decrypts the next batch; pushes them to the disk every so often, so
    that the fsync at the end has little left to do."""

    def __init__(self, fd: int, digest: Any) -> None:
        self._fd = fd
        self._digest = digest
        self._batch: list[bytes] = []
        self._size = 0
        self._unsynced = 0
        self._pending: asyncio.Future[None] | None = None

    async def add(self, data: bytes) -> None:
        """Take `data`; hands a full batch to the worker (after the previous one is done)."""
        self._batch.append(data)
        self._size += len(data)
        if self._size >= SINK_BATCH_BYTES:
            await self._submit()

    async def finish(self) -> str | None:
        """Write what is left and fsync; the SHA-256 of everything (None: not asked)."""
        await self._submit()
        await self.settle(raise_errors=True)
        await asyncio.to_thread(os.fsync, self._fd)
        return None if self._digest is None else str(self._digest.hexdigest())

    async def settle(self, raise_errors: bool = False) -> None:
        """Wait for the batch in the worker (the descriptor may be closed after)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                await pending
            except OSError:
                if raise_errors:
                    raise

    async def _submit(self) -> None:
        await self.settle(raise_errors=True)
        batch, self._batch, self._size = self._batch, [], 0
        self._unsynced += sum(len(b) for b in batch)
        sync = self._unsynced >= SINK_SYNC_BYTES
        if sync:
            self._unsynced = 0
        if batch:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._work, batch, sync))

    def _work(self, batch: list[bytes], sync: bool) -> None:
        for data in batch:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self._digest is not None:
                self._digest.update(data)
        if sync:
            os.fdatasync(self._fd)


def _free_bytes(folder: Path) -> int | None:
    """Free bytes where `folder` is (or would be made); None when that cannot be told."""
    for place in (folder, *folder.parents):
        try:
            return shutil.disk_usage(place).free
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def _inside(folder: Path, root: Path) -> bool:
    """Whether `folder` (once its links are followed) is `root` or under it."""
    try:
        return folder.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def _land(part: Path, final: Path) -> Path:
    """Rename the synced `part` to `final`, or to `final (N)` when that name is taken (never
    over an existing file); the name it got."""
    stem, suffix = final.stem, final.suffix
    for n in range(10_000):
        target = final if n == 0 else final.with_name(f"{stem} ({n}){suffix}")
        try:
            os.link(part, target)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if target.exists():
                continue
            os.rename(part, target)
            _fsync_dir(target.parent)
            return target
        part.unlink()
        _fsync_dir(target.parent)
        return target
    raise FileExistsError(f"no free name for {final}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- the sender ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where to send: an address and port, and what the device said of itself."""

    host: str
    port: int
    protocol: str = "https"
    info: DeviceInfo | None = None
    fingerprint: str | None = None
    """The fingerprint the device announced: its certificate must hash to it."""
    certificate: bytes | None = None
    """The certificate (DER) it showed when it registered: every later request is pinned to it."""

    @property
    def name(self) -> str:
        """How messages name the target."""
        alias = self.info.alias if self.info else None
        where = f"{self.host}:{self.port}"
        return f"{alias} ({where})" if alias else where


class LocalSendSender:
    """Offers files to devices and uploads them (`async with`)."""

    def __init__(
        self, info: DeviceInfo, client_context: Callable[[], ssl.SSLContext], bind: str
    ) -> None:
        self.info = info
        self._new_context = client_context
        self._bind = bind
        self._http: aiohttp.ClientSession | None = None
        self._pinned: dict[bytes, ssl.SSLContext] = {}

    async def __aenter__(self) -> LocalSendSender:
        self._http = _client(self._new_context(), self._bind, total=None)
        return self

    def _ssl(self, target: Target) -> ssl.SSLContext | bool:
        """A context that trusts exactly the certificate the target registered with."""
        if target.certificate is None:
            return True  # the session's own context
        context = self._pinned.get(target.certificate)
        if context is None:
            context = self._new_context()
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=target.certificate)
            self._pinned[target.certificate] = context
        return context

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    def _url(self, target: Target, path: str) -> str:
        return f"{target.protocol}://{_host(target.host)}:{target.port}{API}/{path}"

    async def register(self, target: Target) -> Target:
        """Ask the device who it is; the target with its info and its certificate, to which
        every later request is pinned. Falls back from https to http only for a device whose
        fingerprint is not known; DaemonError when the certificate does not hash to the
        fingerprint the device announced."""
        assert self._http is not None
        last: Exception | None = None
        protocols = [target.protocol]
        if target.fingerprint is None:
            protocols.append("http" if target.protocol == "https" else "https")
        for protocol in protocols:
            attempt = replace(target, protocol=protocol)
            try:
                if protocol == "https":
                    der = await self._certificate(attempt)
                    if target.fingerprint is not None and (
                        hashlib.sha256(der).hexdigest() != target.fingerprint.lower()
                    ):
                        raise DaemonError(
                            f"{target.name}: its certificate does not match the fingerprint it"
                            " announces (another machine may be answering for it)"
                        )
                    attempt = replace(attempt, certificate=der)
                async with self._http.post(
                    self._url(attempt, "register"),
                    ssl=self._ssl(attempt),
                    data=encode_announcement(self.info, False),
                    timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_SECONDS * 2),
                ) as reply:
                    if reply.status != 200:
                        raise LocalSendRefused(reply.status, f"HTTP {reply.status}")
                    info = decode_device_bytes(await reply.content.read(MAX_LOCALSEND_JSON_BYTES))
                    return replace(attempt, info=info)
            except (aiohttp.ClientError, OSError, TimeoutError, LocalSendError) as exc:
                last = exc
        raise DaemonError(f"no LocalSend device answers at {target.host}:{target.port}: {last}")

    async def _certificate(self, target: Target) -> bytes:
        """The certificate the device shows in a TLS handshake (DER)."""
        local = None if self._bind in ("", "0.0.0.0") else (self._bind, 0)
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                target.host, target.port, ssl=self._new_context(), local_addr=local
            ),
            CONNECT_TIMEOUT_SECONDS,
        )
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        if not der:
            raise ssl.SSLError("the device shows no certificate")
        return bytes(der)

    async def offer(self, target: Target, files: list[FileOffer], pin: str | None) -> UploadGrant:
        """prepare-upload; LocalSendRefused for an answer other than 200 (204 included)."""
        assert self._http is not None
        params = {"pin": pin} if pin else {}
        body = encode_offer(UploadOffer(self.info, tuple(files)))
        async with self._http.post(
            self._url(target, "prepare-upload"),
            ssl=self._ssl(target),
            params=params,
            data=body,
            headers={"Content-Type": "application/json"},
        ) as reply:
            if reply.status != 200:
                text = (await reply.content.read(4096)).decode("utf-8", "replace")
                raise LocalSendRefused(reply.status, text)
            return decode_grant(await reply.content.read(MAX_LOCALSEND_JSON_BYTES))

    async def upload(
        self,
        target: Target,
        grant: UploadGrant,
        file: FileOffer,
        path: Path,
        progress: Callable[[int], None],
    ) -> None:
        """One file's bytes; LocalSendRefused when the device does not take them."""
        assert self._http is not None
        params = {"sessionId": grant.session_id, "fileId": file.id, "token": grant.tokens[file.id]}
        async with self._http.post(
            self._url(target, "upload"),
            ssl=self._ssl(target),
            params=params,
            data=_read_file(path, progress),
            headers={"Content-Length": str(file.size), "Content-Type": file.file_type},
        ) as reply:
            if reply.status not in (200, 204):
                text = (await reply.content.read(4096)).decode("utf-8", "replace")
                raise LocalSendRefused(reply.status, text)

    async def swarm_fetch(self, target: Target, offer: SwarmOffer, pin: str | None) -> None:
        """Ask a swarmshare peer to fetch a content through the swarm; returns once it has it.
        LocalSendRefused when it will not (404: it does not know the request)."""
        assert self._http is not None
        async with self._http.post(
            self._url(target, "swarmshare-fetch"),
            ssl=self._ssl(target),
            params={"pin": pin} if pin else {},
            data=encode_swarm_offer(offer),
            headers={"Content-Type": "application/json"},
        ) as reply:
            if reply.status != 200:
                text = (await reply.content.read(4096)).decode("utf-8", "replace")
                raise LocalSendRefused(reply.status, text)

    async def cancel(self, target: Target, grant: UploadGrant) -> None:
        """End a session on the device (best effort)."""
        assert self._http is not None
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with self._http.post(
                self._url(target, "cancel"),
                ssl=self._ssl(target),
                params={"sessionId": grant.session_id},
                timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_SECONDS),
            ):
                pass


async def _read_file(path: Path, progress: Callable[[int], None]) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while True:
            data = await asyncio.to_thread(handle.read, READ_BYTES)
            if not data:
                return
            progress(len(data))
            yield data
    finally:
        handle.close()


# ---- helpers -------------------------------------------------------------------------------


def _client(
    context: ssl.SSLContext | None, bind: str, total: float | None = 10.0
) -> aiohttp.ClientSession:
    local = None if bind in ("", "0.0.0.0") else (bind, 0)
    connector = aiohttp.TCPConnector(ssl=context or False, local_addr=local, force_close=True)
    timeout = aiohttp.ClientTimeout(total=total, sock_connect=CONNECT_TIMEOUT_SECONDS)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def _peer_fingerprint(request: web.Request) -> str | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_LOCALSEND_JSON_BYTES:
        raise LocalSendError("body over the limit")
    data = await request.content.read(MAX_LOCALSEND_JSON_BYTES + 1)
    if len(data) > MAX_LOCALSEND_JSON_BYTES:
        raise LocalSendError("body over the limit")
    return data


async def _drain(request: web.Request) -> None:
    """Read (and drop) a small refused body, so the sender sees the answer, not a reset."""
    with contextlib.suppress(aiohttp.ClientError, OSError):
        if (request.content_length or 0) <= MAX_LOCALSEND_JSON_BYTES:
            await request.content.read(MAX_LOCALSEND_JSON_BYTES)


def _json(obj: object) -> web.Response:
    import json

    return web.Response(text=json.dumps(obj), content_type="application/json")


def _fail(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message)


def _is_multicast(address: str) -> bool:
    try:
        return 224 <= socket.inet_aton(address)[0] <= 239
    except OSError:
        return False


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _udp_socket(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
