"""The chunk-size rule and the streaming chunk hasher, fed values."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from swarmshare.core.chunking import ChunkHasher, chunk_count, chunk_size_for, chunk_spans
from swarmshare.limits import GIB, KIB, MAX_CHUNK_BYTES, MIB, MIN_CHUNK_BYTES


def test_chunk_size_examples() -> None:
    assert chunk_size_for(0) == MIN_CHUNK_BYTES
    assert chunk_size_for(1_000_000) == 64 * KIB
    assert chunk_size_for(GIB) == MIB
    assert chunk_count(GIB, chunk_size_for(GIB)) == 1024
    assert chunk_size_for(2 * GIB) == 2 * MIB
    assert chunk_size_for(1 << 44) == MAX_CHUNK_BYTES


@given(st.integers(min_value=0, max_value=1 << 44))
def test_chunk_size_is_bounded_power_of_two(size: int) -> None:
    chunk = chunk_size_for(size)
    assert chunk & (chunk - 1) == 0
    assert MIN_CHUNK_BYTES <= chunk <= MAX_CHUNK_BYTES
    if MIN_CHUNK_BYTES < chunk < MAX_CHUNK_BYTES:
        assert 512 < chunk_count(size, chunk) <= 1024


@given(st.integers(min_value=0, max_value=10**8), st.sampled_from([4 * KIB, 64 * KIB, MIB]))
def test_spans_cover_the_file_exactly(size: int, chunk: int) -> None:
    spans = list(chunk_spans(size, chunk))
    assert sum(s.length for s in spans) == size
    assert all(0 < s.length <= chunk for s in spans)
    assert [s.offset for s in spans] == [i * chunk for i in range(len(spans))]


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700), st.data())
def test_hasher_any_split_equals_whole(data: bytes, chunk: int, draw: st.DataObject) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=10)))
    hasher = ChunkHasher(chunk)
    start = 0
    for cut in [*cuts, len(data)]:
        hasher.feed(data[start:cut])
        start = cut
    expected = [hashlib.sha256(data[i : i + chunk]).hexdigest() for i in range(0, len(data), chunk)]
    assert hasher.finish() == expected
    assert hasher.total_bytes == len(data)


def test_hasher_byte_by_byte() -> None:
    data = bytes(range(256)) * 3
    hasher = ChunkHasher(100)
    for b in data:
        hasher.feed(bytes([b]))
    assert hasher.finish()[0] == hashlib.sha256(data[:100]).hexdigest()
