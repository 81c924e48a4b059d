"""The piece-length rule and BEP 52 merkle hashing, fed values."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core import merkle
from swarmshare.core.chunking import chunk_count, chunk_size_for, chunk_spans
from swarmshare.core.merkle import BLOCK_BYTES
from swarmshare.limits import (
    GIB,
    KIB,
    MAX_CHOSEN_CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS_PER_CONTENT,
    MIB,
    MIN_CHUNK_BYTES,
)


def test_chunk_size_examples() -> None:
    assert chunk_size_for(0) == MIN_CHUNK_BYTES
    assert chunk_size_for(1_000_000) == 64 * KIB
    assert chunk_size_for(64 * MIB) == 256 * KIB
    assert chunk_size_for(256 * MIB) == MIB
    assert chunk_size_for(GIB) == 4 * MIB
    assert chunk_count(GIB, chunk_size_for(GIB)) == 256
    assert chunk_size_for(2 * GIB) == 4 * MIB
    assert chunk_count(100 * GIB, chunk_size_for(100 * GIB)) == 25_600
    assert chunk_size_for(1 << 44) == MAX_CHUNK_BYTES  # 16 TiB: at most half the chunk limit


@given(st.integers(min_value=0, max_value=1 << 44))
def test_chunk_size_is_bounded_power_of_two(size: int) -> None:
    chunk = chunk_size_for(size)
    assert chunk & (chunk - 1) == 0
    assert MIN_CHUNK_BYTES <= chunk <= MAX_CHUNK_BYTES
    assert chunk_count(size, chunk) <= MAX_CHUNKS_PER_CONTENT // 2
    if MIN_CHUNK_BYTES < chunk < MAX_CHOSEN_CHUNK_BYTES:
        assert 128 < chunk_count(size, chunk) <= 256


@given(st.integers(min_value=0, max_value=10**8), st.sampled_from([4 * KIB, 64 * KIB, MIB]))
def test_spans_cover_the_file_exactly(size: int, chunk: int) -> None:
    spans = list(chunk_spans(size, chunk))
    assert sum(s.length for s in spans) == size
    assert all(0 < s.length <= chunk for s in spans)
    assert [s.offset for s in spans] == [i * chunk for i in range(len(spans))]


def _naive_root(data: bytes, leaves: int) -> bytes:
    """BEP 52 spelled out: every leaf, zero hashes past the end, hashed up pair by pair."""
    blocks = range(0, len(data), BLOCK_BYTES)
    layer = [hashlib.sha256(data[i : i + BLOCK_BYTES]).digest() for i in blocks]
    layer += [bytes(32)] * (leaves - len(layer))
    while len(layer) > 1:
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
    return layer[0]


@given(st.integers(0, 9 * BLOCK_BYTES), st.sampled_from([1, 2, 4, 8, 16]), st.data())
@settings(max_examples=60)
def test_merkle_root_is_bep52s(size: int, leaves: int, draw: st.DataObject) -> None:
    data = bytes(random.Random(size).getrandbits(8) for _ in range(min(size, 200))) * (
        size // 200 + 1
    )
    data = data[:size]
    leaves = max(leaves, merkle.next_power_of_two(merkle.block_count(size)))
    assert merkle.data_root(data, leaves) == _naive_root(data, leaves)
    hasher = merkle.PieceHasher(leaves)
    cuts = sorted(draw.draw(st.lists(st.integers(0, merkle.block_count(size)), max_size=4)))
    start = 0
    for cut in [*cuts, merkle.block_count(size)]:
        hasher.feed(data[start * BLOCK_BYTES : cut * BLOCK_BYTES])
        start = max(start, cut)
    assert hasher.root() == _naive_root(data, leaves)


def test_pieces_root_pads_the_piece_layer_with_padding_subtrees() -> None:
    data = bytes(range(256)) * (5 * 4 * BLOCK_BYTES // 256 + 3)  # 5 pieces of 4 blocks, + a bit
    piece = 4 * BLOCK_BYTES
    layer = b"".join(merkle.data_root(data[i : i + piece], 4) for i in range(0, len(data), piece))
    assert merkle.pieces_root(layer, piece) == _naive_root(data, 32)
    assert merkle.small_file_root(b"x") == hashlib.sha256(b"x").digest()
