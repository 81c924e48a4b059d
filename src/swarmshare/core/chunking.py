"""The chunk-size (piece length) rule, and where each chunk of a file is."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from swarmshare.limits import (
    MAX_CHOSEN_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS_PER_CONTENT,
    MIN_CHUNK_BYTES,
    TARGET_CHUNKS_PER_FILE,
)


def chunk_size_for(file_size: int) -> int:
    """The piece length of a content of `file_size` bytes in all: a power of two, about 256
    pieces (each file starts on a piece boundary, so a folder of small files has more).

    Small contents get 64 KiB pieces (so even a 1 MB file can come from many peers at once),
    large ones up to 4 MiB (a 1 GiB content has 256 pieces of 4 MiB; a bigger one has more
    pieces rather than longer ones, until a content would exceed MAX_CHUNKS_PER_CONTENT).
    Each piece is one request and one verification: fewer, longer pieces cost less per byte
    (measured in bench/download.py), and 4 MiB keeps several requests in flight per peer.
    """
    if file_size < 0:
        raise ValueError("file size must not be negative")
    want = -(-file_size // TARGET_CHUNKS_PER_FILE)
    size = MIN_CHUNK_BYTES
    while size < want and size < MAX_CHOSEN_CHUNK_BYTES:
        size *= 2
    while file_size > size * MAX_CHUNKS_PER_CONTENT // 2 and size < MAX_CHUNK_BYTES:
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
