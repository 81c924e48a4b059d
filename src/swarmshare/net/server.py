"""The peer server: read-only HTTP/1.1 that serves catalogue, manifests, chunks and files.

    GET /v1/catalog                          what this peer holds (ETag = catalogue version)
    GET /v1/content/{id}/manifest            the canonical manifest bytes
    GET /v1/content/{id}/chunk/{index}       one chunk, by sendfile from the file in place
    GET /v1/content/{id}/chunks/{list}       several chunks in one reply, one after the other
                                             (list: indices and ranges, "3,5-9,12")
    GET /v1/content/{id}/file[/{path}]       a plain file, with Range, for curl and friends
    GET /v1/content/{id}/bt/[{token}/]{name}[/{path}]
                                             the same for BitTorrent web seeds (BEP 19: the
                                             url-list entry ends in /bt/, the client adds the
                                             torrent's name and path); BEP 47 pad files
                                             (.pad/N) are N zeros; in a private swarm the
                                             content's token is the first path segment
    GET /                                    the LAN page for browsers (net/lanpage.py), and
    GET /v1/content/{id}/zip                 a folder as one streamed zip: open swarm only

In a private swarm the server speaks only TLS (with this peer's certificate, which members pin
to the fingerprint in its signed announcements) and the LAN page and zip are off.

With an upload limit, chunk and file bodies go out in pieces paced by one byte bucket shared by
every connection.

A batch carries many small chunks (a folder of small files) in one request and one reply, so
that such a folder is not one round trip per file; its files are read through a bounded cache of
open descriptors rather than opened and closed per chunk.

No path from a request ever reaches the file system: a request names a content ID and a chunk
index or a path *inside the manifest*, and the provider maps those to files it recorded.
Errors are JSON: {"error": {"code": "unknown_content", "message": "..."}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import os
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from typing import IO, Any, Protocol

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.typedefs import Handler

from swarmshare.core.auth import AUTH_HEADER, AuthError, RequestVerifier, web_seed_token
from swarmshare.core.catalog import Catalog
from swarmshare.core.location import ChunkLocation
from swarmshare.core.ratelimit import ByteBucket, RateLimiter
from swarmshare.errors import DaemonError
from swarmshare.errors import ServeError as ServeError  # re-exported: it used to live here
from swarmshare.limits import (
    KEEPALIVE_TIMEOUT_SECONDS,
    MAX_BATCH_BYTES,
    MAX_BATCH_CHUNKS,
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_LINE_BYTES,
    MAX_TLS_HANDSHAKES_PER_PEER,
    MAX_TLS_HANDSHAKES_TOTAL,
    REQUEST_BURST_PER_PEER,
    REQUEST_TIMEOUT_SECONDS,
    REQUESTS_PER_SECOND_PER_PEER,
)
from swarmshare.net.guard import ConnectionGuard, GuardLimits
from swarmshare.net.lanpage import (
    LanPage,
    content_zip,
    render_page,
    stream_zip,
    zip_disposition,
)
from swarmshare.net.tlsgate import TLSGate

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[0-9a-f]{32}")
_WEB_SEED = re.compile(r"/v1/content/[0-9a-f]{64}/bt/")
_INDEX = re.compile(r"[0-9]{1,9}")
_BATCH = re.compile(r"[0-9]{1,9}(-[0-9]{1,9})?(,[0-9]{1,9}(-[0-9]{1,9})?)*")
OPEN_DESCRIPTORS = 256  # files the server keeps open between requests
# What a limited upload sends between two looks at the byte bucket.
_PIECE_BYTES = 64 * 1024
_MANIFEST_PIECE_BYTES = 1024 * 1024
_TLS_PIECE_BYTES = 1024 * 1024  # what one read of a chunk sent over TLS holds
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)  # Linux: read only what is cached


class ContentProvider(Protocol):
    """What the peer server serves from: the daemon's library and downloads in progress."""

    def catalog(self) -> Catalog:
        """The current catalogue."""

    def manifest_bytes(self, content_id: str) -> bytes:
        """Canonical manifest bytes; ServeError if the content is not held."""

    def chunk_location(self, content_id: str, index: int) -> tuple[str, ChunkLocation]:
        """(content name, where the chunk is); ServeError if not held or changed on disk."""

    def file_location(self, content_id: str, path: str | None) -> str:
        """The on-disk path of a complete, intact file of a content; ServeError otherwise."""

    def web_seed_file(self, content_id: str, path: str) -> str | int:
        """For a web seed request of NAME[/PATH]: the on-disk path of that intact file, or the
        length of the BEP 47 pad file it names; ServeError otherwise."""

    def served(
        self, peer: str, content_id: str, name: str, index: int, nbytes: int, result: str
    ) -> None:
        """Record one chunk upload in the transfer log."""


class PeerServer:
    """The HTTP peer server; use as `async with PeerServer(provider, host, port) as s:`."""

    def __init__(
        self,
        provider: ContentProvider,
        host: str,
        port: int,
        key: bytes | None = None,
        guard_limits: GuardLimits | None = None,
        upload_bytes_per_second: int = 0,
        ipv6: bool = False,
        tls: ssl.SSLContext | None = None,
        lan_page: LanPage | None = None,
    ) -> None:
        """`ipv6`: also listen on every IPv6 address, on the same port (for a wildcard host).
        `tls`: speak only TLS, with this context. `lan_page`: what the LAN page shows (None: no
        page); never with a `key`, as a private swarm has no page."""
        self.provider = provider
        self.tls = tls
        self.lan_page = lan_page if key is None else None
        self.ipv6 = ipv6
        self.ipv6_error: str | None = None
        self._guard_limits = guard_limits
        self._upload = (
            ByteBucket(upload_bytes_per_second, _PIECE_BYTES) if upload_bytes_per_second else None
        )
        self.auth_refused = 0
        self.requests = 0  # every request admitted past the connection guard
        self._verifier = RequestVerifier(key) if key is not None else None
        self._key = key
        self.host = host
        self.requested_port = port
        self.port = 0
        app = web.Application(client_max_size=1024)
        app.router.add_get("/v1/catalog", self._catalog)
        app.router.add_get("/v1/content/{cid}/manifest", self._manifest)
        app.router.add_get("/v1/content/{cid}/chunk/{index}", self._chunk)
        app.router.add_get("/v1/content/{cid}/chunks/{indices}", self._chunks)
        app.router.add_get("/v1/content/{cid}/file", self._file)
        app.router.add_get("/v1/content/{cid}/file/{path:.+}", self._file)
        app.router.add_get("/v1/content/{cid}/bt/{path:.+}", self._web_seed)
        app.router.add_get("/", self._page)
        app.router.add_get("/v1/content/{cid}/zip", self._zip)
        app.middlewares.append(self._guarded)
        app.middlewares.append(_errors_as_json)
        app.middlewares.append(self._auth)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=3.0,
            keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
            max_line_size=MAX_HEADER_LINE_BYTES,
            max_field_size=MAX_HEADER_FIELD_BYTES,
        )
        self._rate = RateLimiter(REQUESTS_PER_SECOND_PER_PEER, REQUEST_BURST_PER_PEER)
        self.guard: ConnectionGuard | None = None
        self.handshakes: TLSGate | None = None
        """TLS handshakes under way and what was cut (with `tls`)."""
        self.descriptors = DescriptorCache(OPEN_DESCRIPTORS)

    async def __aenter__(self) -> PeerServer:
        await self._runner.setup()
        assert self._runner.server is not None
        self.guard = ConnectionGuard(self._runner.server, self._guard_limits)
        hint = "is another swarmshare running? pick another --port"
        if self.tls is not None:
            self.handshakes = TLSGate(
                self._runner.server,
                self.tls,
                timeout=REQUEST_TIMEOUT_SECONDS,
                per_peer=MAX_TLS_HANDSHAKES_PER_PEER,
                total=MAX_TLS_HANDSHAKES_TOTAL,
            )
            try:
                self.port = await self.handshakes.listen(self.host, self.requested_port)
            except OSError as exc:
                await self._runner.cleanup()
                raise listen_error(exc, self.host, self.requested_port, hint) from None
        else:
            self.port = await start_site(self._runner, self.host, self.requested_port, hint)
        if self.ipv6:
            try:
                if self.handshakes is not None:
                    await self.handshakes.listen("::", self.port)
                else:
                    await web.TCPSite(self._runner, "::", self.port, reuse_address=True).start()
            except OSError as exc:  # no IPv6 here, or the port taken there: IPv4 still serves
                self.ipv6_error = exc.strerror or str(exc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.handshakes is not None:
            self.handshakes.stop_listening()
        await self._runner.cleanup()
        if self.handshakes is not None:
            await self.handshakes.closed()
        self.descriptors.close()

    @web.middleware
    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.guard is None:
            return await handler(request)
        return await self.guard.middleware(request, handler)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests += 1
        if self.guard is not None:
            self.guard.started(request.transport)
        if not self._rate.allow(request.remote or "?", time.monotonic()):
            return error_response(429, "busy", "too many requests from this address; slow down")
        if self._verifier is not None and request.path == "/":
            return _page_off()
        if self._verifier is not None and not _WEB_SEED.match(request.path):
            # (a web seed request carries its token in its path: `_web_seed` checks it)
            transport = request.transport
            local = transport.get_extra_info("sockname") if transport is not None else None
            try:
                if not local or request.remote is None:
                    raise AuthError("cannot tell who sent this request to whom", "auth")
                self._verifier.verify(
                    request.headers.get(AUTH_HEADER),
                    request.method,
                    request.raw_path,
                    time.time(),
                    request.remote,
                    (str(local[0]), int(local[1])),
                )
            except AuthError as exc:
                self.auth_refused += 1
                return error_response(401, exc.code, str(exc))
        return await handler(request)

    async def _page(self, _request: web.Request) -> web.StreamResponse:
        if self.lan_page is None:
            return _page_off()
        page = render_page(self.lan_page.provider, self.lan_page.peer_name)
        return web.Response(text=page, content_type="text/html", headers=_PAGE_HEADERS)

    async def _zip(self, request: web.Request) -> web.StreamResponse:
        if self.lan_page is None:
            return _page_off()
        provider = self.lan_page.provider
        cid = _content_id(request)
        manifest = provider.manifest(cid)
        layout = content_zip(manifest)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": zip_disposition(manifest.name),
            }
        )
        response.content_length = layout.total_size
        await response.prepare(request)
        if request.method == "HEAD":
            return response

        async def write(data: bytes) -> None:
            await _send_bytes(request, response, data, self._upload)

        def path_of(index: int) -> str:
            return provider.file_location(cid, manifest.path_of(index))

        try:
            await stream_zip(layout, path_of, write)
            await response.write_eof()
        except (OSError, ServeError):  # gone, changed on disk, or the browser went away
            if request.transport is not None:
                request.transport.close()  # a zip cut short, never a wrong one
        return response

    async def _catalog(self, request: web.Request) -> web.StreamResponse:
        catalog = self.provider.catalog()
        etag = f'"{catalog.version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=catalog.encode(), content_type="application/json", headers={"ETag": etag}
        )

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        cid = _content_id(request)
        body = self.provider.manifest_bytes(cid)
        if len(body) <= _MANIFEST_PIECE_BYTES:
            return web.Response(body=body, content_type="application/x-bittorrent")
        # A big manifest (a folder of a million files is 140 MB) goes out piece by piece: whole,
        # it would be copied into the transport's buffer, once per client asking at once.
        response = web.StreamResponse(headers={"Content-Type": "application/x-bittorrent"})
        response.content_length = len(body)
        await response.prepare(request)
        view = memoryview(body)
        for start in range(0, len(view), _MANIFEST_PIECE_BYTES):
            await response.write(view[start : start + _MANIFEST_PIECE_BYTES])
        await response.write_eof()
        return response

    async def _chunk(self, request: web.Request) -> web.StreamResponse:
        cid = _content_id(request)
        raw = request.match_info["index"]
        if not _INDEX.fullmatch(raw):
            raise ServeError(400, "bad_index", "chunk index must be a small whole number")
        index = int(raw)
        peer = request.remote or "?"
        try:
            name, location = self.provider.chunk_location(cid, index)
        except ServeError as exc:
            self.provider.served(peer, cid, "", index, 0, exc.code)
            raise
        response = _ChunkResponse(location, self._upload)
        try:
            await response.prepare(request)
        except OSError:  # the client went away (or the disk failed) mid-chunk
            self.provider.served(peer, cid, name, index, 0, "cut")
            if request.transport is not None:
                request.transport.close()  # a half-sent body must not be followed by more
            return response  # aiohttp then meets the closed connection and lets it go quietly
        self.provider.served(peer, cid, name, index, location.length, "ok")
        return response

    async def _chunks(self, request: web.Request) -> web.StreamResponse:
        cid = _content_id(request)
        indices = parse_batch(request.match_info["indices"])
        peer = request.remote or "?"
        name = ""
        locations: list[ChunkLocation] = []
        for index in indices:
            try:
                name, location = self.provider.chunk_location(cid, index)
            except ServeError as exc:
                self.provider.served(peer, cid, name, index, 0, exc.code)
                raise
            locations.append(location)
        total = sum(loc.length for loc in locations)
        if total > MAX_BATCH_BYTES:
            raise ServeError(400, "batch_too_big", f"a batch holds at most {MAX_BATCH_BYTES} bytes")
        # Reads of small chunks, mostly from the page cache: one worker-thread trip per batch.
        body = await asyncio.to_thread(self.descriptors.read_all, locations)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = total
        try:
            await response.prepare(request)
            await _send_bytes(request, response, body, self._upload)
            await response.write_eof()
        except OSError:
            for index in indices:
                self.provider.served(peer, cid, name, index, 0, "cut")
            if request.transport is not None:
                request.transport.close()
            return response
        for index, location in zip(indices, locations, strict=True):
            self.provider.served(peer, cid, name, index, location.length, "ok")
        return response

    async def _file(self, request: web.Request) -> web.StreamResponse:
        cid = _content_id(request)
        path = self.provider.file_location(cid, request.match_info.get("path"))
        if self._upload is None:
            return web.FileResponse(path)
        return _LimitedFileResponse(path, self._upload)

    async def _web_seed(self, request: web.Request) -> web.StreamResponse:
        cid = _content_id(request)
        path = request.match_info["path"]
        if self._key is not None:
            token, _, path = path.partition("/")
            # Only a token of the right shape is compared (as bytes: any other text would make
            # compare_digest raise).
            want = web_seed_token(self._key, cid).encode("ascii")
            if not _TOKEN.fullmatch(token) or not hmac.compare_digest(token.encode(), want):
                self.auth_refused += 1
                return error_response(401, "auth", "wrong web seed token for this content")
        found = self.provider.web_seed_file(cid, path)
        if isinstance(found, int):
            return _zeros(request, found)
        if self._upload is None:
            return web.FileResponse(found)
        return _LimitedFileResponse(found, self._upload)


def _zeros(request: web.Request, length: int) -> web.Response:
    """`length` zero bytes (a pad file), honouring one Range."""
    wanted = request.http_range
    start = wanted.start or 0
    stop = length if wanted.stop is None else min(wanted.stop, length)
    if start < 0:  # a suffix range: the last -start bytes
        start, stop = max(0, length + start), length
    if start >= stop and length:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{length}"})
    if request.headers.get("Range") is None:
        return web.Response(body=bytes(length), content_type="application/octet-stream")
    return web.Response(
        status=206,
        body=bytes(stop - start),
        content_type="application/octet-stream",
        headers={"Content-Range": f"bytes {start}-{stop - 1}/{length}"},
    )


class _ChunkResponse(web.StreamResponse):
    """Headers, then the chunk's bytes straight from the file by sendfile."""

    def __init__(self, location: ChunkLocation, upload: ByteBucket | None) -> None:
        super().__init__(headers={"Content-Type": "application/octet-stream"})
        self._location = location
        self._upload = upload
        self.content_length = location.length

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:  # aiohttp calls prepare again once the handler returns
            return await super().prepare(request)
        loc = self._location
        try:
            handle = open(loc.path, "rb")  # noqa: ASYNC230, SIM115 - open is instant; closed below
        except OSError:
            raise ServeError(410, "changed_on_disk", "the file is gone") from None
        with handle:
            writer = await super().prepare(request)
            assert writer is not None
            await _send_file_range(request, writer, handle, loc.offset, loc.length, self._upload)
            await super().write_eof()
            return writer


class _LimitedFileResponse(web.FileResponse):
    """A plain file (with Range) whose body is paced by the upload limit."""

    def __init__(self, path: str, upload: ByteBucket) -> None:
        super().__init__(path)
        self._upload = upload

    async def _sendfile(
        self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        # aiohttp's FileResponse has already chosen the range and written nothing yet: send
        # the headers as it would, then the body in paced pieces.
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        await _send_file_range(request, writer, fobj, offset, count, self._upload)
        await web.StreamResponse.write_eof(self)
        return writer


async def _send_file_range(
    request: web.BaseRequest,
    writer: AbstractStreamWriter,
    handle: IO[Any],
    offset: int,
    count: int,
    upload: ByteBucket | None,
) -> None:
    """Send `count` bytes of an open file from `offset`: by sendfile, in one go without a limit,
    in pieces that wait for the byte bucket with one."""
    loop = asyncio.get_running_loop()
    end = offset + count
    transport = request.transport
    # Over TLS the bytes must pass through the encryption anyway: asyncio's sendfile would
    # fall back to one worker-thread read per 16 KiB; one read per piece is many times faster.
    tls = transport is not None and transport.get_extra_info("sslcontext") is not None
    biggest = _TLS_PIECE_BYTES if tls else count
    while offset < end:
        piece = min(end - offset, biggest if upload is None else _PIECE_BYTES)
        if upload is not None:
            wait = upload.delay(piece, loop.time())
            if wait > 0:
                await asyncio.sleep(wait)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection lost")
        if tls:
            data = _cached_read(handle.fileno(), piece, offset)
            if len(data) < piece:  # not all in the page cache: the rest from a worker thread
                rest = await asyncio.to_thread(
                    os.pread, handle.fileno(), piece - len(data), offset + len(data)
                )
                data = bytes(data) + rest if data else rest
            if len(data) != piece:
                raise ConnectionResetError("the file is shorter than it was")
            await writer.write(data)
            offset += piece
            continue
        try:
            await loop.sendfile(transport, handle, offset, piece)
        except NotImplementedError:
            handle.seek(offset)
            await writer.write(handle.read(piece))
        offset += piece


def _cached_read(fd: int, count: int, offset: int) -> bytes | bytearray:
    """What of `count` bytes at `offset` the page cache already holds, read without waiting for
    the disk (so on the event loop: no worker thread's round trip); empty where that is not
    possible."""
    if _RWF_NOWAIT is None:
        return b""
    buffer = bytearray(count)
    try:
        got = os.preadv(fd, [buffer], offset, _RWF_NOWAIT)
    except OSError:  # EAGAIN: nothing cached there; EOPNOTSUPP: no such reads on this system
        return b""
    del buffer[got:]
    return buffer


async def _send_bytes(
    request: web.BaseRequest, response: web.StreamResponse, body: bytes, upload: ByteBucket | None
) -> None:
    """Write `body`: at once without an upload limit, in paced pieces with one."""
    if upload is None:
        await response.write(body)
        return
    loop = asyncio.get_running_loop()
    view = memoryview(body)
    for start in range(0, len(view), _PIECE_BYTES):
        piece = view[start : start + _PIECE_BYTES]
        wait = upload.delay(len(piece), loop.time())
        if wait > 0:
            await asyncio.sleep(wait)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection lost")
        await response.write(piece)


def parse_batch(text: str) -> list[int]:
    """The chunk indices of a batch request ("3,5-9,12"), in the order given; ServeError for
    anything malformed, a range backwards, or more than MAX_BATCH_CHUNKS chunks."""
    if len(text) > 16 * MAX_BATCH_CHUNKS or not _BATCH.fullmatch(text):
        raise ServeError(400, "bad_index", "a batch is indices and ranges: 3,5-9,12")
    indices: list[int] = []
    for token in text.split(","):
        first, _, last = token.partition("-")
        low = int(first)
        high = int(last) if last else low
        if high < low or len(indices) + high - low + 1 > MAX_BATCH_CHUNKS:
            raise ServeError(400, "bad_index", f"a batch is at most {MAX_BATCH_CHUNKS} chunks")
        indices.extend(range(low, high + 1))
    return indices


class DescriptorCache:
    """Open read descriptors of served files, the least recently used closed beyond `limit`.

    A cached descriptor is used only while its path still names the same file (device and
    inode), so a file replaced on disk is opened again, never read through its old descriptor.
    Used from worker threads.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._open: OrderedDict[str, tuple[int, int, int]] = OrderedDict()  # fd, dev, ino
        self.opened = 0

    def read_all(self, locations: list[ChunkLocation]) -> bytes:
        """The bytes of every location, one after the other; ServeError when a file is gone
        or shorter than it should be."""
        out = bytearray()
        for loc in locations:
            data = self.read(loc)
            if len(data) != loc.length:
                raise ServeError(410, "changed_on_disk", "the shared file changed on disk")
            out += data
        return bytes(out)

    def read(self, loc: ChunkLocation) -> bytes:
        """The bytes of one location (fewer at the end of a file)."""
        try:
            current = os.stat(loc.path)
        except OSError:
            raise ServeError(410, "changed_on_disk", "the file is gone") from None
        with self._lock:
            entry = self._open.get(loc.path)
            if entry is not None and (entry[1], entry[2]) != (current.st_dev, current.st_ino):
                self._close(loc.path)
                entry = None
            if entry is None:
                try:
                    fd = os.open(loc.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError:
                    raise ServeError(410, "changed_on_disk", "the file is gone") from None
                st = os.fstat(fd)
                entry = self._open[loc.path] = (fd, st.st_dev, st.st_ino)
                self.opened += 1
                while len(self._open) > self._limit:
                    self._close(next(iter(self._open)))
            self._open.move_to_end(loc.path)
            # Read under the lock: a descriptor is never closed while another thread reads it.
            try:
                return os.pread(entry[0], loc.length, loc.offset)
            except OSError:
                raise ServeError(410, "changed_on_disk", "the file cannot be read") from None

    def close(self) -> None:
        """Close every descriptor."""
        with self._lock:
            for path in list(self._open):
                self._close(path)

    def _close(self, path: str) -> None:
        fd = self._open.pop(path)[0]
        with contextlib.suppress(OSError):
            os.close(fd)


def _content_id(request: web.Request) -> str:
    cid = request.match_info["cid"]
    if not _HEX64.fullmatch(cid):
        raise ServeError(400, "bad_content_id", "a content ID is 64 lowercase hex digits")
    return cid


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServeError as exc:
        return error_response(exc.status, exc.code, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
        return error_response(exc.status, code, exc.reason)


async def start_site(runner: web.AppRunner, host: str, port: int, hint: str) -> int:
    """Listen on host:port (after runner.setup()); the port really bound. DaemonError, one
    clear line naming the cause: an address this machine does not have, or a port in use
    (then with `hint`)."""
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise listen_error(exc, host, port, hint) from None
    return int(runner.addresses[-1][1])


def listen_error(exc: OSError, host: str, port: int, hint: str) -> DaemonError:
    """The one clear line for a failure to listen on host:port."""
    where = f"cannot listen on TCP {host}:{port}"
    # Python 3.13's asyncio may report "could not bind on any address" without an errno:
    # ask the socket layer itself which it is.
    code = exc.errno or _bind_errno(host, port)
    if code == errno.EADDRNOTAVAIL:
        return DaemonError(
            f"{where}: {host} is not an address of this machine (--bind one of its"
            " addresses, or 0.0.0.0 for all of them)"
        )
    if code == errno.EADDRINUSE:
        return DaemonError(f"{where}: another program uses port {port} ({hint})")
    return DaemonError(f"{where}: {exc.strerror or exc} ({hint})")


def _bind_errno(host: str, port: int) -> int | None:
    """The errno of binding host:port with a plain socket (None if it binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno
    return None


_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


def _page_off() -> web.Response:
    return web.Response(
        status=404,
        text="No page here: this peer is in a private swarm, which shows none to browsers.\n",
        content_type="text/plain",
    )


def error_response(status: int, code: str, message: str) -> web.Response:
    """A JSON error body with a stable code."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
