"""Hashing files on disk into manifests: chunk by chunk, in parallel threads, in bounded memory.

hashlib and os.pread release the GIL, so a few threads hash a large file at the speed of
several cores; each thread holds at most one read buffer, whatever the file's size.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from swarmshare.core import merkle
from swarmshare.core.chunking import Span, chunk_size_for, chunk_spans
from swarmshare.core.manifest import (
    ContentKind,
    FileEntry,
    Manifest,
    collision_reason,
    name_collision,
    path_key,
    validate_leaf,
    validate_name,
    validate_path,
)
from swarmshare.core.torrent import v1_layout
from swarmshare.errors import FileChangedError, StoreError, UsageError
from swarmshare.limits import MAX_PATH_DEPTH, MIB

READ_BYTES = 1 * MIB
SMALL_BATCH_FILES = 64  # small files hashed in one task of a thread
SMALL_BATCH_BYTES = 1 * MIB
SMALL_FILE_BYTES = 1 * MIB  # files up to this size (and of one piece) are read whole
Progress = Callable[[int], None]
_sha256 = hashlib.sha256
_EUID = os.geteuid() if hasattr(os, "geteuid") else -1


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
    """Hash every file of a content (BEP 52: one pass over each file's bytes gives its piece
    layer and pieces root) and build its manifest; FileChangedError if one changes.

    Small files (most files of a folder) are hashed whole, several at once in the threads; a
    bigger file is hashed piece by piece in the same threads."""
    threads = workers or min(4, os.cpu_count() or 2)
    piece_length = chunk_size_for(sum(f.stat.size for f in files))
    whole = min(piece_length, SMALL_FILE_BYTES)  # files read whole, in batches
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
            # Small files go to the threads in batches: one task per file would cost more
            # than hashing it.
            first = batch_bytes = 0
            for index, scanned in enumerate(files):
                size = scanned.stat.size
                if size > whole:
                    submit(first, index)
                    first, batch_bytes = index + 1, 0
                    digests[index] = _hash_file(scanned, piece_length, pool, threads, progress)
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
    # Entries are made one at a time, in canonical order, as the manifest is encoded: a folder
    # of a million files never has them all at once.
    order = sorted(range(len(files)), key=lambda i: path_key(files[i].rel_path))
    return Manifest(
        name,
        kind,
        (
            FileEntry(files[i].rel_path, files[i].stat.size, piece_length, tuple(found))
            for i in order
            if (found := digests[i]) is not None
        ),
        piece_length,
    )


def _hash_small(batch: Sequence[ScannedFile]) -> list[list[str]]:
    """The pieces root of each of a few files of at most one piece (none if empty)."""
    found: list[list[str]] = []
    for scanned in batch:
        try:
            fd = os.open(scanned.abs_path, os.O_RDONLY)
        except OSError as exc:
            raise StoreError(f"cannot read {scanned.abs_path}: {exc.strerror}") from None
        try:
            recorded = scanned.stat
            size = recorded.size
            data = os.pread(fd, size, 0) if size else b""
            # Read, then checked: a file replaced or written since the scan (or while read)
            # has another inode, size or mtime now.
            now = os.fstat(fd)
            if (
                len(data) != size
                or now.st_size != size
                or now.st_mtime_ns != recorded.mtime_ns
                or now.st_ino != recorded.ino
            ):
                raise FileChangedError(f"{scanned.abs_path} changed while it was being shared")
        finally:
            os.close(fd)
        if size > merkle.BLOCK_BYTES:
            found.append([merkle.small_file_root(data).hex()])
        elif size:  # one block: its hash is the root
            found.append([_sha256(data).hexdigest()])
        else:
            found.append([])
    return found


def _hash_file(
    scanned: ScannedFile,
    piece_length: int,
    pool: ThreadPoolExecutor | None,
    threads: int,
    progress: Progress | None,
) -> list[str]:
    """The piece layer of a file longer than one piece, or the pieces root of a shorter one."""
    size = scanned.stat.size
    try:
        fd = os.open(scanned.abs_path, os.O_RDONLY)
    except OSError as exc:
        raise StoreError(f"cannot read {scanned.abs_path}: {exc.strerror}") from None
    try:
        before = FileStat.of(os.fstat(fd))
        if before != scanned.stat:
            raise FileChangedError(f"{scanned.abs_path} changed while it was being shared")
        spans = list(chunk_spans(size, piece_length))
        leaves = merkle.piece_leaves(piece_length)
        if len(spans) <= 1:
            leaves = merkle.next_power_of_two(merkle.block_count(size))
            digests = [hash_span(fd, Span(0, 0, size), leaves)]
            if progress:
                progress(size)
        elif pool is None:
            digests = []
            for span in spans:
                digests.append(hash_span(fd, span, leaves))
                if progress:
                    progress(span.length)
        else:
            digests = _hash_parallel(fd, spans, leaves, pool, threads, progress)
        after = FileStat.of(os.stat(scanned.abs_path))
        if after != before:
            raise FileChangedError(f"{scanned.abs_path} changed while it was being shared")
        return digests
    finally:
        os.close(fd)


def hash_span(fd: int, span: Span, leaves: int) -> str:
    """The merkle root (hex) of one span of an open file, its 16 KiB blocks padded to `leaves`
    leaves; read in bounded pieces."""
    hasher = merkle.PieceHasher(leaves)
    done = 0
    while done < span.length:
        data = os.pread(fd, min(READ_BYTES, span.length - done), span.offset + done)
        if not data:
            raise FileChangedError("file got shorter while it was being read")
        if len(data) % merkle.BLOCK_BYTES and done + len(data) < span.length:
            data = data[: len(data) - len(data) % merkle.BLOCK_BYTES]  # whole blocks only
        hasher.feed(data)
        done += len(data)
    return hasher.root().hex()


def _hash_parallel(
    fd: int,
    spans: list[Span],
    leaves: int,
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
            pending.append((span, pool.submit(hash_span, fd, span, leaves)))
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
    files, skipped = _walk(real)
    if not files:
        raise UsageError(f"{path}: the folder holds no file that can be shared")
    if len(files) == 1 and files[0].rel_path == name:
        raise UsageError(
            f"{path}: a folder holding only a file of its own name is that file"
            " (BitTorrent cannot tell them apart): share the file"
        )
    collision = name_collision(f.rel_path for f in files)
    if collision is not None:
        raise UsageError(
            f"{path}: cannot be shared as one folder: {collision_reason(collision)};"
            " rename one of them"
        )
    return name, "dir", files, skipped


def _walk(root: str) -> tuple[list[ScannedFile], list[str]]:
    """The regular files under folder `root` that can be shared, in canonical order (see
    `path_key`), and the entries skipped with their reasons.

    One pass: each folder is listed once, and each file costs one stat (its directory entry
    says what it is); a folder's name is checked once, then only each file's own name."""
    files: list[ScannedFile] = []
    skipped: list[str] = []
    # Folders being listed: their remaining entries (sorted by name, files and folders
    # together, so files come out in canonical order), their path prefix and whether that
    # prefix is a valid path of an allowed depth.
    stack: list[tuple[Iterator[os.DirEntry[str]], str, bool]] = []

    def enter(folder: str, prefix: str, ok: bool) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=_entry_name)
        except OSError as exc:
            skipped.append(f"{exc.filename}: {exc.strerror}")
            return
        stack.append((iter(entries), prefix, ok))

    enter(root, "", True)
    while stack:
        entries, prefix, folder_ok = stack[-1]
        for entry in entries:
            name = entry.name
            rel = prefix + name
            try:
                if entry.is_symlink():
                    skipped.append(f"{rel}: symbolic link (not followed inside a folder)")
                    continue
                if entry.is_dir(follow_symlinks=False):
                    sub_ok = (
                        folder_ok
                        and validate_name(name) is None
                        and rel.count("/") + 1 < MAX_PATH_DEPTH
                    )
                    enter(entry.path, rel + "/", sub_ok)
                    break  # into the subfolder; this folder's entries resume after it
                lst = entry.stat(follow_symlinks=False)
            except OSError as exc:
                skipped.append(f"{rel}: {exc.strerror}")
                continue
            if not stat_module.S_ISREG(lst.st_mode):
                skipped.append(f"{rel}: not a regular file")
                continue
            bad = validate_leaf(rel, name) if folder_ok else validate_path(rel)
            if bad:
                skipped.append(f"{rel}: {bad}")
                continue
            if not _readable(entry.path, lst):
                skipped.append(f"{rel}: permission denied")
                continue
            files.append(
                ScannedFile(rel, entry.path, FileStat(lst.st_size, lst.st_mtime_ns, lst.st_ino))
            )
        else:
            stack.pop()
    return files, skipped


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _readable(path: str, st: os.stat_result) -> bool:
    """Whether this process may read the file: its own file with the owner's read bit set is
    (the owner's bits are all that count for the owner), anything else is asked of the system."""
    if st.st_uid == _EUID and st.st_mode & stat_module.S_IRUSR:
        return True
    return os.access(path, os.R_OK)


def _check_readable(real: str, shown: str) -> None:
    try:
        with open(real, "rb") as handle:
            handle.read(0)
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read ({exc.strerror})") from None


def v1_piece_hashes(manifest: Manifest, paths: Sequence[str]) -> bytes:
    """The SHA-1 of each piece of the content's v1 (BEP 47) layout, concatenated, read from
    its files at `paths` (pads are zeros): what a hybrid .torrent adds. One pass, bounded
    memory; FileChangedError if a file is shorter than its manifest says."""
    step = manifest.piece_length
    digests = bytearray()
    piece = hashlib.sha1()
    filled = 0

    def feed(data: bytes) -> None:
        nonlocal piece, filled
        view = memoryview(data)
        while view:
            take = min(len(view), step - filled)
            piece.update(view[:take])
            filled += take
            view = view[take:]
            if filled == step:
                digests.extend(piece.digest())
                piece, filled = hashlib.sha1(), 0

    for span in v1_layout(manifest):
        if span.file_index is None:
            feed(bytes(span.length))
            continue
        path = paths[span.file_index]
        try:
            with open(path, "rb") as handle:
                done = 0
                while done < span.length:
                    data = handle.read(min(READ_BYTES, span.length - done))
                    if not data:
                        raise FileChangedError(f"{path} is shorter than when it was shared")
                    feed(data)
                    done += len(data)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    if filled:
        digests.extend(piece.digest())
    return bytes(digests)
