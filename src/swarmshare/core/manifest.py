"""Manifests: what a content is, in one canonical byte encoding whose SHA-256 is the content ID.

A manifest names a content (one file, or one folder tree) and lists, per file, its relative path,
its size, its chunk size and the SHA-256 of each of its chunks. Chunks never span two files.

The canonical encoding is UTF-8 JSON with sorted keys, no white space, files sorted by path.
`decode_manifest` accepts only those exact bytes: anything else -- malformed JSON, a field out of
range, an unsafe path, or a valid manifest written in another layout -- raises
`ManifestError`, so one content has one ID and untrusted bytes never become a bad manifest.
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
from typing import Any, Literal, overload

from swarmshare.core.chunking import Span, chunk_count, chunk_size_for
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import (
    MAX_CHUNKS_PER_CONTENT,
    MAX_FILE_BYTES,
    MAX_FILES_PER_CONTENT,
    MAX_MANIFEST_BYTES,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    MAX_PATH_DEPTH,
)

FORMAT_VERSION = 1
ContentKind = Literal["file", "dir"]
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ManifestError(RemoteProtocolError):
    """Bytes or values that are not a valid manifest."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a content: its path inside the content, size, chunk size and chunk hashes."""

    path: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where chunk `index` (counted over the whole content) lives, and what it must hash to."""

    index: int
    file_index: int
    offset: int
    length: int
    sha256: str


class Manifest:
    """A validated content description. Build with `Manifest.build` or `decode_manifest`.

    Held compactly, whatever its number of files: the canonical bytes themselves, and per file
    a few machine integers (where its path and hashes are in those bytes, its size, chunk size
    and first chunk) in arrays. A file's `FileEntry` and a chunk's `ChunkRef` are made when
    asked for, never kept: a million files cost tens of bytes each, not Python objects.
    """

    __slots__ = (
        "_chunk_total",
        "_content_id",
        "_encoded",
        "_hash_at",
        "_path_at",
        "_path_end",
        "_sizes",
        "_starts",
        "_steps",
        "_total_size",
        "kind",
        "name",
    )

    name: str
    kind: ContentKind
    _encoded: bytes
    _path_at: array[int]  # where each file's path starts in the encoded bytes
    _path_end: array[int]
    _hash_at: array[int]  # where each file's first hash starts (then one every _HASH_STRIDE)
    _sizes: array[int]
    _steps: array[int]  # chunk sizes
    _starts: array[int]  # each file's first chunk, counted over the content
    _chunk_total: int
    _total_size: int
    _content_id: str

    def __init__(self, name: str, kind: ContentKind, files: Iterable[FileEntry]) -> None:
        """A manifest of `files`, already in canonical (path) order; validates everything."""
        _adopt(self, _encode(name, kind, files))
        if self.name != name or self.kind != kind:
            raise ManifestError("manifest name or kind does not encode as given")

    @classmethod
    def build(cls, name: str, kind: ContentKind, files: Sequence[FileEntry]) -> Manifest:
        """A manifest from its parts, files put in canonical (path) order; validates everything."""
        return cls(name, kind, sorted(files, key=lambda f: f.path))

    @property
    def files(self) -> Sequence[FileEntry]:
        """Every file, in path order (entries made on access)."""
        return _Files(self)

    @property
    def encoded(self) -> bytes:
        """The canonical bytes."""
        return self._encoded

    @property
    def content_id(self) -> str:
        """SHA-256 of the canonical bytes, 64 hex digits."""
        return self._content_id

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
        return _text(self._encoded[self._path_at[file_index] : self._path_end[file_index]])

    def find(self, path: str) -> int | None:
        """The index of the file at `path`, or None, in O(log files)."""
        return _find_path(self, path)

    def size_of(self, file_index: int) -> int:
        """The size in bytes of file `file_index`."""
        return self._sizes[file_index]

    def chunk_size_of(self, file_index: int) -> int:
        """The chunk size of file `file_index`."""
        return self._steps[file_index]

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
        local = index - self._starts[file_index]
        step = self._steps[file_index]
        offset = local * step
        at = self._hash_at[file_index] + local * _HASH_STRIDE
        digest = self._encoded[at : at + 64].decode("ascii")
        return ChunkRef(
            index, file_index, offset, min(step, self._sizes[file_index] - offset), digest
        )

    def chunks(self) -> Iterator[ChunkRef]:
        """Every chunk of the content, in order (one pass over the files)."""
        encoded, starts, sizes, steps, hash_at = (
            self._encoded,
            self._starts,
            self._sizes,
            self._steps,
            self._hash_at,
        )
        end = len(sizes)
        for file_index in range(end):
            first = starts[file_index]
            count = (starts[file_index + 1] if file_index + 1 < end else self._chunk_total) - first
            size, step, at = sizes[file_index], steps[file_index], hash_at[file_index]
            for local in range(count):
                offset = local * step
                digest = encoded[at : at + 64].decode("ascii")
                yield ChunkRef(first + local, file_index, offset, min(step, size - offset), digest)
                at += _HASH_STRIDE

    def chunk_lengths(self) -> list[int]:
        """The byte length of every chunk, in order."""
        lengths: list[int] = []
        end = len(self._sizes)
        for file_index in range(end):
            first = self._starts[file_index]
            count = (
                self._starts[file_index + 1] if file_index + 1 < end else self._chunk_total
            ) - first
            if count:
                step = self._steps[file_index]
                lengths.extend([step] * (count - 1))
                lengths.append(self._sizes[file_index] - (count - 1) * step)
        return lengths

    def _entry(self, file_index: int) -> FileEntry:
        first = self._starts[file_index]
        end = self._starts[file_index + 1] if file_index + 1 < len(self._starts) else None
        count = (self._chunk_total if end is None else end) - first
        at = self._hash_at[file_index]
        encoded = self._encoded
        digests = tuple(
            encoded[a : a + 64].decode("ascii")
            for a in range(at, at + count * _HASH_STRIDE, _HASH_STRIDE)
        )
        return FileEntry(
            self.path_of(file_index), self._sizes[file_index], self._steps[file_index], digests
        )

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


def file_entry(path: str, size: int, chunks: Sequence[str]) -> FileEntry:
    """A FileEntry whose chunk size follows the rule for its size."""
    return FileEntry(path, size, chunk_size_for(size), tuple(chunks))


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
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            key = unicodedata.normalize("NFC", prefix).lower()
            other = seen.setdefault(key, prefix)
            if other != prefix:
                return other, prefix
    return None


def collision_reason(pair: tuple[str, str]) -> str:
    """Why two colliding names cannot be in one content, in a few words."""
    return (
        f"{pair[0]!r} and {pair[1]!r} differ only by case or Unicode normalization"
        " (they would be one file on macOS or Windows)"
    )


# One file of the canonical encoding (keys sorted, no white space): its chunk size, its hashes
# (64 lowercase hex digits each, quoted, comma separated: a stride of 67 bytes), its path as a
# JSON string with no character escaped that need not be, its size. Integers without sign,
# leading zero or exponent.
_INT = rb"(0|[1-9][0-9]{0,18})"
_STRING = rb'"((?:[^"\\\x00-\x1f]|\\.)*)"'
_FILE = re.compile(
    rb'\{"chunk_size":' + _INT + rb',"chunks":\[((?:"[0-9a-f]{64}"(?:,"[0-9a-f]{64}")*)?)\],'
    rb'"path":' + _STRING + rb',"size":' + _INT + rb"\}"
)
_HEAD = b'{"files":['
_TAIL = re.compile(rb'\],"kind":"(file|dir)","name":' + _STRING + rb',"swarmshare_manifest":1\}\Z')
_HASH_STRIDE = 67


def _adopt(manifest: Manifest, data: bytes) -> None:
    """Fill `manifest` from canonical bytes, validating everything in one pass over them."""
    path_at, path_end, hash_at = array("q"), array("q"), array("q")
    sizes, steps, starts = array("q"), array("q"), array("q")
    if not data.startswith(_HEAD):
        raise ManifestError("manifest bytes are not in canonical form (at byte 0)")
    pos = len(_HEAD)
    total = total_size = 0
    previous = ""
    folder_ok = ""  # the folder of the previous path, already validated
    folders: dict[str, str] = {}  # each folder path, by its folded form
    seen: set[str] = set()  # the same folders as they are
    unfixed: dict[str, str] = {}  # paths that fold to something else, by their folded form
    match = _FILE.match
    try:
        while True:
            m = match(data, pos)
            if m is None:
                raise ManifestError(f"manifest bytes are not in canonical form (at byte {pos})")
            if len(sizes) >= MAX_FILES_PER_CONTENT:
                raise ManifestError("too many files")
            raw_path = m[3]
            path = _text(raw_path)
            folder, _, leaf = path.rpartition("/")
            if folder != folder_ok or not folder:
                problem = validate_path(path)
                if problem:
                    raise ManifestError(f"bad path: {problem}")
                if folder not in seen:
                    _add_folders(folder, folders)
                    seen.add(folder)
                folder_ok = folder
            else:
                problem = validate_leaf(path, leaf)
                if problem:
                    raise ManifestError(f"bad path: {problem}")
            if path <= previous:
                raise ManifestError("file paths must be unique and sorted")
            previous = path
            folded = _fold(path)
            if folded != path and unfixed.setdefault(folded, path) != path:
                raise ManifestError(collision_reason((unfixed[folded], path)))
            size, step = int(m[4]), int(m[1])
            if size > MAX_FILE_BYTES:
                raise ManifestError("file size out of range")
            if step != chunk_size_for(size):
                raise ManifestError("chunk size does not follow the rule for the file size")
            hashes_at, hashes_end = m.span(2)
            count = (hashes_end - hashes_at + 1) // _HASH_STRIDE
            if count != chunk_count(size, step):
                raise ManifestError("chunk count does not match the file size")
            path_at.append(m.start(3))
            path_end.append(m.end(3))
            hash_at.append(hashes_at + 1)
            sizes.append(size)
            steps.append(step)
            starts.append(total)
            total += count
            total_size += size
            if total > MAX_CHUNKS_PER_CONTENT:
                raise ManifestError("too many chunks")
            pos = m.end()
            if data[pos : pos + 1] != b",":
                break
            pos += 1
        tail = _TAIL.match(data, pos)
        if tail is None:
            raise ManifestError(f"manifest bytes are not in canonical form (at byte {pos})")
        kind: ContentKind = "file" if tail[1] == b"file" else "dir"
        name = _text(tail[2])
    except (UnicodeError, ValueError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"manifest text is not valid: {exc}") from None
    problem = validate_name(name)
    if problem:
        raise ManifestError(f"bad content name: {problem}")
    if kind == "file" and (len(sizes) != 1 or previous != name):
        raise ManifestError("a file content holds exactly one file, named like the content")
    manifest.name, manifest.kind = name, kind
    manifest._encoded = data
    manifest._path_at, manifest._path_end, manifest._hash_at = path_at, path_end, hash_at
    manifest._sizes, manifest._steps, manifest._starts = sizes, steps, starts
    manifest._chunk_total, manifest._total_size = total, total_size
    _check_folders(manifest, folders, unfixed)
    manifest._content_id = hashlib.sha256(data).hexdigest()


def _text(raw: bytes) -> str:
    """A JSON string's text from its canonical bytes (between the quotes); ValueError if they
    are not the canonical encoding of any text."""
    if b"\\" not in raw:
        return raw.decode("utf-8")  # canonical: nothing but " \\ and controls is escaped
    text = json.loads(b'"' + raw + b'"')
    if json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")[1:-1] != raw:
        raise ValueError("a string is not in canonical form")
    return str(text)


def _fold(path: str) -> str:
    """What a path becomes on a file system blind to case and Unicode normalization."""
    return path.lower() if path.isascii() else unicodedata.normalize("NFC", path).lower()


def validate_leaf(path: str, leaf: str) -> str | None:
    """`validate_path(path)` for a path whose folder passed it already, and whose depth is
    allowed: only its length and its last component `leaf` are checked."""
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return "path too long"
    problem = validate_name(leaf)
    return f"{path!r}: {problem}" if problem else None


def _add_folders(folder: str, folders: dict[str, str]) -> None:
    """Record `folder` and its parents by their folded forms; two that fold alike collide."""
    parts = folder.split("/") if folder else []
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        other = folders.setdefault(_fold(prefix), prefix)
        if other != prefix:
            raise ManifestError(collision_reason((other, prefix)))


def _check_folders(manifest: Manifest, folders: dict[str, str], unfixed: dict[str, str]) -> None:
    """No path is both a file and a folder; no file and folder, or two files, fold alike.

    Paths that fold to themselves cannot collide with each other (they are unique), so only
    folders and the paths that fold to something else are kept: folders are looked up among
    the files by binary search (the paths are sorted), the others in one pass."""
    for folded, folder in folders.items():
        if _find_path(manifest, folder) is not None:
            raise ManifestError(f"{folder!r} is both a file and a folder")
        same = unfixed.get(folded)
        if same is None and _find_path(manifest, folded) is not None:
            same = folded
        if same is not None and same != folder:
            raise ManifestError(collision_reason((folder, same)))
    if unfixed:  # one pass: a path that folds to itself and to what another one folds to
        for index in range(manifest.file_count):
            path = manifest.path_of(index)
            other = unfixed.get(path)
            if other is not None and _fold(path) == path:
                raise ManifestError(collision_reason((path, other)))


def _find_path(manifest: Manifest, path: str) -> int | None:
    """The index of the file at `path`, or None."""
    low, high = 0, manifest.file_count
    while low < high:
        middle = (low + high) // 2
        if manifest.path_of(middle) < path:
            low = middle + 1
        else:
            high = middle
    return low if low < manifest.file_count and manifest.path_of(low) == path else None


def _encode(name: str, kind: str, files: Iterable[FileEntry]) -> bytes:
    """The canonical bytes of a manifest of these parts (validated when read back), written
    into one growing buffer: no string kept per file."""
    if kind not in ("file", "dir"):
        raise ManifestError("kind must be 'file' or 'dir'")
    out = bytearray(b'{"files":[')
    for entry in files:
        chunks = ",".join(f'"{digest}"' for digest in entry.chunks)
        path = json.dumps(entry.path, ensure_ascii=False)
        out += (
            f'{{"chunk_size":{entry.chunk_size},"chunks":[{chunks}],"path":{path},'
            f'"size":{entry.size}}},'
        ).encode("utf-8", "surrogatepass")
    if out[-1:] != b",":
        raise ManifestError("a content holds at least one file")
    del out[-1:]
    tail = f'],"kind":"{kind}","name":{json.dumps(name, ensure_ascii=False)},'
    out += tail.encode("utf-8", "surrogatepass") + b'"swarmshare_manifest":1}'
    return bytes(out)
