"""Manifests: what a content is -- what a BitTorrent v2 .torrent carries (BEP 52).

A manifest is the bencoding of `{"info": INFO, "piece layers": LAYERS}`: INFO names the content
(one file, or one folder tree), its piece length (one per content, a power of two of at least
16 KiB) and, per file, its length and its pieces root (the root of the file's SHA-256 merkle
tree of 16 KiB blocks, see `core/merkle.py`); LAYERS holds, for each file longer than one
piece, the roots of its pieces' subtrees. Every file starts on a piece boundary: chunks are v2
pieces and never span two files.

The **content ID is the v2 infohash**: the SHA-256 of INFO's bytes, 64 hex digits. Bencode is
canonical, and `decode_manifest` accepts only the exact form this module writes -- anything
else (a key out of order or unknown, a number or path out of range, an unsafe name, a piece
layer that does not hash to its file's pieces root) raises `ManifestError`, so one content has
one encoding and untrusted bytes never become a bad manifest. A chunk of a file longer than one
piece is verified by its subtree root against the piece layer; the chunk of a smaller file by
the file's pieces root.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
import unicodedata
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal, overload

from swarmshare.core import merkle
from swarmshare.core.bencode import BencodeError, read_int, read_string, skip
from swarmshare.core.chunking import Span, chunk_count, chunk_size_for
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import (
    MAX_CHUNK_BYTES,
    MAX_CHUNKS_PER_CONTENT,
    MAX_FILE_BYTES,
    MAX_FILES_PER_CONTENT,
    MAX_MANIFEST_BYTES,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    MAX_PATH_DEPTH,
)

FORMAT_VERSION = 2  # BEP 52's meta version
MIN_PIECE_BYTES = merkle.BLOCK_BYTES
ContentKind = Literal["file", "dir"]
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Anything validate_name refuses in an ASCII name of an allowed length.
_REFUSED = re.compile(r"[\x00-\x1f\x7f/\\]|\A\.\.?\Z|\A[A-Za-z]:")


class ManifestError(RemoteProtocolError):
    """Bytes or values that are not a valid manifest."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a content: its path inside the content, its size, the content's piece
    length, and the expected root of each of its chunks (hex): its piece layer, or for a file
    of one piece its pieces root (none for an empty file)."""

    path: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]

    @property
    def pieces_root(self) -> bytes | None:
        """The file's BEP 52 pieces root (None for an empty file)."""
        if not self.chunks:
            return None
        if len(self.chunks) == 1:
            return bytes.fromhex(self.chunks[0])
        return merkle.pieces_root(bytes.fromhex("".join(self.chunks)), self.chunk_size)


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where chunk `index` (counted over the whole content) lives, and what it must hash to:
    `root`, the merkle root of its 16 KiB blocks padded to `leaves` leaves."""

    index: int
    file_index: int
    offset: int
    length: int
    root: bytes
    leaves: int

    @property
    def sha256(self) -> str:
        """The expected root as 64 hex digits (the chunk's name in indexes)."""
        return self.root.hex()

    def matches(self, data: bytes | bytearray | memoryview | Any) -> bool:
        """Whether `data` is this chunk's bytes."""
        if len(data) != self.length:
            return False
        if self.leaves == 1:  # one block: its hash is the root (most files of a folder)
            return hashlib.sha256(data).digest() == self.root
        return merkle.data_root(data, self.leaves) == self.root


class Manifest:
    """A validated content description. Build with `Manifest.build` or `decode_manifest`.

    Held compactly, whatever its number of files: the canonical bytes themselves, and per file
    a few machine integers (where its name, pieces root and piece layer are in those bytes, its
    folder, size and first chunk) in arrays. A file's `FileEntry` and a chunk's `ChunkRef` are
    made when asked for, never kept: a million files cost tens of bytes each, not objects.
    """

    __slots__ = (
        "_chunk_total",
        "_content_id",
        "_dir_at",
        "_dir_end",
        "_dir_parent",
        "_encoded",
        "_info_end",
        "_key_at",
        "_key_end",
        "_layer_at",
        "_parent",
        "_piece_length",
        "_root_at",
        "_sizes",
        "_starts",
        "_total_size",
        "kind",
        "name",
    )

    name: str
    kind: ContentKind
    _encoded: bytes
    _info_end: int
    _key_at: array[int]  # where each file's own name starts in the encoded bytes
    _key_end: array[int]
    _parent: array[int]  # each file's folder (an index into the _dir_ arrays), -1 at the top
    _dir_at: array[int]
    _dir_end: array[int]
    _dir_parent: array[int]
    _sizes: array[int]
    _root_at: array[int]  # where each file's pieces root is (-1: empty file)
    _layer_at: array[int]  # where each file's piece layer is (-1: one piece or less)
    _starts: array[int]  # each file's first chunk, counted over the content
    _piece_length: int
    _chunk_total: int
    _total_size: int
    _content_id: str

    def __init__(
        self, name: str, kind: ContentKind, files: Iterable[FileEntry], piece_length: int
    ) -> None:
        """A manifest of `files`, already in canonical order (see `path_key`); validates all."""
        _adopt(self, _encode(name, kind, files, piece_length))
        if self.name != name or self.kind != kind:
            raise ManifestError(
                "a folder holding only a file named like itself is that file"
                if kind == "dir"
                else "manifest name or kind does not encode as given"
            )

    @classmethod
    def build(cls, name: str, kind: ContentKind, files: Sequence[FileEntry]) -> Manifest:
        """A manifest from its parts, files put in canonical order; validates everything.
        The piece length is the files' `chunk_size` (one for all)."""
        lengths = {f.chunk_size for f in files}
        if len(lengths) > 1:
            raise ManifestError("the files of one content have one piece length")
        piece_length = lengths.pop() if lengths else chunk_size_for(0)
        return cls(name, kind, sorted(files, key=lambda f: path_key(f.path)), piece_length)

    @property
    def files(self) -> Sequence[FileEntry]:
        """Every file, in canonical order (entries made on access)."""
        return _Files(self)

    @property
    def encoded(self) -> bytes:
        """The canonical bytes: a bencoded dictionary of the info dict and the piece layers."""
        return self._encoded

    @property
    def info(self) -> bytes:
        """The bencoded info dict, whose SHA-256 is the content ID."""
        return self._encoded[_INFO_AT : self._info_end]

    @property
    def piece_layers(self) -> bytes:
        """The bencoded piece layers dictionary."""
        return self._encoded[self._info_end + len(_LAYERS_KEY) : -1]

    @property
    def content_id(self) -> str:
        """The v2 infohash: SHA-256 of the info dict, 64 hex digits."""
        return self._content_id

    @property
    def piece_length(self) -> int:
        """The content's piece (chunk) length."""
        return self._piece_length

    @property
    def total_size(self) -> int:
        """Bytes of all files together."""
        return self._total_size

    @property
    def chunk_total(self) -> int:
        """Chunks of all files together."""
        return self._chunk_total

    @property
    def file_count(self) -> int:
        """How many files the content holds."""
        return len(self._sizes)

    def path_of(self, file_index: int) -> str:
        """The path of file `file_index` inside the content."""
        encoded = self._encoded
        parts = [encoded[self._key_at[file_index] : self._key_end[file_index]]]
        folder = self._parent[file_index]
        while folder >= 0:
            parts.append(encoded[self._dir_at[folder] : self._dir_end[folder]])
            folder = self._dir_parent[folder]
        return b"/".join(reversed(parts)).decode("utf-8")

    def find(self, path: str) -> int | None:
        """The index of the file at `path`, or None, in O(log files)."""
        return _find_path(self, path)

    def size_of(self, file_index: int) -> int:
        """The size in bytes of file `file_index`."""
        return self._sizes[file_index]

    def chunk_size_of(self, file_index: int) -> int:
        """The chunk size of file `file_index`: the content's piece length."""
        return self._piece_length

    def pieces_root_of(self, file_index: int) -> bytes | None:
        """The pieces root of file `file_index` (None for an empty file)."""
        at = self._root_at[file_index]
        return None if at < 0 else self._encoded[at : at + merkle.HASH_BYTES]

    def file_of(self, index: int) -> int:
        """The index of the file holding chunk `index` (in range), in O(log files)."""
        # The last file starting at or before `index`: empty files before it own no chunks.
        return bisect.bisect_right(self._starts, index) - 1

    def first_chunk(self, file_index: int) -> int:
        """The index of the first chunk of file `file_index` (its chunks follow in order)."""
        return self._starts[file_index]

    def chunk(self, index: int) -> ChunkRef:
        """The file, span and hash of chunk `index`; IndexError when out of range."""
        if not 0 <= index < self._chunk_total:
            raise IndexError(index)
        file_index = bisect.bisect_right(self._starts, index) - 1
        return self._ref(file_index, index - self._starts[file_index])

    def chunks(self) -> Iterator[ChunkRef]:
        """Every chunk of the content, in order (one pass over the files)."""
        starts, end = self._starts, len(self._sizes)
        for file_index in range(end):
            first = starts[file_index]
            count = (starts[file_index + 1] if file_index + 1 < end else self._chunk_total) - first
            for local in range(count):
                yield self._ref(file_index, local)

    def paths(self) -> Iterator[str]:
        """Every file's path, in order (each folder's path made once)."""
        encoded, dir_at, dir_end, dir_parent = (
            self._encoded,
            self._dir_at,
            self._dir_end,
            self._dir_parent,
        )
        # A folder comes after its parent in the arrays: one pass makes every folder's path.
        folders = [""] * (len(dir_at) + 1)  # folders[i + 1]: folder i's path and a slash
        for folder in range(len(dir_at)):
            name = encoded[dir_at[folder] : dir_end[folder]].decode("utf-8")
            folders[folder + 1] = folders[dir_parent[folder] + 1] + name + "/"
        for key_at, key_end, parent in zip(self._key_at, self._key_end, self._parent, strict=True):
            yield folders[parent + 1] + encoded[key_at:key_end].decode("utf-8")

    def chunk_roots(self) -> Iterator[bytes]:
        """The expected root of every chunk, in order (what `chunk(i).root` is)."""
        encoded, size_of, step = self._encoded, self._sizes, self._piece_length
        for index, (root_at, layer_at) in enumerate(
            zip(self._root_at, self._layer_at, strict=True)
        ):
            if layer_at < 0:
                if root_at >= 0:
                    yield encoded[root_at : root_at + merkle.HASH_BYTES]
                continue
            end = layer_at + chunk_count(size_of[index], step) * merkle.HASH_BYTES
            for at in range(layer_at, end, merkle.HASH_BYTES):
                yield encoded[at : at + merkle.HASH_BYTES]

    def chunk_lengths(self) -> list[int]:
        """The byte length of every chunk, in order."""
        lengths: list[int] = []
        step = self._piece_length
        for size in self._sizes:
            count = -(-size // step)
            if count:
                lengths.extend([step] * (count - 1))
                lengths.append(size - (count - 1) * step)
        return lengths

    def _ref(self, file_index: int, local: int) -> ChunkRef:
        step, size = self._piece_length, self._sizes[file_index]
        offset = local * step
        layer = self._layer_at[file_index]
        if layer >= 0:
            at, leaves = layer + local * merkle.HASH_BYTES, merkle.piece_leaves(step)
        else:
            at = self._root_at[file_index]
            leaves = merkle.next_power_of_two(merkle.block_count(size))
        return ChunkRef(
            self._starts[file_index] + local,
            file_index,
            offset,
            min(step, size - offset),
            self._encoded[at : at + merkle.HASH_BYTES],
            leaves,
        )

    def _entry(self, file_index: int) -> FileEntry:
        size, step = self._sizes[file_index], self._piece_length
        layer, encoded = self._layer_at[file_index], self._encoded
        if layer >= 0:
            count = chunk_count(size, step)
            digests = tuple(
                encoded[a : a + merkle.HASH_BYTES].hex()
                for a in range(layer, layer + count * merkle.HASH_BYTES, merkle.HASH_BYTES)
            )
        else:
            root = self.pieces_root_of(file_index)
            digests = () if root is None else (root.hex(),)
        return FileEntry(self.path_of(file_index), size, step, digests)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return self._encoded == other._encoded

    def __hash__(self) -> int:
        return hash(self._content_id)

    def __repr__(self) -> str:
        return (
            f"Manifest(name={self.name!r}, kind={self.kind!r}, files={self.file_count},"
            f" chunks={self._chunk_total}, id={self._content_id[:12]})"
        )


class _Files(Sequence[FileEntry]):
    """A manifest's files as a sequence of FileEntry, each made when read."""

    __slots__ = ("_manifest",)

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest

    def __len__(self) -> int:
        return self._manifest.file_count

    @overload
    def __getitem__(self, index: int) -> FileEntry: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[FileEntry]: ...

    def __getitem__(self, index: int | slice) -> FileEntry | Sequence[FileEntry]:
        count = self._manifest.file_count
        if isinstance(index, slice):
            return [self._manifest._entry(i) for i in range(*index.indices(count))]
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(index)
        return self._manifest._entry(index)

    def __iter__(self) -> Iterator[FileEntry]:
        for index in range(self._manifest.file_count):
            yield self._manifest._entry(index)


def path_key(path: str) -> list[str]:
    """The sort key of a path in canonical (file tree) order: by folder, then name."""
    return path.split("/")


def file_entry(
    path: str, size: int, chunks: Sequence[str], piece_length: int | None = None
) -> FileEntry:
    """A FileEntry; the piece length follows the rule for `size` unless given."""
    return FileEntry(path, size, piece_length or chunk_size_for(size), tuple(chunks))


def span_of(entry: FileEntry, local_index: int) -> Span:
    """The span of chunk `local_index` inside `entry`'s file."""
    offset = local_index * entry.chunk_size
    return Span(local_index, offset, min(entry.chunk_size, entry.size - offset))


def decode_manifest(data: bytes) -> Manifest:
    """Parse and validate untrusted canonical manifest bytes; ManifestError on anything else."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest of {len(data)} bytes is over the limit")
    manifest = Manifest.__new__(Manifest)
    _adopt(manifest, bytes(data))
    return manifest


def manifest_id(data: bytes) -> str:
    """The content ID that manifest bytes claim (the SHA-256 of their info dict), found
    without decoding the rest; ManifestError if they do not start like a manifest."""
    if not data.startswith(_HEAD):
        raise ManifestError("manifest bytes are not in canonical form (at byte 0)")
    try:
        end = skip(data, _INFO_AT, MAX_PATH_DEPTH + 5)
    except BencodeError as exc:
        raise ManifestError(f"manifest info is not valid bencode: {exc}") from None
    return hashlib.sha256(data[_INFO_AT:end]).hexdigest()


def manifest_of_bytes(name: str, data: bytes | bytearray | memoryview) -> Manifest:
    """The manifest of a one-file content holding `data` (hashed here, in memory)."""
    size = len(data)
    step = chunk_size_for(size)
    view = memoryview(data)
    if size > step:
        leaves = merkle.piece_leaves(step)
        chunks = [
            merkle.data_root(view[at : at + step], leaves).hex() for at in range(0, size, step)
        ]
    elif size:
        chunks = [merkle.small_file_root(view).hex()]
    else:
        chunks = []
    return Manifest(name, "file", [FileEntry(name, size, step, tuple(chunks))], step)


def parse_json(data: bytes, error: type[RemoteProtocolError]) -> Any:
    """Strict JSON from untrusted bytes: UTF-8, no duplicate keys, no NaN; `error` otherwise."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise error("duplicate key")
        return result

    def no_constants(token: str) -> Any:
        raise error(f"{token} is not allowed")

    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except error:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"not valid JSON: {exc}") from None


def validate_name(name: str) -> str | None:
    """Why `name` cannot be one path component of a content, or None when it can."""
    # Most names are short ASCII ones without a character to refuse: one scan says so.
    if name.isascii() and 0 < len(name) <= MAX_NAME_BYTES and not _REFUSED.search(name):
        return None
    if not name:
        return "empty name"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name:
        return "a name must not contain / or \\"
    if _CONTROL.search(name):
        return "a name must not contain control characters"
    if _DRIVE.match(name):
        return "a name must not start like a drive (X:)"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "a name must be valid Unicode"
    if len(encoded) > MAX_NAME_BYTES:
        return f"a name must be at most {MAX_NAME_BYTES} bytes"
    return None


def validate_path(path: str) -> str | None:
    """Why `path` cannot be a relative file path inside a content, or None when it can."""
    if not path:
        return "empty path"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return "path too long"
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        return "path too deep"
    for part in parts:
        problem = validate_name(part)
        if problem:
            return f"{path!r}: {problem}"
    return None


def name_collision(paths: Iterable[str]) -> tuple[str, str] | None:
    """Two of `paths` (or of their folders) that differ only by case or by Unicode
    normalization (NFC/NFD), so would be one file or folder on macOS or Windows; else None."""
    seen: dict[str, str] = {}
    folder = None  # the folder of the previous path: its own prefixes were checked then
    for path in paths:
        parent = path.rpartition("/")[0]
        if parent != folder:
            folder = parent
            parts = parent.split("/") if parent else []
            for depth in range(1, len(parts) + 1):
                prefix = "/".join(parts[:depth])
                other = seen.setdefault(_fold(prefix), prefix)
                if other != prefix:
                    return other, prefix
        other = seen.setdefault(_fold(path), path)
        if other != path:
            return other, path
    return None


def collision_reason(pair: tuple[str, str]) -> str:
    """Why two colliding names cannot be in one content, in a few words."""
    return (
        f"{pair[0]!r} and {pair[1]!r} differ only by case or Unicode normalization"
        " (they would be one file on macOS or Windows)"
    )


def validate_leaf(path: str, leaf: str) -> str | None:
    """`validate_path(path)` for a path whose folder passed it already, and whose depth is
    allowed: only its length and its last component `leaf` are checked."""
    if (len(path) if path.isascii() else len(path.encode("utf-8", "surrogatepass"))) > (
        MAX_PATH_BYTES
    ):
        return "path too long"
    problem = validate_name(leaf)
    return f"{path!r}: {problem}" if problem else None


# The fixed frame of the canonical encoding (keys sorted): the info dict's keys around the file
# tree, and one file's node.
_HEAD = b"d4:info"
_INFO_AT = len(_HEAD)
_TREE_KEY = b"d9:file tree"
_VERSION_KEY = b"12:meta versioni2e4:name"
_LENGTH_KEY = b"12:piece length"
_LAYERS_KEY = b"12:piece layers"
_FILE_NODE = b"d0:d6:length"
_ROOT_KEY = b"11:pieces root32:"
# What the parser's fast path reads: a string's length (as read_string takes it), a file node
# of a non-empty file (its size as read_int takes it), a name needing no further check.
_KEY_LENGTH = re.compile(rb"(0|[1-9][0-9]{0,11}):")
_FILE_NODE_WHOLE = re.compile(
    rb"d0:d6:lengthi([1-9][0-9]{0,19})e11:pieces root32:.{32}ee", re.DOTALL
)
_REFUSED_BYTES = re.compile(rb"[\x00-\x1f\x7f/\\]|\A\.\.?\Z|\A[A-Za-z]:|\A\Z")


def _adopt(manifest: Manifest, data: bytes) -> None:
    """Fill `manifest` from canonical bytes, validating everything in one pass over them."""
    try:
        _Parser(manifest, data).parse()
    except BencodeError as exc:
        raise ManifestError(f"manifest bytes are not canonical bencode: {exc}") from None
    except (UnicodeError, ValueError, IndexError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"manifest is not valid: {exc}") from None


class _Parser:
    """One pass over a manifest's bytes, in place: arrays of positions, nothing per file."""

    def __init__(self, manifest: Manifest, data: bytes) -> None:
        self.m, self.data = manifest, data
        self.key_at, self.key_end, self.parent = array("q"), array("q"), array("q")
        self.dir_at, self.dir_end, self.dir_parent = array("q"), array("q"), array("q")
        self.sizes, self.root_at = array("q"), array("q")

    def expect(self, pos: int, token: bytes) -> int:
        if not self.data.startswith(token, pos):
            raise ManifestError(f"manifest bytes are not in canonical form (at byte {pos})")
        return pos + len(token)

    def parse(self) -> None:
        data, m = self.data, self.m
        pos = self.expect(0, _HEAD)
        pos = self.expect(pos, _TREE_KEY)
        pos = self.tree(pos, -1, 0, 0)
        if not self.sizes:
            raise ManifestError("a content holds at least one file")
        pos = self.expect(pos, _VERSION_KEY)
        start, pos = read_string(data, pos)
        name = data[start:pos].decode("utf-8")
        problem = validate_name(name)
        if problem:
            raise ManifestError(f"bad content name: {problem}")
        pos = self.expect(pos, _LENGTH_KEY)
        step, pos = read_int(data, pos)
        if step < MIN_PIECE_BYTES or step > MAX_CHUNK_BYTES or step & (step - 1):
            raise ManifestError(f"piece length {step} is not a power of two in range")
        info_end = self.expect(pos, b"e")
        layers = self.layers(self.expect(info_end, _LAYERS_KEY))
        # Each file's chunks; a file longer than one piece has its layer, which must hash to
        # its pieces root (the ID covers the roots only), and every layer given is used.
        starts, layer_at = array("q"), array("q")
        total = total_size = 0
        used: set[bytes] = set()
        sizes = self.sizes
        if max(sizes) <= step:  # no file of more than one piece (a folder of small files)
            starts = array("q", accumulate(map(bool, sizes), initial=0))
            total, total_size = starts.pop(), sum(sizes)
            if total > MAX_CHUNKS_PER_CONTENT:
                raise ManifestError("too many chunks")
            layer_at = array("q", [-1]) * len(sizes)
            sizes = array("q")  # nothing more to do per file
        for index, size in enumerate(sizes):
            count = chunk_count(size, step)
            starts.append(total)
            total += count
            total_size += size
            if total > MAX_CHUNKS_PER_CONTENT:
                raise ManifestError("too many chunks")
            if count <= 1:
                layer_at.append(-1)
                continue
            at = self.root_at[index]
            root = data[at : at + merkle.HASH_BYTES]
            found = layers.get(root)
            if found is None or found[1] - found[0] != count * merkle.HASH_BYTES:
                raise ManifestError(f"no piece layer of {count} pieces for a file's pieces root")
            if root not in used:
                if merkle.pieces_root(data[found[0] : found[1]], step) != root:
                    raise ManifestError("a piece layer does not hash to its pieces root")
                used.add(root)
            layer_at.append(found[0])
        if len(used) != len(layers):
            raise ManifestError("a piece layer belongs to no file")
        top_files = sum(1 for p in self.parent if p < 0)
        single = (
            len(self.sizes) == 1
            and top_files == 1
            and data[self.key_at[0] : self.key_end[0]] == name.encode("utf-8")
        )
        m.name, m.kind = name, ("file" if single else "dir")
        m._encoded, m._info_end = data, info_end
        m._key_at, m._key_end, m._parent = self.key_at, self.key_end, self.parent
        m._dir_at, m._dir_end, m._dir_parent = self.dir_at, self.dir_end, self.dir_parent
        m._sizes, m._root_at, m._layer_at, m._starts = self.sizes, self.root_at, layer_at, starts
        m._piece_length, m._chunk_total, m._total_size = step, total, total_size
        m._content_id = hashlib.sha256(data[_INFO_AT:info_end]).hexdigest()

    def tree(self, pos: int, folder: int, depth: int, path_bytes: int) -> int:
        """Walk one folder's dictionary at `pos`; where it ends."""
        data = self.data
        pos = self.expect(pos, b"d")
        if data.startswith(b"e", pos):
            raise ManifestError("an empty folder" if depth else "a content holds at least one file")
        if depth >= MAX_PATH_DEPTH:
            raise ManifestError("bad path: path too deep")
        previous = b""
        keys = array("q")  # this folder's names, kept for the case-folding check
        unfixed: dict[str, str] = {}
        sizes, limit = self.sizes, len(data)
        root_at_append, parent_append = self.root_at.append, self.parent.append
        key_at_append, key_end_append = self.key_at.append, self.key_end.append
        while not data.startswith(b"e", pos):
            # The common case read in a few steps (a plain length, an ASCII name of nothing
            # but allowed characters, a file node with a plain size); anything else is read
            # and checked by the general code below, which words the error.
            match = _KEY_LENGTH.match(data, pos)
            if match is None:
                start, end = read_string(data, pos)
            else:
                start = match.end()
                end = start + int(match[1])
                if end > limit:
                    start, end = read_string(data, pos)  # raises: runs past the end
            raw = data[start:end]
            if raw <= previous:
                raise ManifestError("file tree names must be unique and sorted")
            previous = raw
            if raw.isascii() and len(raw) <= MAX_NAME_BYTES and not _REFUSED_BYTES.search(raw):
                name = "" if raw.lower() == raw else raw.decode("ascii")
            else:
                name = raw.decode("utf-8")
                problem = validate_name(name)
                if problem:
                    raise ManifestError(f"bad path: {name!r}: {problem}")
            length = path_bytes + len(raw) + (1 if depth else 0)
            if length > MAX_PATH_BYTES:
                raise ManifestError("bad path: path too long")
            keys.append(start)
            keys.append(end)
            if name:  # "" for a name that folds to itself
                folded = _fold(name)
                if folded != name and unfixed.setdefault(folded, name) != name:
                    raise ManifestError(collision_reason((unfixed[folded], name)))
            node = _FILE_NODE_WHOLE.match(data, end)
            if node is not None:
                size = int(node[1])
                if size <= MAX_FILE_BYTES and len(sizes) < MAX_FILES_PER_CONTENT:
                    pos = node.end()
                    root_at_append(pos - merkle.HASH_BYTES - 2)
                    key_at_append(start)
                    key_end_append(end)
                    parent_append(folder)
                    sizes.append(size)
                    continue
            if data.startswith(_FILE_NODE, end):
                pos = self.file(end + len(_FILE_NODE), start, end, folder)
            else:
                self.dir_at.append(start)
                self.dir_end.append(end)
                self.dir_parent.append(folder)
                pos = self.tree(end, len(self.dir_at) - 1, depth + 1, length)
        if unfixed:  # a name that folds to itself and to what another one folds to
            for at in range(0, len(keys), 2):
                name = data[keys[at] : keys[at + 1]].decode("utf-8")
                other = unfixed.get(name)
                if other is not None and other != name:
                    raise ManifestError(collision_reason((name, other)))
        return pos + 1

    def file(self, pos: int, key_at: int, key_end: int, folder: int) -> int:
        """Read one file's node after its length key; where the node ends."""
        data = self.data
        if len(self.sizes) >= MAX_FILES_PER_CONTENT:
            raise ManifestError("too many files")
        size, pos = read_int(data, pos)
        if not 0 <= size <= MAX_FILE_BYTES:
            raise ManifestError("file size out of range")
        if size:
            pos = self.expect(pos, _ROOT_KEY)
            if pos + merkle.HASH_BYTES > len(data):
                raise ManifestError("a pieces root runs past the end")
            self.root_at.append(pos)
            pos += merkle.HASH_BYTES
        else:
            self.root_at.append(-1)
        pos = self.expect(pos, b"ee")  # the file's dictionary, then its node
        self.key_at.append(key_at)
        self.key_end.append(key_end)
        self.parent.append(folder)
        self.sizes.append(size)
        return pos

    def layers(self, pos: int) -> dict[bytes, tuple[int, int]]:
        """The piece layers dictionary at `pos`, to its end (and the manifest's)."""
        data = self.data
        pos = self.expect(pos, b"d")
        found: dict[bytes, tuple[int, int]] = {}
        previous = b""
        while not data.startswith(b"e", pos):
            start, end = read_string(data, pos)
            root = data[start:end]
            if len(root) != merkle.HASH_BYTES or root <= previous:
                raise ManifestError("piece layer keys must be sorted 32-byte roots")
            previous = root
            start, pos = read_string(data, end)
            if start == pos or (pos - start) % merkle.HASH_BYTES:
                raise ManifestError("a piece layer is not a list of 32-byte hashes")
            found[root] = (start, pos)
        if pos + 2 != len(data) or data[pos + 1 :] != b"e":
            raise ManifestError(f"manifest bytes are not in canonical form (at byte {pos + 1})")
        return found


def _fold(path: str) -> str:
    """What a path becomes on a file system blind to case and Unicode normalization."""
    return path.lower() if path.isascii() else unicodedata.normalize("NFC", path).lower()


def _find_path(manifest: Manifest, path: str) -> int | None:
    """The index of the file at `path`, or None."""
    key = path_key(path)
    low, high = 0, manifest.file_count
    while low < high:
        middle = (low + high) // 2
        if path_key(manifest.path_of(middle)) < key:
            low = middle + 1
        else:
            high = middle
    return low if low < manifest.file_count and manifest.path_of(low) == path else None


def _bstr(raw: bytes) -> bytes:
    return b"%d:%s" % (len(raw), raw)


def _encode(name: str, kind: str, files: Iterable[FileEntry], piece_length: int) -> bytes:
    """The canonical bytes of a manifest of these parts (validated when read back), written
    into one growing buffer as the file tree is walked: nothing kept per small file."""
    if kind not in ("file", "dir"):
        raise ManifestError("kind must be 'file' or 'dir'")
    try:
        out = bytearray(_HEAD + _TREE_KEY + b"d")
        layers: dict[bytes, bytes] = {}
        opened: list[str] = []  # the folders the buffer is inside of
        inside: str | None = None  # their path (None: the top)
        for entry in files:
            if entry.chunk_size != piece_length:
                raise ManifestError("the files of one content have one piece length")
            path = entry.path
            cut = path.rfind("/") if kind == "dir" else -1
            parent, leaf = (path[:cut], path[cut + 1 :]) if cut >= 0 else (None, path)
            if parent != inside:  # most files are in the folder of the one before
                folders = [] if parent is None else parent.split("/")
                same = 0
                while same < min(len(opened), len(folders)) and opened[same] == folders[same]:
                    same += 1
                out += b"e" * (len(opened) - same)
                del opened[same:]
                for folder in folders[same:]:
                    out += _bstr(folder.encode("utf-8")) + b"d"
                    opened.append(folder)
                inside = parent
            out += _bstr(leaf.encode("utf-8")) + _FILE_NODE + b"i%de" % entry.size
            chunks = entry.chunks
            if len(chunks) == 1:
                out += _ROOT_KEY + bytes.fromhex(chunks[0])
            elif chunks:
                root = entry.pieces_root
                assert root is not None
                out += _ROOT_KEY + root
                layers[root] = bytes.fromhex("".join(chunks))
            out += b"ee"
        out += b"e" * len(opened) + b"e"
        out += _VERSION_KEY + _bstr(name.encode("utf-8"))
        out += _LENGTH_KEY + b"i%de" % piece_length + b"e"
        out += _LAYERS_KEY + b"d"
        for root in sorted(layers):
            out += _bstr(root) + _bstr(layers[root])
        out += b"ee"
    except (UnicodeError, ValueError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"manifest parts are not valid: {exc}") from None
    return bytes(out)
