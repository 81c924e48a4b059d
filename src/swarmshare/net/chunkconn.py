"""The hot path of a download: HTTP/1.1 GETs of chunks over kept-alive connections, each reply
received straight into the chunk's own buffer.

aiohttp serves every other request; chunks come through this small client because it removes
the copies that dominate a fast transfer: `asyncio.BufferedProtocol` has the kernel write the
body directly into a pooled, page-aligned buffer, which is then hashed and written to disk as is.

It speaks only what the peer server sends for a chunk: a status line, headers with a
Content-Length, and exactly that many body bytes. Anything else -- no length, a chunked body, an
oversized header, a reply longer or shorter than the chunk -- is a RemoteProtocolError.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import time
from typing import TypeAlias

from swarmshare.core.auth import AUTH_HEADER, request_header
from swarmshare.errors import RemoteProtocolError, SwarmshareError
from swarmshare.limits import CONNECT_TIMEOUT_SECONDS

MAX_HEADER_BYTES = 16 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
IDLE_CONNECTIONS_PER_PEER = 32


Buffer: TypeAlias = bytearray | mmap.mmap
"""A received body: chunk buffers are page-aligned anonymous memory (see BufferPool)."""


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
    """A chunk request failed; `reason` is unreachable, timeout, short or an error code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, idle_timeout: float, pool: BufferPool) -> None:
        self.transport: asyncio.Transport | None = None
        self._pool = pool
        self._idle_timeout = idle_timeout
        self._head = bytearray(MAX_HEADER_BYTES)
        self._head_len = 0
        self._body: Buffer | None = None
        self._body_len = 0
        self._expect = 0
        self._limit = 0
        self._status = 0
        self._keep_alive = True
        self._waiter: asyncio.Future[tuple[int, Buffer]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    # ---- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ChunkFetchError("connection closed by peer", "short"))

    def get_buffer(self, sizehint: int) -> memoryview:
        # asyncio asks for a buffer before every read, the one that finds EOF included, and
        # treats an empty one as a fatal error: when nothing is expected (an idle kept-alive
        # connection the peer closes) or the reply is complete or its head too long, hand out
        # scratch space; buffer_updated refuses whatever lands there.
        if self._waiter is None or self._waiter.done():
            return memoryview(bytearray(256))
        if self._body is not None:
            if self._body_len < len(self._body):
                return memoryview(self._body)[self._body_len :]
            return memoryview(bytearray(256))
        if self._head_len >= MAX_HEADER_BYTES:
            return memoryview(bytearray(4096))
        return memoryview(self._head)[self._head_len :]

    def buffer_updated(self, nbytes: int) -> None:
        self._arm_timer()
        if self._waiter is None or self._waiter.done():
            self._fail(RemoteProtocolError("peer sent bytes nobody asked for"))
            return
        try:
            if self._body is None:
                self._head_len += nbytes
                self._parse_head()
            else:
                self._body_len += nbytes
            if self._body is not None and self._body_len >= self._expect:
                self._complete()
        except RemoteProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._fail(ChunkFetchError("peer closed the connection mid-reply", "short"))
        return None

    # ---- requests --------------------------------------------------------------------------

    async def request(
        self, path: str, host: str, length: int, extra: str = "", limit: int = 0
    ) -> tuple[int, Buffer]:
        """Send GET PATH and return (status, body).

        With `length` >= 0 a 200 body must be exactly that long (a chunk); with -1 it may be any
        length up to `limit` (a catalogue, a manifest). A 304 has an empty body.
        """
        self._limit = limit
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._head_len = 0
        self._body = None
        self._body_len = 0
        self._expect = length
        self.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n{extra}"
            "\r\n".encode()
        )
        self._arm_timer()
        try:
            return await self._waiter
        finally:
            self._cancel_timer()
            self._waiter = None
            self._body = None  # the caller owns it now

    def close(self) -> None:
        """Drop the connection."""
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    @property
    def reusable(self) -> bool:
        """Whether another request may go over this connection."""
        return not self.closed and self._keep_alive

    # ---- parsing ---------------------------------------------------------------------------

    def _parse_head(self) -> None:
        end = self._head.find(b"\r\n\r\n", 0, self._head_len)
        if end < 0:
            if self._head_len >= MAX_HEADER_BYTES:
                raise RemoteProtocolError("reply headers too long")
            return
        lines = bytes(self._head[:end]).split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            raise RemoteProtocolError("not an HTTP reply")
        self._status = int(parts[1])
        length: int | None = None
        self._keep_alive = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise RemoteProtocolError("malformed header line")
            key = name.strip().lower()
            value = value.strip()
            if key == b"content-length":
                if not value.isdigit() or length is not None:
                    raise RemoteProtocolError("bad Content-Length")
                length = int(value)
            elif key == b"transfer-encoding":
                raise RemoteProtocolError("chunked replies are not part of the chunk protocol")
            elif key == b"connection":
                self._keep_alive = value.lower() != b"close"
        if self._status == 304:
            length = 0 if length is None else length
        if length is None:
            raise RemoteProtocolError("reply without Content-Length")
        if self._status == 200 and self._expect < 0:
            if length > self._limit:
                raise RemoteProtocolError(f"reply of {length} bytes is over the limit")
            self._expect = length
            self._body = bytearray(length)
        elif self._status == 200 and length != self._expect:
            raise ChunkFetchError(f"chunk of {length} bytes, not {self._expect}", "short")
        if self._status != 200:
            if length > MAX_ERROR_BODY_BYTES:
                raise RemoteProtocolError("error reply too long")
            self._expect = length
            self._body = bytearray(length)
        elif self._body is None:
            self._body = self._pool.get(self._expect)
        rest = self._head_len - (end + 4)
        if rest > self._expect:
            raise RemoteProtocolError("reply longer than its Content-Length")
        self._body[:rest] = self._head[end + 4 : self._head_len]
        self._body_len = rest

    def _complete(self) -> None:
        if self._body_len > self._expect:
            self._fail(RemoteProtocolError("reply longer than its Content-Length"))
            return
        assert self._body is not None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._status, self._body))

    def _fail(self, exc: Exception) -> None:
        self._keep_alive = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def _arm_timer(self) -> None:
        self._cancel_timer()
        if self._waiter is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._idle_timeout, self._idle)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle(self) -> None:
        self._fail(ChunkFetchError(f"no data for {self._idle_timeout:.0f} s", "timeout"))


class ChunkClient:
    """Pools of chunk connections, per peer address."""

    def __init__(
        self,
        *,
        local_address: str | None,
        idle_timeout: float,
        pool: BufferPool,
        key: bytes | None = None,
    ) -> None:
        self._local = local_address
        self._key = key
        self._idle_timeout = idle_timeout
        self.pool = pool
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def fetch(self, host: str, port: int, path: str, length: int) -> Buffer:
        """GET one chunk of exactly `length` bytes; ChunkFetchError or RemoteProtocolError."""
        return (await self.get(host, port, path, length=length))[1]

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
        conn = await self._connection(host, port)
        try:
            extra = headers
            if self._key is not None:
                sockname = conn.transport.get_extra_info("sockname") if conn.transport else None
                client = str(sockname[0]) if sockname else ""
                proof = request_header(self._key, "GET", path, time.time(), client, (host, port))
                extra += f"{AUTH_HEADER}: {proof}\r\n"
            status, body = await conn.request(path, f"{host}:{port}", length, extra, limit)
        except BaseException:
            conn.close()
            self._open.discard(conn)
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
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self._idle_timeout, self.pool),
                    host,
                    port,
                    local_addr=local,
                ),
                CONNECT_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            raise ChunkFetchError(f"connecting to {host}:{port} timed out", "timeout") from None
        except OSError as exc:
            raise ChunkFetchError(
                f"cannot connect to {host}:{port}: {exc}", "unreachable"
            ) from None
        self._open.add(conn)
        return conn


def _error_code(body: bytes | Buffer) -> str:
    with contextlib.suppress(Exception):
        code = json.loads(bytes(body))["error"]["code"]
        if isinstance(code, str) and code.isidentifier():
            return code
    return "http_error"
