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
from dataclasses import dataclass, field
from typing import Any, Literal

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


@dataclass(frozen=True)
class Manifest:
    """A validated content description. Build with `Manifest.build` or `decode_manifest`."""

    name: str
    kind: ContentKind
    files: tuple[FileEntry, ...]
    _starts: array[int] = field(init=False, repr=False, compare=False)
    _chunk_total: int = field(init=False, repr=False, compare=False)
    _total_size: int = field(init=False, repr=False, compare=False)
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self.name, self.kind, self.files)
        # Computed once: every lookup below is O(log files), never a sum over the files.
        starts = array("q")
        total = size = 0
        for entry in self.files:
            starts.append(total)
            total += len(entry.chunks)
            size += entry.size
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_chunk_total", total)
        object.__setattr__(self, "_total_size", size)
        object.__setattr__(self, "_encoded", _encode(self))

    @classmethod
    def build(cls, name: str, kind: ContentKind, files: Sequence[FileEntry]) -> Manifest:
        """A manifest from its parts, files put in canonical (path) order; validates everything."""
        return cls(name, kind, tuple(sorted(files, key=lambda f: f.path)))

    @property
    def encoded(self) -> bytes:
        """The canonical bytes."""
        return self._encoded

    @property
    def content_id(self) -> str:
        """SHA-256 of the canonical bytes, 64 hex digits."""
        return hashlib.sha256(self._encoded).hexdigest()

    @property
    def total_size(self) -> int:
        """Bytes of all files together."""
        return self._total_size

    @property
    def chunk_total(self) -> int:
        """Chunks of all files together."""
        return self._chunk_total

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
        entry = self.files[file_index]
        local = index - self._starts[file_index]
        offset = local * entry.chunk_size
        length = min(entry.chunk_size, entry.size - offset)
        return ChunkRef(index, file_index, offset, length, entry.chunks[local])

    def chunks(self) -> Iterator[ChunkRef]:
        """Every chunk of the content, in order (one pass over the files)."""
        index = 0
        for file_index, entry in enumerate(self.files):
            size, step = entry.size, entry.chunk_size
            for local, digest in enumerate(entry.chunks):
                offset = local * step
                yield ChunkRef(index, file_index, offset, min(step, size - offset), digest)
                index += 1

    def chunk_lengths(self) -> list[int]:
        """The byte length of every chunk, in order."""
        lengths: list[int] = []
        for entry in self.files:
            count, step = len(entry.chunks), entry.chunk_size
            if count:
                lengths.extend([step] * (count - 1))
                lengths.append(entry.size - (count - 1) * step)
        return lengths


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
    obj = parse_json(data, ManifestError)
    if not isinstance(obj, dict) or set(obj) != {"swarmshare_manifest", "name", "kind", "files"}:
        raise ManifestError("manifest must be an object with exactly its four keys")
    if obj["swarmshare_manifest"] != FORMAT_VERSION or type(obj["swarmshare_manifest"]) is not int:
        raise ManifestError("unknown manifest version")
    name, kind, raw_files = obj["name"], obj["kind"], obj["files"]
    if not isinstance(name, str) or kind not in ("file", "dir") or not isinstance(raw_files, list):
        raise ManifestError("manifest name, kind or files have the wrong type")
    if len(raw_files) > MAX_FILES_PER_CONTENT:
        raise ManifestError("too many files")
    files = [_decode_file(raw) for raw in raw_files]
    manifest = Manifest(name, kind, tuple(files))
    if manifest.encoded != data:
        raise ManifestError("manifest bytes are not in canonical form")
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
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
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


def _decode_file(raw: object) -> FileEntry:
    if not isinstance(raw, dict) or set(raw) != {"path", "size", "chunk_size", "chunks"}:
        raise ManifestError(
            "each file must be an object with exactly path, size, chunk_size, chunks"
        )
    path, size, chunk_size, chunks = raw["path"], raw["size"], raw["chunk_size"], raw["chunks"]
    if not isinstance(path, str) or type(size) is not int or type(chunk_size) is not int:
        raise ManifestError("file path, size or chunk_size has the wrong type")
    if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
        raise ManifestError("file chunks must be a list of strings")
    return FileEntry(path, size, chunk_size, tuple(chunks))


def _validate(name: str, kind: str, files: tuple[FileEntry, ...]) -> None:
    problem = validate_name(name)
    if problem:
        raise ManifestError(f"bad content name: {problem}")
    if kind not in ("file", "dir"):
        raise ManifestError("kind must be 'file' or 'dir'")
    if not files:
        raise ManifestError("a content holds at least one file")
    if len(files) > MAX_FILES_PER_CONTENT:
        raise ManifestError("too many files")
    if kind == "file" and (len(files) != 1 or files[0].path != name):
        raise ManifestError("a file content holds exactly one file, named like the content")
    total_chunks = 0
    previous = ""
    for entry in files:
        problem = validate_path(entry.path)
        if problem:
            raise ManifestError(f"bad path: {problem}")
        if previous and entry.path <= previous:
            raise ManifestError("file paths must be unique and sorted")
        previous = entry.path
        if not 0 <= entry.size <= MAX_FILE_BYTES:
            raise ManifestError("file size out of range")
        if entry.chunk_size != chunk_size_for(entry.size):
            raise ManifestError("chunk size does not follow the rule for the file size")
        if len(entry.chunks) != chunk_count(entry.size, entry.chunk_size):
            raise ManifestError("chunk count does not match the file size")
        total_chunks += len(entry.chunks)
        if total_chunks > MAX_CHUNKS_PER_CONTENT:
            raise ManifestError("too many chunks")
        for digest in entry.chunks:
            if not _HEX64.fullmatch(digest):
                raise ManifestError("a chunk hash must be 64 lowercase hex digits")
    # A folder's paths must not clash once sorted differently ("a/b" vs "a" with "a.txt" between).
    paths = {entry.path for entry in files}
    for entry in files:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in paths:
                raise ManifestError(f"{'/'.join(parts[:depth])!r} is both a file and a folder")
    collision = name_collision(entry.path for entry in files)
    if collision is not None:
        raise ManifestError(collision_reason(collision))


def _encode(manifest: Manifest) -> bytes:
    obj = {
        "swarmshare_manifest": FORMAT_VERSION,
        "name": manifest.name,
        "kind": manifest.kind,
        "files": [
            {"path": f.path, "size": f.size, "chunk_size": f.chunk_size, "chunks": list(f.chunks)}
            for f in manifest.files
        ],
    }
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
