"""The peer client: fetch catalogues, manifests and chunks from other peers over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import aiohttp
from yarl import URL

from swarmshare.core.auth import AUTH_HEADER, request_header
from swarmshare.core.catalog import Catalog, decode_catalog
from swarmshare.core.manifest import Manifest, decode_manifest
from swarmshare.errors import IntegrityError, RemoteProtocolError, SwarmshareError
from swarmshare.limits import (
    CONNECT_TIMEOUT_SECONDS,
    MAX_CATALOG_BYTES,
    MAX_INFLIGHT_BYTES_TOTAL,
    MAX_MANIFEST_BYTES,
)
from swarmshare.net.chunkconn import BufferPool, ChunkClient, ChunkFetchError


class PeerUnavailable(SwarmshareError):
    """A peer could not be reached, timed out, or answered with an error status."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PeerClient:
    """HTTP client for other peers' servers; use as `async with PeerClient() as c:`."""

    def __init__(
        self,
        *,
        local_address: str | None = None,
        idle_timeout: float = 10.0,
        key: bytes | None = None,
    ) -> None:
        self._local = local_address if local_address not in (None, "", "0.0.0.0") else None
        self._key = key
        self._idle = idle_timeout
        self._session: aiohttp.ClientSession | None = None
        self.buffers = BufferPool(MAX_INFLIGHT_BYTES_TOTAL)
        self._chunks = ChunkClient(
            local_address=self._local, idle_timeout=idle_timeout, pool=self.buffers, key=key
        )

    async def __aenter__(self) -> PeerClient:
        connector = aiohttp.TCPConnector(
            limit=256,
            limit_per_host=32,
            local_addr=(self._local, 0) if self._local else None,
            ttl_dns_cache=None,
            use_dns_cache=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=self._idle
            ),
            trust_env=False,
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._chunks.close()
        if self._session is not None:
            await self._session.close()

    async def catalog(self, base_url: str, etag: str | None = None) -> Catalog | None:
        """A peer's catalogue, or None when it is unchanged since `etag`."""
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        body = await self._get(base_url + "/v1/catalog", MAX_CATALOG_BYTES, headers)
        if body is None:
            return None
        return decode_catalog(body)

    async def manifest(self, base_url: str, content_id: str) -> Manifest:
        """A content's manifest, accepted only if it hashes to `content_id`."""
        body = await self._get(f"{base_url}/v1/content/{content_id}/manifest", MAX_MANIFEST_BYTES)
        assert body is not None
        if hashlib.sha256(body).hexdigest() != content_id:
            raise IntegrityError("manifest does not hash to the content ID")
        return decode_manifest(body)

    async def chunk(
        self, host: str, port: int, content_id: str, index: int, length: int
    ) -> bytearray:
        """Exactly `length` bytes of chunk `index` (not yet verified: the caller hashes it)."""
        try:
            return await self._chunks.fetch(
                host, port, f"/v1/content/{content_id}/chunk/{index}", length
            )
        except ChunkFetchError as exc:
            raise PeerUnavailable(str(exc), exc.reason) from None

    async def _get(
        self, url: str, limit: int, headers: dict[str, str] | None = None
    ) -> bytes | None:
        assert self._session is not None, "use PeerClient as an async context manager"
        if self._key is not None:
            path = URL(url).raw_path_qs
            headers = {
                **(headers or {}),
                AUTH_HEADER: request_header(self._key, "GET", path, time.time()),
            }
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status == 304:
                    return None
                if resp.status != 200:
                    code = await _error_code(resp)
                    raise PeerUnavailable(f"{url}: HTTP {resp.status} {code}", code)
                if resp.content_length is not None and resp.content_length > limit:
                    raise RemoteProtocolError(f"{url}: reply of {resp.content_length} bytes")
                return await _read_limited(resp, limit)
        except TimeoutError:
            raise PeerUnavailable(f"{url}: timed out", "timeout") from None
        except aiohttp.ClientPayloadError as exc:
            raise PeerUnavailable(f"{url}: transfer cut ({exc})", "short") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PeerUnavailable(f"{url}: {exc}", "unreachable") from None


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    async for piece in resp.content.iter_chunked(1 << 18):
        total += len(piece)
        if total > limit:
            raise RemoteProtocolError(f"reply over {limit} bytes")
        parts.append(piece)
    if resp.content_length is not None and total != resp.content_length:
        raise PeerUnavailable("reply shorter than announced", "short")
    return b"".join(parts)


async def _error_code(resp: aiohttp.ClientResponse) -> str:
    try:
        body = await asyncio.wait_for(resp.content.read(4096), 2.0)
        code = json.loads(body)["error"]["code"]
        return code if isinstance(code, str) and code.isidentifier() else "http_error"
    except Exception:
        return "http_error"
