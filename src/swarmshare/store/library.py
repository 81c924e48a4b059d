"""The library: what this peer shares, where the files are, and whether they are still intact.

Files are served in place. Each file's size, mtime and inode are recorded when it is hashed; a
chunk is served only after its file's stat still matches, so a file changed or removed on disk is
never served under its old ID (`refresh` re-hashes or drops it).
"""

from __future__ import annotations

import operator
import os
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from swarmshare.core.location import ChunkLocation
from swarmshare.core.manifest import (
    ContentKind,
    Manifest,
    ManifestError,
    decode_manifest,
    path_key,
)
from swarmshare.core.refs import resolve_ref
from swarmshare.core.torrent import magnet_json
from swarmshare.errors import NotFoundError, StoreError, SwarmshareError, UsageError
from swarmshare.limits import FIND_CHUNKS_BATCH
from swarmshare.store.db import Database
from swarmshare.store.hashing import FileStat, Progress, ScannedFile, hash_content, scan_path

MANIFESTS_KEPT = 64  # decoded manifests a library keeps (they are what the peer server serves)


@dataclass(frozen=True, slots=True)
class ContentRecord:
    """One shared content as the library lists it."""

    id: str
    name: str
    kind: str
    size: int
    chunks: int
    root: str
    added: float

    @property
    def short_id(self) -> str:
        """The first 12 hex digits of the ID, as shown to people."""
        return self.id[:12]

    def as_json(self) -> dict[str, object]:
        """A plain dict for --json output and the control API."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "chunks": self.chunks,
            "path": self.root,
            "added": self.added,
        } | magnet_json(self.id, self.name)


@dataclass(frozen=True, slots=True)
class ShareResult:
    """What `share` did for one path."""

    record: ContentRecord
    unchanged: bool
    skipped: list[str]


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What `refresh` did: contents re-hashed (their new records), dropped (gone from disk),
    and unsettled (still changing: kept in the library, not served, hashed again next time)."""

    rehashed: tuple[ContentRecord, ...] = ()
    dropped: tuple[ContentRecord, ...] = ()
    unsettled: tuple[ContentRecord, ...] = ()


class Library:
    """The shared contents in a home's database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Decoded manifests by content ID (a content never changes): decoding and validating a
        # folder of many files again on every reload would cost as much as the first time.
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()

    def share(
        self,
        path: str,
        progress: Progress | None = None,
        scanned: tuple[str, ContentKind, list[ScannedFile], list[str]] | None = None,
    ) -> ShareResult:
        """Hash and add one file or folder; instant when it is already shared and unchanged.
        `scanned`: what scan_path(path) found just now, so the tree is walked once."""
        name, kind, files, skipped = scanned if scanned is not None else scan_path(path)
        root = files[0].abs_path if kind == "file" else os.path.realpath(os.path.abspath(path))
        existing = self._unchanged(root, files)
        if existing is not None:
            if progress:
                progress(sum(f.stat.size for f in files))
            return ShareResult(existing, True, skipped)
        manifest = hash_content(name, kind, files, progress)
        record = self.add(manifest, root, files)
        return ShareResult(record, False, skipped)

    def add(self, manifest: Manifest, root: str, files: list[ScannedFile]) -> ContentRecord:
        """Record a hashed content (replacing whatever was shared from the same root)."""
        cid = manifest.content_id
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM contents WHERE root = ? AND id != ?", (root, cid))
            conn.execute("DELETE FROM contents WHERE id = ?", (cid,))
            conn.execute(
                "INSERT INTO contents(id, name, kind, size, chunks, root, manifest, added)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    cid,
                    manifest.name,
                    manifest.kind,
                    manifest.total_size,
                    manifest.chunk_total,
                    root,
                    manifest.encoded,
                    now,
                ),
            )
            # Rows are streamed into SQLite, never listed first: a million files or chunks.
            conn.executemany(
                "INSERT INTO files(content_id, idx, path, size, mtime_ns, ino)"
                " VALUES (?,?,?,?,?,?)",
                _file_rows(manifest, files),
            )
            conn.executemany(
                "INSERT INTO chunk_index(sha256, content_id, idx) VALUES (?,?,?)",
                ((root.hex(), cid, index) for index, root in enumerate(manifest.chunk_roots())),
            )
        self._remember(manifest)
        return self.get(cid)

    def unshare(self, ref: str) -> ContentRecord:
        """Stop sharing the content that `ref` (ID, ID prefix or name) names."""
        record = self.resolve(ref)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM contents WHERE id = ?", (record.id,))
        return record

    def contents(self) -> list[ContentRecord]:
        """Every shared content, by name."""
        rows = self.db.conn.execute(
            "SELECT id, name, kind, size, chunks, root, added FROM contents ORDER BY name, id"
        ).fetchall()
        return [ContentRecord(*row) for row in rows]

    def get(self, content_id: str) -> ContentRecord:
        """The record of one full content ID; NotFoundError if it is not shared."""
        row = self.db.conn.execute(
            "SELECT id, name, kind, size, chunks, root, added FROM contents WHERE id = ?",
            (content_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{content_id[:12]} is not in the library")
        return ContentRecord(*row)

    def resolve(self, ref: str) -> ContentRecord:
        """Find a content by full ID, unique ID prefix, or exact name."""
        records = self.contents()
        return resolve_ref(ref, records, lambda r: (r.id, r.name), "the library")

    def manifest(self, content_id: str) -> Manifest:
        """The manifest of a shared content."""
        cached = self._manifests.get(content_id)
        if cached is not None:
            held = self.db.conn.execute(
                "SELECT 1 FROM contents WHERE id = ?", (content_id,)
            ).fetchone()
            if held is None:
                raise NotFoundError(f"{content_id[:12]} is not in the library")
            self._manifests.move_to_end(content_id)
            return cached
        row = self.db.conn.execute(
            "SELECT manifest FROM contents WHERE id = ?", (content_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{content_id[:12]} is not in the library")
        manifest = decode_manifest(bytes(row[0]))
        self._remember(manifest)
        return manifest

    def _remember(self, manifest: Manifest) -> None:
        self._manifests[manifest.content_id] = manifest
        self._manifests.move_to_end(manifest.content_id)
        while len(self._manifests) > MANIFESTS_KEPT:
            self._manifests.popitem(last=False)

    def file_paths(self, content_id: str) -> FileTable:
        """The on-disk path and recorded stat of each file of a content, in manifest order."""
        root = self.db.conn.execute(
            "SELECT root FROM contents WHERE id = ?", (content_id,)
        ).fetchone()
        rows = self.db.conn.execute(
            "SELECT path, size, mtime_ns, ino FROM files WHERE content_id = ? ORDER BY idx",
            (content_id,),
        )
        return FileTable(rows, root[0] if root is not None else "")

    def file_path(self, content_id: str, index: int) -> tuple[str, FileStat] | None:
        """The on-disk path and recorded stat of file `index` of a content, or None."""
        row = self.db.conn.execute(
            "SELECT path, size, mtime_ns, ino FROM files WHERE content_id = ? AND idx = ?",
            (content_id, index),
        ).fetchone()
        return None if row is None else (row[0], FileStat(row[1], row[2], row[3]))

    def is_intact(self, content_id: str) -> bool:
        """Whether every file of a content is still on disk exactly as it was hashed."""
        return all(_matches(path, recorded) for path, recorded in self.file_paths(content_id))

    def file_intact(self, path: str, recorded: FileStat) -> bool:
        """Whether one file is still as it was hashed."""
        return _matches(path, recorded)

    def refresh(self, progress: Progress | None = None) -> RefreshResult:
        """Re-hash contents whose files changed on disk, drop those that vanished.

        A content whose files are still being written (they change while hashed, or cannot be
        read) is left as it is: its record stays (so `unshare` finds it) but its files no
        longer match, so it is not served; the next refresh hashes it again."""
        rehashed: list[ContentRecord] = []
        dropped: list[ContentRecord] = []
        unsettled: list[ContentRecord] = []
        for record in self.contents():
            if self.is_intact(record.id):
                continue
            try:
                # `add` replaces the old record in the same transaction as it adds the new one.
                rehashed.append(self.share(record.root, progress).record)
            except (UsageError, ManifestError):  # gone, or nothing left that can be shared
                with self.db.transaction() as conn:
                    conn.execute("DELETE FROM contents WHERE id = ?", (record.id,))
                dropped.append(record)
            except StoreError:  # changed while hashed (FileChangedError), or unreadable now
                unsettled.append(record)
        return RefreshResult(tuple(rehashed), tuple(dropped), tuple(unsettled))

    def find_chunk(self, sha256: str) -> ChunkLocation | None:
        """A chunk with this hash in any intact shared file, or None."""
        return self.find_chunks([sha256]).get(sha256)

    def find_chunks(self, hashes: Iterable[str]) -> dict[str, ChunkLocation]:
        """Of these chunk hashes, those held by an intact shared file, with where: a few
        queries of up to FIND_CHUNKS_BATCH hashes each, not one per chunk (a folder of 100,000
        files would be 100,000 queries before its download starts). An empty library costs one
        query."""
        found: dict[str, ChunkLocation] = {}
        if self.db.conn.execute("SELECT 1 FROM chunk_index LIMIT 1").fetchone() is None:
            return found
        batch: list[str] = []
        for sha256 in hashes:
            batch.append(sha256)
            if len(batch) >= FIND_CHUNKS_BATCH:
                self._find_batch(batch, found)
                batch = []
        if batch:
            self._find_batch(batch, found)
        return found

    def _find_batch(self, hashes: list[str], found: dict[str, ChunkLocation]) -> None:
        marks = ",".join("?" * len(hashes))
        rows = self.db.conn.execute(
            f"SELECT sha256, content_id, idx FROM chunk_index WHERE sha256 IN ({marks})",
            hashes,
        ).fetchall()
        tried: dict[str, int] = {}
        for sha256, content_id, index in rows:
            if sha256 in found or tried.get(sha256, 0) >= 8:
                continue
            tried[sha256] = tried.get(sha256, 0) + 1
            manifest = self.manifest(content_id)
            ref = manifest.chunk(index)
            where = self.file_path(content_id, ref.file_index)
            if where is None:
                continue
            path, recorded = where
            if _matches(path, recorded):
                found[sha256] = ChunkLocation(path, ref.offset, ref.length, ref.sha256)

    def _unchanged(self, root: str, files: list[ScannedFile]) -> ContentRecord | None:
        ordered: list[tuple[str, int, int, int]] | None = None
        for record in self.contents():
            if record.root != root:
                continue
            (count,) = self.db.conn.execute(
                "SELECT count(*) FROM files WHERE content_id = ?", (record.id,)
            ).fetchone()
            if count != len(files):
                continue
            if ordered is None:  # the rows recorded, in the same (manifest) order
                ordered = [
                    (f.abs_path, f.stat.size, f.stat.mtime_ns, f.stat.ino)
                    for f in sorted(files, key=lambda f: path_key(f.rel_path))
                ]
            rows = self.db.conn.cursor()
            rows.row_factory = None
            rows.execute(
                "SELECT path, size, mtime_ns, ino FROM files WHERE content_id = ? ORDER BY idx",
                (record.id,),
            )
            if all(map(operator.eq, rows, ordered)):
                return record
        return None


class FileTable(Sequence[tuple[str, FileStat]]):
    """The files of a content on disk as (path, recorded stat), held compactly: paths under the
    content's root as one block of bytes, stats in arrays (a folder may hold a million files;
    a tuple, a string and a FileStat each would cost hundreds of bytes per file)."""

    __slots__ = ("_ends", "_inos", "_mtimes", "_paths", "_prefix", "_sizes")

    def __init__(self, rows: Iterable[tuple[str, int, int, int]], root: str) -> None:
        self._prefix = root.rstrip(os.sep) + os.sep if root else ""
        paths = bytearray()
        self._ends, self._sizes, self._mtimes = array("q"), array("q"), array("q")
        self._inos = array("Q")
        prefix, cut = self._prefix, len(self._prefix)
        for path, size, mtime_ns, ino in rows:
            # A path under the root is kept relative (it cannot start with a separator).
            paths += os.fsencode(path[cut:] if prefix and path.startswith(prefix) else path)
            self._ends.append(len(paths))
            self._sizes.append(size)
            self._mtimes.append(mtime_ns)
            self._inos.append(ino)
        self._paths = bytes(paths)

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> tuple[str, FileStat]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, FileStat]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[str, FileStat] | Sequence[tuple[str, FileStat]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self._ends):
            raise IndexError(index)
        start = self._ends[index - 1] if index else 0
        path = os.fsdecode(self._paths[start : self._ends[index]])
        if not os.path.isabs(path):
            path = self._prefix + path
        stat = FileStat(self._sizes[index], self._mtimes[index], self._inos[index])
        return path, stat


def _file_rows(
    manifest: Manifest, files: list[ScannedFile]
) -> Iterator[tuple[str, int, str, int, int, int]]:
    """The `files` rows of a content: its files found on disk, in manifest (path) order."""
    ordered = sorted(files, key=lambda f: path_key(f.rel_path))
    if len(ordered) != manifest.file_count:
        raise StoreError("the files found do not match the manifest")
    cid = manifest.content_id
    for index, (found, path) in enumerate(zip(ordered, manifest.paths(), strict=True)):
        if found.rel_path != path:
            raise StoreError(f"{found.rel_path!r} is not in the manifest")
        stat = found.stat
        yield cid, index, found.abs_path, stat.size, stat.mtime_ns, stat.ino


def _matches(path: str, recorded: FileStat) -> bool:
    try:
        return FileStat.of(os.stat(path)) == recorded
    except OSError:
        return False


def refresh_home(home: Path) -> RefreshResult:
    """`Library.refresh` on a connection of its own (for a worker thread)."""
    db = Database.open_home(home)
    try:
        return Library(db).refresh()
    finally:
        db.close()


def share_paths(
    home: Path, paths: list[str], progress: Callable[[str, int], Callable[[int], None]] | None
) -> list[ShareResult | SwarmshareError]:
    """Share each path on a connection of its own; an error per path that could not be."""
    db = Database.open_home(home)
    try:
        library = Library(db)
        results: list[ShareResult | SwarmshareError] = []
        for path in paths:
            try:
                advance = None
                scanned = scan_path(path)
                if progress is not None:
                    advance = progress(path, sum(f.stat.size for f in scanned[2]))
                results.append(library.share(path, progress=advance, scanned=scanned))
            except SwarmshareError as exc:
                results.append(exc)
        return results
    finally:
        db.close()
