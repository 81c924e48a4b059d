"""The peer client's HTTP/1.1 connections: GETs over kept-alive connections, each chunk reply
received straight into the chunk's own buffer.

aiohttp serves every other request; this side needs no general HTTP client because it removes
the copies that dominate a fast transfer: `asyncio.BufferedProtocol` has the kernel write the
body directly into a pooled, page-aligned buffer, which is then hashed and written to disk as is.

Parsing is not done here: core/http.py's ReplyReader turns the bytes into events and refuses
anything but a status line, headers with one Content-Length, and exactly that many body bytes;
this adapter only moves bytes into it and buffers out of it, and keeps the reply's deadline
(ReplyDeadline) on a timer. What a peer does wrong fails that request only: a ReplyError (a
RemoteProtocolError) for a malformed, oversized, wrong-length or truncated reply, a
ChunkFetchError for a timeout, an unreachable peer or an error status.

TLS (private swarms): with a `tls` context every connection is TLS, and it is used only if the
server's certificate hashes to the fingerprint `pins` gives for that address and port (the one
its signed announcement carries); no fingerprint, or another certificate, and the connection is
dropped before a request is sent (reason "unpinned" or "wrong_certificate").

Connections per peer are bounded (PeerSlots): at most `connections_per_peer` requests, each on
its own connection, are under way at once to one server, for every download of the process
together; further requests wait their turn instead of opening connections the server would
refuse (it admits MAX_CONNECTIONS_PER_PEER from one address). A request's reply deadline starts
when it is sent, not while it waits for a slot.

Memory follows bytes received: a chunk's buffer is taken from the pool only once its head gave
the length the manifest says; a catalogue's or manifest's grows (doubling) as its bytes arrive,
and all of those together stay within a ReplyBudget.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mmap
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import TypeAlias

from swarmshare.core.auth import AUTH_HEADER, request_header
from swarmshare.core.http import (
    Data,
    EndOfReply,
    Expect,
    NeedData,
    ReplyBudget,
    ReplyDeadline,
    ReplyError,
    ReplyReader,
    ReplyState,
    ReplyTiming,
    Response,
    grown_capacity,
)
from swarmshare.errors import SwarmshareError
from swarmshare.limits import (
    CONNECT_TIMEOUT_SECONDS,
    MAX_CONNECTIONS_TO_PEER,
    MAX_REPLY_BYTES_TOTAL,
    MIB,
    MIN_REPLY_BYTES_PER_SECOND,
    REPLY_DEADLINE_BASE_SECONDS,
)

log = logging.getLogger("swarmshare")

SCRATCH_BYTES = 4096  # a head, or bytes past a growing body's buffer, read at a time
IDLE_CONNECTIONS_PER_PEER = 32


Buffer: TypeAlias = bytearray | mmap.mmap
"""A received body: chunk buffers are page-aligned anonymous memory (see BufferPool)."""

Pins: TypeAlias = Callable[[str, int], str | None]
"""The certificate fingerprint a peer at (host, port) must present, if one is known."""


class BufferPool:
    """Reused chunk buffers: a download recycles the same few buffers instead of allocating
    (and faulting in) a fresh one per chunk, which keeps memory flat and saves the zeroing.

    Buffers are anonymous memory maps, so they start on a page boundary: the part file can
    write them with direct I/O (see PartFile.write), straight from this memory to the disk.
    """

    def __init__(self, max_bytes: int) -> None:
        self._free: dict[int, list[Buffer]] = {}
        self._held = 0
        self._max = max_bytes

    def get(self, size: int) -> Buffer:
        """A buffer of exactly `size` bytes (contents undefined)."""
        free = self._free.get(size)
        if free:
            self._held -= size
            return free.pop()
        return mmap.mmap(-1, size) if size else bytearray()

    def put(self, buffer: Buffer) -> None:
        """Give a buffer back once its bytes are no longer needed."""
        size = len(buffer)
        if size and self._held + size <= self._max:
            self._free.setdefault(size, []).append(buffer)
            self._held += size


class ChunkFetchError(SwarmshareError):
    """A chunk request failed; `reason` is unreachable, timeout, short, busy (the connection
    was closed before any reply, or no memory was left for it) or an error code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PeerSlots:
    """At most `limit` holders at once per key (a peer's host and port); the others wait, first
    come first served. A waiter cancelled gives up its place, or the slot just handed to it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[tuple[str, int], int] = {}
        self._waiting: dict[tuple[str, int], deque[asyncio.Future[None]]] = {}

    def held(self, key: tuple[str, int]) -> int:
        """Slots of `key` held now."""
        return self._held.get(key, 0)

    def waiting(self, key: tuple[str, int]) -> int:
        """Callers of `acquire` waiting for a slot of `key`."""
        return len(self._waiting.get(key, ()))

    async def acquire(self, key: tuple[str, int]) -> None:
        """Take a slot of `key`, waiting for one if all are held; `release` it after."""
        held = self._held.get(key, 0)
        if held < self.limit and key not in self._waiting:
            self._held[key] = held + 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(key, deque())
        queue.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # handed a slot as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # release may have dropped it already
                    queue.remove(waiter)
                if not queue and self._waiting.get(key) is queue:
                    del self._waiting[key]
            raise

    def release(self, key: tuple[str, int]) -> None:
        """Give a slot back: to the first waiter, if any (it stays held)."""
        queue = self._waiting.get(key)
        while queue:
            waiter = queue.popleft()
            if not queue:
                del self._waiting[key]
            if not waiter.done():  # else cancelled, and not yet out of the queue
                waiter.set_result(None)
                return
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection, one request at a time: bytes from the socket into a
    ReplyReader, its events onto the waiting request."""

    def __init__(
        self, timing: ReplyTiming, pool: BufferPool, budget: ReplyBudget, scratch: bytearray
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._timing = timing
        self._pool = pool
        self._budget = budget
        self._reader = ReplyReader()
        # Shared by every connection of a client: the transport reads into it and hands it to
        # buffer_updated at once, which copies what arrived into the reader.
        self._scratch = scratch
        self._into_body = False
        self._body: Buffer | None = None
        self._filled = 0
        self._reserved = 0
        self._status = 0
        self._chunk = False
        self._keep_alive = True
        self._waiter: asyncio.Future[tuple[int, Buffer]] | None = None
        self._deadline: ReplyDeadline | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heard = False  # a byte of any reply arrived on this connection
        self.closed = False

    # ---- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._refused()
        self._end_of_file()
        self._fail(ChunkFetchError("connection lost", "short"))

    def get_buffer(self, sizehint: int) -> memoryview:
        # A body is read straight into its own buffer (a chunk's is pooled and page-aligned);
        # a head, bytes nobody asked for, and the end of file go into the scratch space, and so
        # does the next read once a catalogue's or manifest's buffer is full: it grows only as
        # its bytes arrive.
        body = self._body
        remaining = self._reader.body_remaining
        if body is not None and remaining and self._filled < len(body):
            self._into_body = True
            return memoryview(body)[self._filled : min(len(body), self._filled + remaining)]
        self._into_body = False
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return  # a read already under way when the connection was dropped
        self._heard = True
        if self._deadline is not None:
            self._deadline.received_bytes(nbytes, self._loop.time())
        try:
            if self._into_body:
                self._filled += nbytes
                self._reader.body_received(nbytes)
                if self._reader.body_remaining:
                    return  # the hot path: more of a body, nothing to parse
            else:
                self._reader.receive_data(self._scratch[:nbytes])
            self._pump()
        except SwarmshareError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._refused()
        self._end_of_file()
        return None

    # ---- requests --------------------------------------------------------------------------

    async def request(
        self, path: str, host: str, expect: Expect, extra: str = ""
    ) -> tuple[int, Buffer]:
        """Send GET PATH and return (status, body); the body fits `expect`."""
        if self.closed or self._reader.state not in (ReplyState.IDLE, ReplyState.DONE):
            raise ChunkFetchError("connection closed", "short")
        assert self.transport is not None
        loop = self._loop
        self._waiter = loop.create_future()
        self._chunk = expect.length is not None
        self._reader.request_sent(expect)
        self.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n{extra}"
            "\r\n".encode()
        )
        self._deadline = ReplyDeadline(self._timing, loop.time())
        self._arm_timer(self._deadline.next_deadline())
        try:
            self._pump()  # what arrived before the request, if anything, is an error
            return await self._waiter
        finally:
            self._cancel_timer()
            self._waiter = None
            self._deadline = None
            self._drop_body()  # the caller owns a complete body; an incomplete one is dropped

    def close(self) -> None:
        """Drop the connection."""
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        """Whether another request may go over this connection."""
        return (
            not self.closed
            and self._keep_alive
            and self._reader.state in (ReplyState.IDLE, ReplyState.DONE)
        )

    # ---- events ----------------------------------------------------------------------------

    def _pump(self) -> None:
        while True:
            event = self._reader.next_event()
            if isinstance(event, NeedData):
                return
            if isinstance(event, Response):
                self._begin(event)
            elif isinstance(event, Data):
                self._store(event.data)
            elif isinstance(event, EndOfReply):
                self._complete()
            else:  # ConnectionClosed between replies
                self._keep_alive = False
                return

    def _begin(self, response: Response) -> None:
        self._status = response.status
        self._keep_alive = response.keep_alive
        self._filled = 0
        if response.status == 200 and self._chunk:
            # The parser checked the length against the manifest's before this buffer is taken.
            self._body = self._pool.get(response.content_length)
        else:
            self._body = bytearray()  # grows as its bytes arrive (_grow)

    def _store(self, data: bytes) -> None:
        body = self._body
        assert body is not None
        end = self._filled + len(data)
        if end > len(body):
            body = self._grow(body, end)
        body[self._filled : end] = data
        self._filled = end

    def _grow(self, body: Buffer, needed: int) -> Buffer:
        assert isinstance(body, bytearray)
        size = grown_capacity(len(body), needed, self._reader.body_length)
        if not self._budget.reserve(size - len(body)):
            raise ChunkFetchError(
                f"replies from peers already hold {self._budget.held_bytes // MIB} MiB,"
                f" the most allowed: a reply of {self._reader.body_length} bytes is refused",
                "busy",
            )
        self._reserved += size - len(body)
        grown = bytearray(size)
        grown[: self._filled] = memoryview(body)[: self._filled]
        self._body = grown
        return grown

    def _complete(self) -> None:
        body = self._body if self._body is not None else bytearray()
        self._body = None
        self._release()
        self._cancel_timer()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._status, body))

    def _end_of_file(self) -> None:
        self._reader.receive_eof()
        try:
            self._pump()
        except SwarmshareError as exc:
            self._fail(exc)

    def _refused(self) -> None:
        # Closed before a byte of any reply: a new connection the server turned away (its
        # connection guard closes newcomers when this address holds its share). Not a fault of
        # the peer's: the scheduler shrinks its window rather than counting a failure.
        if not self._heard and self._waiter is not None and not self._waiter.done():
            self._fail(ChunkFetchError("closed the connection before replying (busy)", "busy"))

    def _fail(self, exc: Exception) -> None:
        self._keep_alive = False
        self._cancel_timer()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def _drop_body(self) -> None:
        self._body = None
        self._release()

    def _release(self) -> None:
        self._budget.release(self._reserved)
        self._reserved = 0

    # ---- deadline --------------------------------------------------------------------------

    def _arm_timer(self, when: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._waiter is None or self._waiter.done():
            return
        why = deadline.expired(self._loop.time())
        if why is None:
            self._arm_timer(deadline.next_deadline())
        else:
            self._fail(ChunkFetchError(why, "timeout"))


class ChunkClient:
    """Pools of chunk connections, per peer address.

    `idle_timeout`, `deadline_base_seconds` and `min_bytes_per_second` bound how long a reply
    may take (see ReplyDeadline); `budget` bounds the memory held at once for every reply but
    chunks (a catalogue, a manifest, an error body); `connections_per_peer` bounds the requests
    (connections) under way at once to one peer: one client serves every download of a process.
    """

    def __init__(
        self,
        *,
        local_address: str | None,
        idle_timeout: float,
        pool: BufferPool,
        key: bytes | None = None,
        budget: ReplyBudget | None = None,
        deadline_base_seconds: float = REPLY_DEADLINE_BASE_SECONDS,
        min_bytes_per_second: float = MIN_REPLY_BYTES_PER_SECOND,
        tls: ssl.SSLContext | None = None,
        pins: Pins | None = None,
        connections_per_peer: int = MAX_CONNECTIONS_TO_PEER,
    ) -> None:
        self._local = local_address
        self._key = key
        self._tls = tls
        self._pins = pins
        self.refused_certificates = 0
        """Connections dropped because the server's certificate was not the one pinned."""
        self._timing = ReplyTiming(idle_timeout, deadline_base_seconds, min_bytes_per_second)
        self.pool = pool
        self.budget = budget if budget is not None else ReplyBudget(MAX_REPLY_BYTES_TOTAL)
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self.slots = PeerSlots(connections_per_peer)
        """Requests under way, or waiting for a connection, per peer (host, port)."""
        self._scratch = bytearray(SCRATCH_BYTES)

    async def fetch(self, host: str, port: int, path: str, length: int) -> Buffer:
        """GET one chunk of exactly `length` bytes; ChunkFetchError or RemoteProtocolError."""
        status, body = await self.get(host, port, path, length=length)
        if status != 200:
            raise ReplyError(f"{host}:{port}: a {status} reply to a chunk request")
        return body

    async def get(
        self,
        host: str,
        port: int,
        path: str,
        *,
        length: int = -1,
        limit: int = 0,
        headers: str = "",
    ) -> tuple[int, Buffer]:
        """GET `path`: (200 or 304, body). A body of exactly `length` bytes, or with length -1
        of any length up to `limit`. Other statuses raise ChunkFetchError with the error code."""
        expect = Expect(length) if length >= 0 else Expect(limit=limit)
        # Every connection to a peer is opened, used and pooled by a request holding one of its
        # slots, so the connections open to it never outnumber the slots.
        await self.slots.acquire((host, port))
        try:
            return await self._get(host, port, path, expect, headers)
        finally:
            self.slots.release((host, port))

    async def _get(
        self, host: str, port: int, path: str, expect: Expect, headers: str
    ) -> tuple[int, Buffer]:
        conn = await self._connection(host, port)
        try:
            extra = headers
            if self._key is not None:
                sockname = conn.transport.get_extra_info("sockname") if conn.transport else None
                client = str(sockname[0]) if sockname else ""
                proof = request_header(self._key, "GET", path, time.time(), client, (host, port))
                extra += f"{AUTH_HEADER}: {proof}\r\n"
            where = f"[{host.partition('%')[0]}]" if ":" in host else host
            status, body = await conn.request(path, f"{where}:{port}", expect, extra)
        except BaseException as exc:
            conn.close()
            self._open.discard(conn)
            if isinstance(exc, ReplyError | ChunkFetchError):
                raise _naming(exc, f"{host}:{port}") from None
            raise
        if status not in (200, 304):
            conn.close()
            self._open.discard(conn)
            raise ChunkFetchError(f"HTTP {status} from {host}:{port}", _error_code(body))
        if conn.reusable:
            pool = self._idle.setdefault((host, port), [])
            if len(pool) < IDLE_CONNECTIONS_PER_PEER:
                pool.append(conn)
            else:
                conn.close()
                self._open.discard(conn)
        else:
            conn.close()
            self._open.discard(conn)
        return status, body

    def close(self) -> None:
        """Close every connection."""
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()

    async def _connection(self, host: str, port: int) -> _Connection:
        pool = self._idle.get((host, port), [])
        while pool:
            conn = pool.pop()
            if conn.reusable:
                return conn
            self._open.discard(conn)
        loop = asyncio.get_running_loop()
        local = (self._local, 0) if self._local else None
        pinned: str | None = None
        if self._tls is not None:
            pinned = self._pins(host, port) if self._pins is not None else None
            if not pinned:
                raise ChunkFetchError(
                    f"{host}:{port}: no signed announcement named its certificate yet",
                    "unpinned",
                )
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self._timing, self.pool, self.budget, self._scratch),
                    host,
                    port,
                    local_addr=local,
                    ssl=self._tls,
                ),
                CONNECT_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            raise ChunkFetchError(f"connecting to {host}:{port} timed out", "timeout") from None
        except (OSError, ssl.SSLError) as exc:
            raise ChunkFetchError(
                f"cannot connect to {host}:{port}: {exc}", "unreachable"
            ) from None
        if pinned is not None and _certificate_fingerprint(transport) != pinned:
            conn.close()
            self.refused_certificates += 1
            log.warning(
                "refused %s:%d: its TLS certificate is not the one its signed announcement"
                " names (a relay, or another host at its address)",
                host,
                port,
            )
            raise ChunkFetchError(
                f"{host}:{port} presented a certificate other than the one its signed"
                " announcement names: refused",
                "wrong_certificate",
            )
        self._open.add(conn)
        return conn


def pinning_context() -> ssl.SSLContext:
    """A TLS client context that checks neither chain nor name (peers' certificates are
    self-signed): the ChunkClient pins each server's certificate itself. It presents no
    certificate, so a command that only fetches needs no identity of its own."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _certificate_fingerprint(transport: asyncio.BaseTransport) -> str | None:
    """SHA-256 (hex) of the certificate the TLS server of `transport` presented."""
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return hashlib.sha256(der).hexdigest() if der else None


def _naming(exc: ReplyError | ChunkFetchError, peer: str) -> ReplyError | ChunkFetchError:
    """The same error, saying which peer it was."""
    if isinstance(exc, ChunkFetchError):
        return ChunkFetchError(f"{peer}: {exc}", exc.reason)
    return type(exc)(f"{peer}: {exc}")


def _error_code(body: bytes | Buffer) -> str:
    with contextlib.suppress(Exception):
        code = json.loads(bytes(body))["error"]["code"]
        if isinstance(code, str) and code.isidentifier():
            return code
    return "http_error"
