"""The seed's own wire formats, at the edge: its announcements and its chunk transfer.

The original four scripts (see the project's seed/protocol.md) know a content only by its file
name without extension, always cut in five: `cat_1` ... `cat_5`, each the i-th fifth of
`cat.png` (the fifth rounded up; the last holds the rest). They announce
`{"chunks": ["cat_1", ...]}` by UDP broadcast, and serve a chunk to whoever connects to TCP
port 5000 and sends `{"requested_content": "cat_3"}`: the raw bytes, then close. No hashes.

This module only speaks those formats: decoding and encoding datagrams, a server that answers
from a mapping it is given, and a client that reads a reply to the end. What the names mean in
the library is decided by the caller; the core knows nothing of any of it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from swarmshare.errors import RemoteProtocolError, SwarmshareError

SEED_DATAGRAM_BYTES = 1024  # the original listener's recvfrom(1024)
SEED_REQUEST_BYTES = 1024  # the original uploader's recv(1024)
SEED_PIECES = 5
MAX_SEED_NAMES_PER_DATAGRAM = 200
REQUEST_TIMEOUT_SECONDS = 5.0
_SEED_CHUNK = re.compile(r"(?P<name>[^/\\\x00-\x1f]{1,200})_(?P<index>[1-5])")


class SeedFormatError(RemoteProtocolError):
    """Bytes that are not a valid seed announcement or request."""


@dataclass(frozen=True, slots=True)
class SeedChunk:
    """One seed chunk name, split: `cat_3` is SeedChunk("cat", 3)."""

    name: str
    index: int

    @property
    def label(self) -> str:
        """The seed's name for it."""
        return f"{self.name}_{self.index}"


def parse_chunk_name(text: str) -> SeedChunk:
    """`cat_3` -> SeedChunk('cat', 3); SeedFormatError for anything else."""
    match = _SEED_CHUNK.fullmatch(text)
    if match is None or match["name"] in (".", ".."):
        raise SeedFormatError(f"not a seed chunk name: {text[:60]!r}")
    return SeedChunk(match["name"], int(match["index"]))


def is_seed_datagram(data: bytes) -> bool:
    """A cheap shape test: a seed datagram is a JSON object whose only key is `chunks`."""
    return data.lstrip().startswith(b'{"chunks"') or data.lstrip().startswith(b"{'chunks'")


def decode_seed_announcement(data: bytes) -> list[SeedChunk]:
    """The chunk names of a seed datagram; SeedFormatError unless it is exactly that shape.

    Names that are not `NAME_1`..`NAME_5` (the seed only ever makes those) are skipped.
    """
    if len(data) > SEED_DATAGRAM_BYTES:
        raise SeedFormatError("seed datagram over 1,024 bytes")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SeedFormatError("seed datagram is not JSON") from None
    if not isinstance(obj, dict) or set(obj) != {"chunks"} or not isinstance(obj["chunks"], list):
        raise SeedFormatError("a seed datagram is an object whose only key is chunks")
    found: list[SeedChunk] = []
    for item in obj["chunks"][:MAX_SEED_NAMES_PER_DATAGRAM]:
        if isinstance(item, str):
            try:
                found.append(parse_chunk_name(item))
            except SeedFormatError:
                continue
    return found


def encode_seed_announcements(names: list[str]) -> list[bytes]:
    """`{"chunks": [...]}` datagrams for NAME_1..NAME_5 of each name, each at most 1,024 bytes.

    The original listener dies on a bigger datagram, so the list is split into several, each
    a complete object.
    """
    labels = [f"{name}_{i}" for name in names for i in range(1, SEED_PIECES + 1)]
    datagrams: list[bytes] = []
    batch: list[str] = []
    for label in labels:
        candidate = json.dumps({"chunks": [*batch, label]}).encode()
        if len(candidate) > SEED_DATAGRAM_BYTES:
            if not batch:
                continue  # a single name too long to announce at all
            datagrams.append(json.dumps({"chunks": batch}).encode())
            batch = [label]
        else:
            batch.append(label)
    if batch:
        datagrams.append(json.dumps({"chunks": batch}).encode())
    return datagrams


def piece_span(size: int, index: int) -> tuple[int, int]:
    """(offset, length) of the seed's i-th fifth of a file of `size` bytes (length may be 0)."""
    piece = -(-size // SEED_PIECES)
    offset = (index - 1) * piece
    return offset, max(0, min(piece, size - offset))


def piece_count(size: int) -> int:
    """How many of the five pieces are not empty (the seed gives small files fewer)."""
    return sum(1 for i in range(1, SEED_PIECES + 1) if piece_span(size, i)[1] > 0)


def decode_seed_request(data: bytes) -> SeedChunk:
    """The chunk a seed downloader asks for; SeedFormatError for anything else."""
    if len(data) > SEED_REQUEST_BYTES:
        raise SeedFormatError("request over 1,024 bytes")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SeedFormatError("request is not JSON") from None
    if not isinstance(obj, dict) or set(obj) != {"requested_content"}:
        raise SeedFormatError('request must be {"requested_content": NAME_i}')
    value = obj["requested_content"]
    if not isinstance(value, str):
        raise SeedFormatError("requested_content must be a string")
    return parse_chunk_name(value)


# ---- serving seed downloaders ----------------------------------------------------------------

Locate = Callable[[SeedChunk], "tuple[str, int, int] | None"]
OnServed = Callable[[str, str, int, str], None]


class LegacyServer:
    """A seed-compatible chunk server: one request per connection, raw bytes, close.

    `locate(chunk)` answers (path, offset, length) for a chunk this peer shares, or None.
    `on_served(peer, label, nbytes, result)` records every connection, refused ones too.
    """

    def __init__(self, host: str, port: int, locate: Locate, on_served: OnServed) -> None:
        self.host = host
        self.requested_port = port
        self.port = 0
        self.refused = 0
        self.served_count = 0
        self._locate = locate
        self._on_served = on_served
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LegacyServer:
        try:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.requested_port, reuse_address=True
            )
        except OSError as exc:
            raise SwarmshareError(
                f"cannot listen for seed peers on TCP {self.host}:{self.requested_port}:"
                f" {exc.strerror} (pick another --legacy-port)"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        peer = str(writer.get_extra_info("peername", ("?", 0))[0])
        label = "?"
        try:
            data = await _read_request(reader)
            chunk = decode_seed_request(data)
            label = chunk.label
            where = self._locate(chunk)
            if where is None:
                self._refuse(peer, label, "not_held")
                return
            path, offset, length = where
            with open(path, "rb") as handle:  # noqa: ASYNC230 - open is instant
                if length:
                    await asyncio.get_running_loop().sendfile(
                        writer.transport, handle, offset, length
                    )
            await writer.drain()
            self.served_count += 1
            self._on_served(peer, label, length, "ok")
        except SeedFormatError as exc:
            self._refuse(peer, label, "bad_request:" + str(exc)[:60])
        except (TimeoutError, ConnectionError, OSError):
            self._refuse(peer, label, "cut")
        finally:
            writer.close()
            self._handlers.discard(task)

    def _refuse(self, peer: str, label: str, why: str) -> None:
        self.refused += 1
        self._on_served(peer, label, 0, why)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Read until a whole JSON object, 1,024 bytes, EOF or the timeout; whichever comes first."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REQUEST_TIMEOUT_SECONDS
    while len(data) <= SEED_REQUEST_BYTES:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        piece = await asyncio.wait_for(reader.read(SEED_REQUEST_BYTES + 1 - len(data)), remaining)
        if not piece:
            break
        data += piece
        try:
            json.loads(data.decode("utf-8"))
            break
        except (UnicodeDecodeError, ValueError):
            continue
    return data


# ---- fetching from seed uploaders -----------------------------------------------------------


class SeedFetchError(SwarmshareError):
    """A seed uploader refused, timed out, or sent nothing."""


async def fetch_seed_chunk(
    host: str,
    port: int,
    chunk: SeedChunk,
    *,
    limit: int,
    idle_seconds: float,
    local_address: str | None = None,
) -> bytes:
    """Ask a seed uploader for one chunk and read its reply to the end of the stream."""
    local = (local_address, 0) if local_address and local_address != "0.0.0.0" else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local), idle_seconds
        )
    except (OSError, TimeoutError) as exc:
        raise SeedFetchError(f"{host}:{port} refused or did not answer: {exc}") from None
    try:
        writer.write(json.dumps({"requested_content": chunk.label}).encode())
        await writer.drain()
        parts: list[bytes] = []
        total = 0
        while True:
            piece = await asyncio.wait_for(reader.read(1 << 18), idle_seconds)
            if not piece:
                break
            total += len(piece)
            if total > limit:
                raise SeedFetchError(f"{host} sent more than {limit} bytes for {chunk.label}")
            parts.append(piece)
    except (OSError, TimeoutError) as exc:
        raise SeedFetchError(f"{host}: transfer of {chunk.label} failed: {exc}") from None
    finally:
        writer.close()
    data = b"".join(parts)
    if not data:
        raise SeedFetchError(f"{host} has no {chunk.label} (it sent nothing)")
    return data
