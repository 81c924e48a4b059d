"""The peer client: fetch catalogues, manifests and chunks from other peers over HTTP.

Everything goes over the small kept-alive HTTP/1.1 client of chunkconn.py: the peer server
answers every GET with a Content-Length, so no general HTTP client (and its start-up cost) is
needed on this side. Every reply has a deadline (an idle timeout, and a minimum average rate
after a grace period), and the memory held for catalogues and manifests grows with the bytes
that arrived, within one budget for all peers: what a peer does wrong fails that request with a
PeerUnavailable or RemoteProtocolError that names the peer and what it did.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict

from swarmshare.core.catalog import Catalog, decode_catalog
from swarmshare.core.manifest import Manifest, decode_manifest
from swarmshare.errors import IntegrityError, SwarmshareError
from swarmshare.limits import (
    MAX_CATALOG_BYTES,
    MAX_INFLIGHT_BYTES_TOTAL,
    MAX_MANIFEST_BYTES,
    MIN_REPLY_BYTES_PER_SECOND,
    REPLY_DEADLINE_BASE_SECONDS,
)
from swarmshare.net.chunkconn import Buffer, BufferPool, ChunkClient, ChunkFetchError, Pins

MANIFESTS_KEPT = 2


class PeerUnavailable(SwarmshareError):
    """A peer could not be reached, was too slow or silent (reason "timeout"), answered with an
    error status (its error code), or no memory was left for its reply (reason "busy")."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PeerClient:
    """Client for other peers' servers; use as `async with PeerClient() as c:`."""

    def __init__(
        self,
        *,
        local_address: str | None = None,
        idle_timeout: float = 10.0,
        key: bytes | None = None,
        deadline_base_seconds: float = REPLY_DEADLINE_BASE_SECONDS,
        min_bytes_per_second: float = MIN_REPLY_BYTES_PER_SECOND,
        tls: ssl.SSLContext | None = None,
        pins: Pins | None = None,
    ) -> None:
        """`tls` and `pins`: connect over TLS, to servers whose certificate hashes to what
        `pins` gives for their address and port (a private swarm)."""
        local = local_address if local_address not in (None, "", "0.0.0.0") else None
        self.buffers = BufferPool(MAX_INFLIGHT_BYTES_TOTAL)
        # The last manifests fetched: a get asks for the one it is about to download twice
        # (to settle its name, then to start), and a big folder's manifest is costly to decode.
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()
        self._http = ChunkClient(
            local_address=local,
            idle_timeout=idle_timeout,
            pool=self.buffers,
            key=key,
            deadline_base_seconds=deadline_base_seconds,
            min_bytes_per_second=min_bytes_per_second,
            tls=tls,
            pins=pins,
        )
        self.replies = self._http.budget
        """Memory held at once for catalogue, manifest and error replies, for all peers."""

    @property
    def refused_certificates(self) -> int:
        """Connections dropped because the server's certificate was not the one pinned."""
        return self._http.refused_certificates

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._http.close()

    async def catalog(self, host: str, port: int, etag: str | None = None) -> Catalog | None:
        """A peer's catalogue, or None when it is unchanged since `etag`."""
        headers = f'If-None-Match: "{etag}"\r\n' if etag else ""
        status, body = await self._get(host, port, "/v1/catalog", MAX_CATALOG_BYTES, headers)
        if status == 304:
            return None
        return decode_catalog(bytes(body))

    async def manifest(self, host: str, port: int, content_id: str) -> Manifest:
        """A content's manifest, accepted only if it hashes to `content_id`."""
        cached = self._manifests.get(content_id)
        if cached is not None:
            return cached
        _, body = await self._get(
            host, port, f"/v1/content/{content_id}/manifest", MAX_MANIFEST_BYTES
        )
        # One pass: the parser that validates the bytes also hashes their info dict.
        manifest = decode_manifest(bytes(body))
        if manifest.content_id != content_id:
            raise IntegrityError("manifest does not hash to the content ID")
        self._manifests[content_id] = manifest
        while len(self._manifests) > MANIFESTS_KEPT:
            self._manifests.popitem(last=False)
        return manifest

    async def chunk(self, host: str, port: int, content_id: str, index: int, length: int) -> Buffer:
        """Exactly `length` bytes of chunk `index` (not yet verified: the caller hashes it)."""
        try:
            return await self._http.fetch(
                host, port, f"/v1/content/{content_id}/chunk/{index}", length
            )
        except ChunkFetchError as exc:
            raise PeerUnavailable(str(exc), exc.reason) from None

    async def chunks(
        self, host: str, port: int, content_id: str, indices: list[int], length: int
    ) -> Buffer:
        """Several chunks in one request: exactly `length` bytes, the chunks of `indices` one
        after the other (not yet verified: the caller splits and hashes them)."""
        path = f"/v1/content/{content_id}/chunks/{batch_text(indices)}"
        try:
            return await self._http.fetch(host, port, path, length)
        except ChunkFetchError as exc:
            raise PeerUnavailable(str(exc), exc.reason) from None

    async def _get(
        self, host: str, port: int, path: str, limit: int, headers: str = ""
    ) -> tuple[int, Buffer]:
        try:
            return await self._http.get(host, port, path, limit=limit, headers=headers)
        except ChunkFetchError as exc:
            raise PeerUnavailable(str(exc), exc.reason) from None


def batch_text(indices: list[int]) -> str:
    """A batch's indices as the peer server reads them: runs written as ranges ("3,5-9,12")."""
    parts: list[str] = []
    start = previous = -2
    for index in indices:
        if index == previous + 1:
            previous = index
            continue
        if start >= 0:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = index
    if start >= 0:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(parts)
