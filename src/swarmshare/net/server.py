"""The peer server: read-only HTTP/1.1 that serves catalogue, manifests, chunks and files.

    GET /v1/catalog                          what this peer holds (ETag = catalogue version)
    GET /v1/content/{id}/manifest            the canonical manifest bytes
    GET /v1/content/{id}/chunk/{index}       one chunk, by sendfile from the file in place
    GET /v1/content/{id}/file[/{path}]       a plain file, with Range, for curl and friends

With an upload limit, chunk and file bodies go out in pieces paced by one byte bucket shared by
every connection.

No path from a request ever reaches the file system: a request names a content ID and a chunk
index or a path *inside the manifest*, and the provider maps those to files it recorded.
Errors are JSON: {"error": {"code": "unknown_content", "message": "..."}}.
"""

from __future__ import annotations

import asyncio
import errno
import re
import time
from typing import IO, Any, Protocol

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.typedefs import Handler

from swarmshare.core.auth import AUTH_HEADER, AuthError, RequestVerifier
from swarmshare.core.catalog import Catalog
from swarmshare.core.location import ChunkLocation
from swarmshare.core.ratelimit import ByteBucket, RateLimiter
from swarmshare.errors import DaemonError, SwarmshareError
from swarmshare.limits import (
    KEEPALIVE_TIMEOUT_SECONDS,
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_LINE_BYTES,
    REQUEST_BURST_PER_PEER,
    REQUESTS_PER_SECOND_PER_PEER,
)
from swarmshare.net.guard import ConnectionGuard, GuardLimits

_HEX64 = re.compile(r"[0-9a-f]{64}")
_INDEX = re.compile(r"[0-9]{1,9}")
# What a limited upload sends between two looks at the byte bucket.
_PIECE_BYTES = 64 * 1024


class ServeError(SwarmshareError):
    """A request the peer server refuses, with its HTTP status and stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


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
    ) -> None:
        """`ipv6`: also listen on every IPv6 address, on the same port (for a wildcard host)."""
        self.provider = provider
        self.ipv6 = ipv6
        self.ipv6_error: str | None = None
        self._guard_limits = guard_limits
        self._upload = (
            ByteBucket(upload_bytes_per_second, _PIECE_BYTES) if upload_bytes_per_second else None
        )
        self.auth_refused = 0
        self._verifier = RequestVerifier(key) if key is not None else None
        self.host = host
        self.requested_port = port
        self.port = 0
        app = web.Application(client_max_size=1024)
        app.router.add_get("/v1/catalog", self._catalog)
        app.router.add_get("/v1/content/{cid}/manifest", self._manifest)
        app.router.add_get("/v1/content/{cid}/chunk/{index}", self._chunk)
        app.router.add_get("/v1/content/{cid}/file", self._file)
        app.router.add_get("/v1/content/{cid}/file/{path:.+}", self._file)
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

    async def __aenter__(self) -> PeerServer:
        await self._runner.setup()
        assert self._runner.server is not None
        self.guard = ConnectionGuard(self._runner.server, self._guard_limits)
        self.port = await start_site(
            self._runner,
            self.host,
            self.requested_port,
            "is another swarmshare running? pick another --port",
        )
        if self.ipv6:
            try:
                await web.TCPSite(self._runner, "::", self.port, reuse_address=True).start()
            except OSError as exc:  # no IPv6 here, or the port taken there: IPv4 still serves
                self.ipv6_error = exc.strerror or str(exc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    @web.middleware
    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.guard is None:
            return await handler(request)
        return await self.guard.middleware(request, handler)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.guard is not None:
            self.guard.started(request.transport)
        if not self._rate.allow(request.remote or "?", time.monotonic()):
            return error_response(429, "busy", "too many requests from this address; slow down")
        if self._verifier is not None:
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
        return web.Response(body=self.provider.manifest_bytes(cid), content_type="application/json")

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

    async def _file(self, request: web.Request) -> web.StreamResponse:
        cid = _content_id(request)
        path = self.provider.file_location(cid, request.match_info.get("path"))
        if self._upload is None:
            return web.FileResponse(path)
        return _LimitedFileResponse(path, self._upload)


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
    while offset < end:
        piece = end - offset if upload is None else min(end - offset, _PIECE_BYTES)
        if upload is not None:
            wait = upload.delay(piece, loop.time())
            if wait > 0:
                await asyncio.sleep(wait)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection lost")
        try:
            await loop.sendfile(transport, handle, offset, piece)
        except NotImplementedError:
            handle.seek(offset)
            await writer.write(handle.read(piece))
        offset += piece


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
        where = f"cannot listen on TCP {host}:{port}"
        if exc.errno == errno.EADDRNOTAVAIL:
            raise DaemonError(
                f"{where}: {host} is not an address of this machine (--bind one of its"
                " addresses, or 0.0.0.0 for all of them)"
            ) from None
        if exc.errno == errno.EADDRINUSE:
            raise DaemonError(f"{where}: another program uses port {port} ({hint})") from None
        raise DaemonError(f"{where}: {exc.strerror or exc} ({hint})") from None
    return int(runner.addresses[-1][1])


def error_response(status: int, code: str, message: str) -> web.Response:
    """A JSON error body with a stable code."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
