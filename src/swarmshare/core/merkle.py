"""BEP 52 merkle trees: SHA-256 over 16 KiB blocks, branching factor two.

A file's leaves are the SHA-256 of each 16 KiB block (the last one may be shorter). A tree over
`width` leaves (a power of two) pads the leaf layer with zero hashes; a node over padding only
is hashed like any other (its value depends on its height). So:

- a piece of a file longer than one piece has the root of its own subtree of
  `piece length / 16 KiB` leaves (the file's last piece padded): its piece layer entry;
- a file's pieces root is the root over its piece layer, padded to a power of two with the
  root of an all-padding piece subtree; a file of one piece or less has no piece layer, and its
  pieces root covers its leaves padded to the next power of two.
"""

from __future__ import annotations

import hashlib

BLOCK_BYTES = 16 * 1024
HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)

_sha256 = hashlib.sha256
_PADS = [ZERO_HASH]  # the root of an all-padding subtree of 2**height leaves, by height
for _ in range(64):
    _PADS.append(_sha256(_PADS[-1] + _PADS[-1]).digest())


def pad_hash(height: int) -> bytes:
    """The root of a subtree of 2**height padding leaves."""
    return _PADS[height]


def next_power_of_two(count: int) -> int:
    """The least power of two >= `count` (1 for 0)."""
    return 1 if count <= 1 else 1 << (count - 1).bit_length()


def block_count(size: int) -> int:
    """How many 16 KiB blocks (leaves) `size` bytes make."""
    return -(-size // BLOCK_BYTES)


def leaf_hashes(data: bytes | bytearray | memoryview) -> list[bytes]:
    """The SHA-256 of each 16 KiB block of `data`."""
    view = memoryview(data)
    return [
        _sha256(view[at : at + BLOCK_BYTES]).digest() for at in range(0, len(view), BLOCK_BYTES)
    ]


def root(hashes: list[bytes], width: int, height: int = 0) -> bytes:
    """The root over `hashes` (nodes of the given height) padded to `width` of them, a power
    of two at least `len(hashes)`; `hashes` is consumed."""
    if len(hashes) > width or width & (width - 1):
        raise ValueError("width must be a power of two covering the hashes")
    layer = hashes
    while width > 1:
        if len(layer) & 1:
            layer.append(_PADS[height])
        layer = [_sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
        width >>= 1
        height += 1
    return layer[0] if layer else _PADS[height]


def data_root(data: bytes | bytearray | memoryview, leaves: int) -> bytes:
    """The root over `data`'s blocks padded to `leaves` leaves (a power of two)."""
    return root(leaf_hashes(data), leaves)


def piece_leaves(piece_length: int) -> int:
    """Leaves under one piece: `piece_length` / 16 KiB."""
    return piece_length // BLOCK_BYTES


def pieces_root(layer: bytes, piece_length: int) -> bytes:
    """A file's pieces root from its piece layer (concatenated piece subtree roots)."""
    hashes = [layer[at : at + HASH_BYTES] for at in range(0, len(layer), HASH_BYTES)]
    height = piece_leaves(piece_length).bit_length() - 1
    return root(hashes, next_power_of_two(len(hashes)), height)


def small_file_root(data: bytes | bytearray | memoryview) -> bytes:
    """The pieces root of a non-empty file of one piece or less."""
    return data_root(data, next_power_of_two(block_count(len(data))))


class PieceHasher:
    """Hashes one piece fed in parts of whole blocks (the last part may end the piece short):
    keeps only the leaf hashes, never the bytes."""

    __slots__ = ("_leaves", "_width")

    def __init__(self, leaves: int) -> None:
        self._leaves: list[bytes] = []
        self._width = leaves

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Hash the next blocks of the piece (a multiple of 16 KiB unless it is the last)."""
        self._leaves += leaf_hashes(data)

    def root(self) -> bytes:
        """The piece's subtree root."""
        return root(self._leaves, self._width)
