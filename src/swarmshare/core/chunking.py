"""The chunk-size rule and SHA-256 hashing of a byte stream, chunk by chunk, in bounded memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from swarmshare.limits import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, TARGET_CHUNKS_PER_FILE


def chunk_size_for(file_size: int) -> int:
    """The chunk size of a file of `file_size` bytes: a power of two, about 1,024 chunks per file.

    Small files get 64 KiB chunks (so even a 1 MB file can come from many peers at once), large
    ones up to 16 MiB (a 1 GiB file has 1,024 chunks of 1 MiB).
    """
    if file_size < 0:
        raise ValueError("file size must not be negative")
    want = -(-file_size // TARGET_CHUNKS_PER_FILE)
    size = MIN_CHUNK_BYTES
    while size < want and size < MAX_CHUNK_BYTES:
        size *= 2
    return size


def chunk_count(file_size: int, chunk_size: int) -> int:
    """How many chunks a file of `file_size` bytes has (0 for an empty file)."""
    return -(-file_size // chunk_size)


@dataclass(frozen=True, slots=True)
class Span:
    """One chunk's place in its file."""

    index: int
    offset: int
    length: int


def chunk_spans(file_size: int, chunk_size: int) -> Iterator[Span]:
    """The spans of every chunk of a file, in order; the last one holds the rest."""
    for index in range(chunk_count(file_size, chunk_size)):
        offset = index * chunk_size
        yield Span(index, offset, min(chunk_size, file_size - offset))


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """The SHA-256 of `data` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


class ChunkHasher:
    """Hashes a stream fed in pieces of any size, one chunk at a time.

    Holds at most one partial chunk's hash state (never the chunk's bytes), so memory stays
    bounded whatever the stream's length.
    """

    def __init__(self, chunk_size: int) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk size must be positive")
        self._chunk_size = chunk_size
        self._hash = hashlib.sha256()
        self._filled = 0
        self._digests: list[str] = []
        self._total = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Hash the next bytes of the stream."""
        view = memoryview(data)
        self._total += len(view)
        while view:
            take = min(len(view), self._chunk_size - self._filled)
            self._hash.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._chunk_size:
                self._digests.append(self._hash.hexdigest())
                self._hash = hashlib.sha256()
                self._filled = 0

    def finish(self) -> list[str]:
        """The hex digests of every chunk, the last (short) one included."""
        if self._filled:
            self._digests.append(self._hash.hexdigest())
            self._hash = hashlib.sha256()
            self._filled = 0
        return list(self._digests)

    @property
    def total_bytes(self) -> int:
        """How many bytes were fed so far."""
        return self._total
