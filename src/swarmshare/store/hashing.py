"""Hashing files on disk into manifests: chunk by chunk, in parallel threads, in bounded memory.

hashlib and os.pread release the GIL, so a few threads hash a large file at the speed of
several cores; each thread holds at most one read buffer, whatever the file's size.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from swarmshare.core.chunking import ChunkHasher, Span, chunk_size_for, chunk_spans
from swarmshare.core.manifest import (
    ContentKind,
    Manifest,
    collision_reason,
    file_entry,
    name_collision,
    validate_leaf,
    validate_name,
    validate_path,
)
from swarmshare.errors import FileChangedError, StoreError, UsageError
from swarmshare.limits import MAX_PATH_DEPTH, MIB

READ_BYTES = 1 * MIB
SMALL_BATCH_FILES = 64  # small files hashed in one task of a thread
SMALL_BATCH_BYTES = 1 * MIB
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class FileStat:
    """What identifies one version of a file on disk: size, mtime and inode."""

    size: int
    mtime_ns: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        """The FileStat of a stat result."""
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """A regular file found under a shared path, and its stat when found."""

    rel_path: str
    abs_path: str
    stat: FileStat


def hash_content(
    name: str,
    kind: ContentKind,
    files: Sequence[ScannedFile],
    progress: Progress | None = None,
    workers: int | None = None,
) -> Manifest:
    """Hash every file of a content and build its manifest; FileChangedError if one changes.

    Files of one chunk (most files of a folder) are hashed whole, several at once in the
    threads; a bigger file is hashed span by span in the same threads."""
    threads = workers or min(4, os.cpu_count() or 2)
    digests: list[list[str] | None] = [None] * len(files)
    window = threads * 2  # batches of small files in flight: bounds memory to a few of them
    with ThreadPoolExecutor(threads, thread_name_prefix="swarmshare-hash") as pool:
        pending: deque[tuple[int, int, Future[list[list[str]]]]] = deque()

        def collect(until: int) -> None:
            while len(pending) > until:
                first, end, future = pending.popleft()
                digests[first:end] = future.result()
                if progress:
                    progress(sum(f.stat.size for f in files[first:end]))

        def submit(first: int, end: int) -> None:
            if first < end:
                pending.append((first, end, pool.submit(_hash_small, files[first:end])))
                collect(window)

        try:
            # Small files (of one chunk) go to the threads in batches: one task per file would
            # cost more than hashing it.
            first = batch_bytes = 0
            for index, scanned in enumerate(files):
                size = scanned.stat.size
                if size > chunk_size_for(size):
                    submit(first, index)
                    first, batch_bytes = index + 1, 0
                    digests[index] = _hash_file(scanned, pool, threads, progress)
                    continue
                batch_bytes += size
                if index + 1 - first >= SMALL_BATCH_FILES or batch_bytes >= SMALL_BATCH_BYTES:
                    submit(first, index + 1)
                    first, batch_bytes = index + 1, 0
            submit(first, len(files))
            collect(0)
        finally:
            for _first, _end, future in pending:
                future.cancel()
    # Entries are made one at a time, in path order, as the manifest is encoded: a folder of a
    # million files never has them all at once.
    order = sorted(range(len(files)), key=lambda i: files[i].rel_path)
    return Manifest(
        name,
        kind,
        (
            file_entry(files[i].rel_path, files[i].stat.size, found)
            for i in order
            if (found := digests[i]) is not None
        ),
    )


def _hash_small(batch: Sequence[ScannedFile]) -> list[list[str]]:
    """The chunk digests of each of a few files of at most one chunk."""
    found: list[list[str]] = []
    for scanned in batch:
        try:
            fd = os.open(scanned.abs_path, os.O_RDONLY)
        except OSError as exc:
            raise StoreError(f"cannot read {scanned.abs_path}: {exc.strerror}") from None
        try:
            size = scanned.stat.size
            data = os.pread(fd, size, 0) if size else b""
            # Read, then checked: a file replaced or written since the scan (or while read)
            # has another inode, size or mtime now.
            if len(data) != size or FileStat.of(os.fstat(fd)) != scanned.stat:
                raise FileChangedError(f"{scanned.abs_path} changed while it was being shared")
        finally:
            os.close(fd)
        found.append([hashlib.sha256(data).hexdigest()] if size else [])
    return found


def _hash_file(
    scanned: ScannedFile,
    pool: ThreadPoolExecutor | None,
    threads: int,
    progress: Progress | None,
) -> list[str]:
    size = scanned.stat.size
    chunk_size = chunk_size_for(size)
    try:
        fd = os.open(scanned.abs_path, os.O_RDONLY)
    except OSError as exc:
        raise StoreError(f"cannot read {scanned.abs_path}: {exc.strerror}") from None
    try:
        before = FileStat.of(os.fstat(fd))
        if before != scanned.stat:
            raise FileChangedError(f"{scanned.abs_path} changed while it was being shared")
        spans = list(chunk_spans(size, chunk_size))
        if len(spans) <= 1 or pool is None:
            digests = _hash_sequential(fd, size, chunk_size, progress)
        else:
            digests = _hash_parallel(fd, spans, pool, threads, progress)
        after = FileStat.of(os.stat(scanned.abs_path))
        if after != before:
            raise FileChangedError(f"{scanned.abs_path} changed while it was being shared")
        return digests
    finally:
        os.close(fd)


def _hash_sequential(fd: int, size: int, chunk_size: int, progress: Progress | None) -> list[str]:
    hasher = ChunkHasher(chunk_size)
    offset = 0
    while offset < size:
        data = os.pread(fd, min(READ_BYTES, size - offset), offset)
        if not data:
            raise FileChangedError("file got shorter while it was being shared")
        hasher.feed(data)
        offset += len(data)
        if progress:
            progress(len(data))
    return hasher.finish()


def hash_span(fd: int, span: Span) -> str:
    """SHA-256 hex of one span of an open file, read in bounded pieces."""
    digest = hashlib.sha256()
    done = 0
    while done < span.length:
        data = os.pread(fd, min(READ_BYTES, span.length - done), span.offset + done)
        if not data:
            raise FileChangedError("file got shorter while it was being read")
        digest.update(data)
        done += len(data)
    return digest.hexdigest()


def _hash_parallel(
    fd: int,
    spans: list[Span],
    pool: ThreadPoolExecutor,
    threads: int,
    progress: Progress | None,
) -> list[str]:
    digests: list[str] = []
    pending: list[tuple[Span, Future[str]]] = []
    window = threads + 1  # spans in flight: bounds memory to a few read buffers
    next_span = 0
    while next_span < len(spans) or pending:
        while next_span < len(spans) and len(pending) < window:
            span = spans[next_span]
            pending.append((span, pool.submit(hash_span, fd, span)))
            next_span += 1
        span, future = pending.pop(0)
        digests.append(future.result())
        if progress:
            progress(span.length)
    return digests


def scan_path(path: str) -> tuple[str, ContentKind, list[ScannedFile], list[str]]:
    """Find what sharing `path` means: (name, kind, files, skipped entries with reasons)."""
    absolute = os.path.abspath(path)
    name = os.path.basename(absolute.rstrip(os.sep)) or absolute
    try:
        st = os.stat(absolute)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file or folder") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    problem = validate_name(name)
    if problem:
        raise UsageError(f"{path}: cannot be shared under this name ({problem})")
    real = os.path.realpath(absolute)
    if stat_module.S_ISREG(st.st_mode):
        _check_readable(real, path)
        return name, "file", [ScannedFile(name, real, FileStat.of(st))], []
    if not stat_module.S_ISDIR(st.st_mode):
        raise UsageError(f"{path}: not a regular file or folder (device, FIFO or socket)")
    files: list[ScannedFile] = []
    skipped: list[str] = []

    def walk_error(exc: OSError) -> None:
        skipped.append(f"{exc.filename}: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(real, onerror=walk_error):
        dirnames.sort()
        # Once per folder: its path relative to the root, and whether it is a valid one (then
        # only each file's own name is checked).
        folder = os.path.relpath(dirpath, real).replace(os.sep, "/")
        prefix = "" if folder == "." else folder + "/"
        folder_ok = (not prefix or validate_path(folder) is None) and (
            prefix.count("/") < MAX_PATH_DEPTH
        )
        for entry in sorted(filenames) + [d for d in dirnames if _is_link(dirpath, d)]:
            full = os.path.join(dirpath, entry)
            rel = prefix + entry
            try:
                lst = os.lstat(full)
            except OSError as exc:
                skipped.append(f"{rel}: {exc.strerror}")
                continue
            if stat_module.S_ISLNK(lst.st_mode):
                skipped.append(f"{rel}: symbolic link (not followed inside a folder)")
                continue
            if not stat_module.S_ISREG(lst.st_mode):
                skipped.append(f"{rel}: not a regular file")
                continue
            bad = validate_leaf(rel, entry) if folder_ok else validate_path(rel)
            if bad:
                skipped.append(f"{rel}: {bad}")
                continue
            if not os.access(full, os.R_OK):
                skipped.append(f"{rel}: permission denied")
                continue
            files.append(ScannedFile(rel, full, FileStat.of(lst)))
    if not files:
        raise UsageError(f"{path}: the folder holds no file that can be shared")
    collision = name_collision(f.rel_path for f in files)
    if collision is not None:
        raise UsageError(
            f"{path}: cannot be shared as one folder: {collision_reason(collision)};"
            " rename one of them"
        )
    return name, "dir", files, skipped


def _is_link(dirpath: str, name: str) -> bool:
    return os.path.islink(os.path.join(dirpath, name))


def _check_readable(real: str, shown: str) -> None:
    try:
        with open(real, "rb") as handle:
            handle.read(0)
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read ({exc.strerror})") from None
