"""A download on disk: `DEST.part` (a file, or a folder tree) beside its resume record.

Verified chunks are written at their offsets into the pre-allocated part file(s); the resume
record `DEST.part.swarmshare` lists the chunks written (a bitmap, replaced atomically). On resume
every listed chunk is hashed again before it is trusted, so a record that got ahead of the data
(a crash before the page cache reached the disk) costs a re-fetch, never a wrong byte. When all
chunks are in, the files are fsynced and the part is renamed to DEST: DEST is never a wrong or
half-written file.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import json
import mmap
import os
import shutil
import stat as stat_module
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

from swarmshare.core.catalog import bitmap_get, bitmap_new, bitmap_set
from swarmshare.core.manifest import ChunkRef, Manifest
from swarmshare.errors import StoreError, UsageError
from swarmshare.limits import MAX_OPEN_PART_FILES
from swarmshare.store.hashing import FileStat, ScannedFile

RECORD_SUFFIX = ".part.swarmshare"
PREALLOCATE = True  # reserve the part's disk space up front where the file system can
PREALLOCATE_MIN_BYTES = 1 << 20  # smaller files are not worth a system call each to reserve
DIRECT_IO_FLAG = getattr(os, "O_DIRECT", 0)  # 0 where the system has no direct I/O
DIRECT_IO_ALIGN = 4096  # offsets, lengths and addresses: a multiple of any disk's block size
# Smaller chunks are written through the page cache: each direct write waits for the disk, and
# for chunks of a few hundred KiB (files up to 512 MiB) that wait, not the copy, sets the pace.
DIRECT_IO_MIN_BYTES = 1 << 20
PART_SUFFIX = ".part"


class PartFile:
    """The part file(s) and resume record of one download."""

    def __init__(self, dest: Path, manifest: Manifest) -> None:
        self.dest = dest
        self.manifest = manifest
        self.part = dest.with_name(dest.name + PART_SUFFIX)
        self.record = dest.with_name(dest.name + RECORD_SUFFIX)
        self._files = _OpenFiles([], 0)  # opened in open()
        self._direct_refused: set[int] = set()  # files whose direct I/O was refused
        self._extent_cache: dict[int, list[tuple[int, int]] | None] = {}
        self.paths: list[str] = []
        self.closed = False

    # ---- opening ---------------------------------------------------------------------------

    def open(self) -> set[int]:
        """Create or reopen the part file(s); the chunks worth verifying before fetching.

        Those are the chunks the resume record claims, and every chunk with data in the sparse
        part file: a chunk written just before a crash, after the record was last saved, is
        found there too. Hashes decide what is kept, so a stale or foreign part costs nothing
        but a re-fetch.

        Refused (StoreError: not enough disk space), it leaves nothing new behind: a part it
        created is removed, a part from an earlier run (resumable data) is kept.
        """
        claimed = self._load_record()
        if self.part.is_dir() != (self.manifest.kind == "dir") and self.part.exists():
            self._remove_part()
        if not (self.part.exists() or self.part.is_symlink()):
            self._check_space(0)  # before a byte is on disk
            try:
                return self._create_part()
            except StoreError:
                self.close()
                self._remove_part()
                raise
        return self._open_part(claimed)

    def _create_part(self) -> set[int]:
        """A new part: nothing in it yet, so nothing to look for. A folder's small file is
        created by its first write (one open per file: a folder may hold a million small
        files), an empty one at the end; big files and a single file are created now (big
        ones with their space reserved)."""
        try:
            self.paths = self._part_paths(fresh=True)
            for index, path in enumerate(self.paths):
                size = self.manifest.size_of(index)
                if size < PREALLOCATE_MIN_BYTES and self.manifest.kind == "dir":
                    continue
                # A single file is always created now: a destination that cannot be written
                # is said before anything is fetched.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.ftruncate(fd, size)
                    if size >= PREALLOCATE_MIN_BYTES:
                        self._reserve(fd, size)
                finally:
                    os.close(fd)
        except OSError as exc:
            self.close()
            raise disk_error(exc, self.part) from None
        self._files.close()
        self._files = _OpenFiles(self.paths, MAX_OPEN_PART_FILES)
        return set()

    def _part_paths(self, fresh: bool) -> list[str]:
        if self.manifest.kind == "file":
            return [str(self.part)]
        self.part.mkdir(parents=True, exist_ok=True)
        root = os.path.realpath(self.part)
        paths: list[str] = []
        made: set[str] = {root}
        for index in range(self.manifest.file_count):
            rel = self.manifest.path_of(index)
            # Manifest paths are validated (no "..", no absolute path); a part tree found on
            # disk may hold links someone put there, so its paths are resolved and checked.
            path = os.path.join(root, *rel.split("/"))
            if not fresh:
                path = os.path.realpath(path)
                if not path.startswith(root + os.sep):
                    raise StoreError(f"unsafe path in manifest: {rel!r}")
            parent = os.path.dirname(path)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            paths.append(path)
        return paths

    def _open_part(self, claimed: set[int]) -> set[int]:
        self.paths = self._part_paths(fresh=False)
        self._files.close()
        self._files = _OpenFiles(self.paths, MAX_OPEN_PART_FILES)
        try:
            for index in range(self.manifest.file_count):
                size = self.manifest.size_of(index)
                with self._files.use(index) as fd:
                    if os.fstat(fd).st_size != size:
                        os.ftruncate(fd, size)
        except OSError as exc:
            self.close()
            raise disk_error(exc, self.part) from None
        candidates = claimed | self._chunks_with_data()
        self._check_space(len(candidates))
        self._preallocate()
        return candidates

    def _preallocate(self) -> None:
        """Reserve the disk space of every part file now, so that a disk filling up later
        (another program, another download) cannot stop this one half-way. Unwritten
        reserved space still reads as a hole, which is how resume finds the chunks written."""
        for index in range(self.manifest.file_count):
            size = self.manifest.size_of(index)
            if size >= PREALLOCATE_MIN_BYTES:
                with self._files.use(index) as fd:
                    self._reserve(fd, size)

    def _reserve(self, fd: int, size: int) -> None:
        if PREALLOCATE and _fallocate(fd, size) == errno.ENOSPC:
            self.close()
            raise StoreError(
                f"not enough disk space for {self.dest.name}: cannot reserve"
                f" {size} bytes in {self.part.parent}"
            )

    def _chunks_with_data(self) -> set[int]:
        found: set[int] = set()
        for ref in self.manifest.chunks():
            extents = self._extents(ref.file_index)
            if extents is None or any(
                start < ref.offset + ref.length and ref.offset < end for start, end in extents
            ):
                found.add(ref.index)
        return found

    def _extents(self, file_index: int) -> list[tuple[int, int]] | None:
        """The data (non-hole) ranges of one part file; None if the system cannot tell."""
        cache = self._extent_cache
        if file_index in cache:
            return cache[file_index]
        size = self.manifest.size_of(file_index)
        extents: list[tuple[int, int]] | None = []
        position = 0
        try:
            with self._files.use(file_index) as fd:
                while position < size:
                    try:
                        start = os.lseek(fd, position, os.SEEK_DATA)
                    except OSError as exc:
                        if exc.errno == errno.ENXIO:
                            break
                        raise
                    end = os.lseek(fd, start, os.SEEK_HOLE)
                    assert extents is not None
                    extents.append((start, end))
                    position = end
        except (OSError, AttributeError):
            extents = None
        cache[file_index] = extents
        return extents

    def _check_space(self, claimed: int) -> None:
        """Refuse to start when the disk cannot hold what is left to write (with a clear
        count); where space cannot be reserved (see _preallocate), a disk that fills up later
        still stops the download with a clear error (see disk_error) and loses nothing."""
        m = self.manifest
        left = m.total_size - claimed * max(
            (m.chunk_size_of(i) for i in range(m.file_count)), default=0
        )
        try:
            st = os.statvfs(self.part.parent)
        except OSError:
            return
        free = st.f_bavail * st.f_frsize
        if left > free:
            self.close()
            raise StoreError(
                f"not enough disk space for {self.dest.name}: {left} bytes to write,"
                f" {free} free in {self.part.parent}"
            )

    def verify(self, chunks: set[int]) -> set[int]:
        """Those of `chunks` whose bytes in the part file hash right (run off the event loop)."""
        good = set()
        for index in sorted(chunks):
            ref = self.manifest.chunk(index)
            if ref.matches(self.read(ref)):
                good.add(index)
        return good

    # ---- chunks ----------------------------------------------------------------------------

    def write_if_valid(self, ref: ChunkRef, data: bytes | bytearray | mmap.mmap) -> bool:
        """Hash `data` and write it at its place only if it matches the manifest."""
        if not ref.matches(data):
            return False
        self.write(ref, data)
        return True

    def write_many_if_valid(
        self, refs: list[ChunkRef], data: bytes | bytearray | memoryview | mmap.mmap
    ) -> list[bool]:
        """`data` holds the chunks of `refs` one after the other: write each that hashes right;
        whether each did."""
        view = memoryview(data)
        goods: list[bool] = []
        start = 0
        for ref in refs:
            piece = view[start : start + ref.length]
            start += ref.length
            good = ref.matches(piece)
            if good and ref.offset == 0 and ref.length == self.manifest.size_of(ref.file_index):
                self._write_whole(ref.file_index, piece)
            elif good:
                self.write(ref, piece)
            goods.append(good)
        return goods

    def _write_whole(self, file_index: int, data: memoryview) -> None:
        """A small file in one write: opened, written, closed, without the descriptor cache
        (it is never written again; caching it would only evict one that is)."""
        if self._files.closed:
            raise disk_error(OSError(errno.EBADF, "the part file is closed"), self.part)
        try:
            fd = os.open(self.paths[file_index], os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                self._pwrite_all(fd, data, 0)
            finally:
                os.close(fd)
        except OSError as exc:
            raise disk_error(exc, self.part) from None

    def write(self, ref: ChunkRef, data: bytes | bytearray | memoryview | mmap.mmap) -> None:
        """Write verified bytes of one chunk at its offset.

        A page-aligned buffer (a received chunk) of whole blocks, of at least
        DIRECT_IO_MIN_BYTES, goes to the disk by direct I/O, bypassing the page cache: no
        second copy of every byte, no cache filled with a file nobody reads yet, and little left
        for the fsync at the end. Anything else, or a file system that refuses direct I/O,
        takes the ordinary buffered write.
        """
        if (
            DIRECT_IO_FLAG
            and ref.file_index not in self._direct_refused
            and isinstance(data, mmap.mmap)
            and ref.offset % DIRECT_IO_ALIGN == 0
            and len(data) % DIRECT_IO_ALIGN == 0
            and len(data) >= DIRECT_IO_MIN_BYTES
        ):
            try:
                with self._files.use(ref.file_index, direct=True) as fd:
                    self._pwrite_all(fd, memoryview(data), ref.offset)
                return
            except _DirectRefused:
                self._direct_refused.add(ref.file_index)  # not on this file system
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise disk_error(exc, self.part) from None
                self._direct_refused.add(ref.file_index)  # not for this file after all
        try:
            with self._files.use(ref.file_index) as fd:
                self._pwrite_all(fd, memoryview(data), ref.offset)
        except OSError as exc:
            raise disk_error(exc, self.part) from None

    @staticmethod
    def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def flush(self) -> None:
        """Push written data to the disk now (run off the event loop, while chunks arrive), so
        that the fsync before the final rename has little left to do."""
        for index in self._files.open_indices():
            with contextlib.suppress(OSError), self._files.use(index) as fd:
                os.fdatasync(fd)

    def read(self, ref: ChunkRef) -> bytes:
        """The bytes at one chunk's place in the part file."""
        with self._files.use(ref.file_index) as fd:
            return os.pread(fd, ref.length, ref.offset)

    # ---- resume record ---------------------------------------------------------------------

    def save_record(self, have: set[int] | bytearray) -> None:
        """Replace the resume record atomically."""
        bitmap = have if isinstance(have, bytearray) else _bitmap(have, self.manifest.chunk_total)
        body = json.dumps(
            {
                "content_id": self.manifest.content_id,
                "chunks": self.manifest.chunk_total,
                "have": base64.b64encode(bytes(bitmap)).decode(),
                "saved": time.time(),
            }
        )
        tmp = self.record.with_name(self.record.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(body)
            os.replace(tmp, self.record)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise disk_error(exc, self.record) from None

    def _load_record(self) -> set[int]:
        try:
            obj = json.loads(self.record.read_text(encoding="utf-8"))
            if obj["content_id"] != self.manifest.content_id:
                return set()
            bitmap = base64.b64decode(obj["have"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()
        count = self.manifest.chunk_total
        if len(bitmap) != (count + 7) // 8 or not self.part.exists():
            return set()
        return {i for i in range(count) if bitmap_get(bitmap, i)}

    # ---- finishing -------------------------------------------------------------------------

    def finish(self, force: bool) -> list[ScannedFile]:
        """Sync, rename DEST.part to DEST, drop the record; the final files with their stats.

        A folder's part tree is synced once as a whole (one syncfs of its file system, where
        the system has it), not file by file: then renamed, so DEST never names a tree whose
        files could still be half on the disk."""
        try:
            manifest = self.manifest
            for index in range(manifest.file_count):
                if manifest.size_of(index) == 0:  # no write created it
                    with self._files.use(index):
                        pass
            if manifest.kind == "dir" and _syncfs(self.part):
                pass
            else:
                for index in range(manifest.file_count):
                    with self._files.use(index) as fd:
                        os.fsync(fd)
            self.close()
            aside: Path | None = None
            if self.dest.exists() or self.dest.is_symlink():
                if not force:
                    raise UsageError(f"{self.dest} appeared meanwhile; use --force to replace it")
                # One rule for a file and a folder: the old one is moved aside, the new one
                # renamed into place, then the old one removed.
                aside = self.dest.with_name(f".{self.dest.name}.replaced-{os.getpid()}")
                os.rename(self.dest, aside)
            os.replace(self.part, self.dest)
            _fsync_dir(self.dest.parent)
            if aside is not None:
                if aside.is_dir() and not aside.is_symlink():
                    shutil.rmtree(aside, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        aside.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.record.unlink()
        except OSError as exc:
            raise disk_error(exc, self.dest) from None
        return self.final_files()

    def final_files(self) -> list[ScannedFile]:
        """The completed files at DEST, for the library."""
        manifest = self.manifest
        if manifest.kind == "file":
            path = str(self.dest)
            return [ScannedFile(manifest.name, os.path.realpath(path), _stat(path))]
        root = str(self.dest)
        found: list[ScannedFile] = []
        folders: dict[str, str] = {}  # each folder's real path, resolved once
        for index in range(manifest.file_count):
            rel = manifest.path_of(index)
            folder, _, leaf = rel.rpartition("/")
            real_folder = folders.get(folder)
            if real_folder is None:
                real_folder = os.path.realpath(os.path.join(root, *folder.split("/")))
                folders[folder] = real_folder
            path = os.path.join(real_folder, leaf)
            st = os.lstat(path)
            if stat_module.S_ISLNK(st.st_mode):  # not made by us: followed, as realpath would
                path = os.path.realpath(path)
                st = os.stat(path)
            found.append(ScannedFile(rel, path, FileStat.of(st)))
        return found

    def discard(self) -> None:
        """Cancel: remove the part file(s) and the record."""
        self.close()
        self._remove_part()
        with contextlib.suppress(FileNotFoundError):
            self.record.unlink()

    def close(self) -> None:
        """Close the part file(s)."""
        self._files.close()
        self.closed = True

    def _remove_part(self) -> None:
        if self.part.is_dir() and not self.part.is_symlink():
            shutil.rmtree(self.part, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.part.unlink()


def _fallocate(fd: int, size: int) -> int:
    """Reserve `size` bytes of `fd` with fallocate(2); 0 or the errno. Only where the system
    call exists (Linux): glibc's posix_fallocate would emulate it on file systems without it by
    writing every block, which is what the sparse file avoids."""
    call = _fallocate_call()
    if size == 0 or call is None:
        return 0
    if call(fd, 0, 0, size) == 0:
        return 0
    import ctypes

    return ctypes.get_errno()


@functools.cache
def _fallocate_call() -> Callable[[int, int, int, int], int] | None:
    """libc's fallocate, looked up once (a folder's part has a file per manifest entry)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    call.restype = ctypes.c_int
    return call


class _DirectRefused(Exception):
    """The file system would not open a file for direct I/O."""


class _OpenFiles:
    """Descriptors of the part's files, opened when first used and kept open, at most about
    `limit` of them: a folder may hold 100,000 files where a process may open 1,024.

    Used from worker threads at once: a descriptor in use is never closed under its user
    (`use` counts them); the least recently used idle ones are closed beyond the limit.
    """

    def __init__(self, paths: list[str], limit: int) -> None:
        self._paths = paths
        self._limit = limit
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[int, bool], list[int]] = OrderedDict()  # [fd, users]
        self._closed = False

    @contextlib.contextmanager
    def use(self, index: int, direct: bool = False) -> Iterator[int]:
        """The descriptor of file `index` (created if missing; `direct`: opened for direct
        I/O writes, or _DirectRefused). OSError when closed or when the file cannot open."""
        key = (index, direct)
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "the part file is closed")
            entry = self._open.get(key)
            if entry is None:
                entry = self._open[key] = [self._open_fd(index, direct), 0]
            self._open.move_to_end(key)
            entry[1] += 1
            self._trim()
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[1] -= 1
                if self._closed and entry[1] == 0:
                    with contextlib.suppress(OSError):
                        os.close(entry[0])  # its last user is done: see close()
                else:
                    self._trim()

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def open_indices(self) -> list[int]:
        """The files with a buffered descriptor open now."""
        with self._lock:
            return [index for index, direct in self._open if not direct]

    def close(self) -> None:
        """Close every descriptor; later uses fail. One still in use is closed by its last user
        instead: closed under it, its number could be given to another file before that user's
        write, which would then land there."""
        with self._lock:
            self._closed = True
            for fd, users in self._open.values():
                if users == 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._open.clear()

    def _open_fd(self, index: int, direct: bool) -> int:
        if not direct:
            return os.open(self._paths[index], os.O_RDWR | os.O_CREAT, 0o644)
        try:
            return os.open(self._paths[index], os.O_WRONLY | DIRECT_IO_FLAG)
        except OSError:
            raise _DirectRefused from None

    def _trim(self) -> None:
        while len(self._open) > self._limit:
            idle = next((key for key, (_fd, users) in self._open.items() if users == 0), None)
            if idle is None:
                return
            with contextlib.suppress(OSError):
                os.close(self._open.pop(idle)[0])


def disk_error(exc: OSError, where: Path) -> StoreError:
    """One clear line for a failed write, naming a full disk plainly."""
    if exc.errno == errno.ENOSPC:
        return StoreError(f"disk full while writing {where}; free space and run the same get")
    if exc.errno == errno.EDQUOT:
        return StoreError(f"disk quota exceeded while writing {where}")
    return StoreError(f"cannot write {where}: {exc.strerror or exc}")


def _bitmap(have: set[int], count: int) -> bytearray:
    bitmap = bitmap_new(count)
    for index in have:
        bitmap_set(bitmap, index)
    return bitmap


def _syncfs(path: Path) -> bool:
    """Flush every file of `path`'s file system to the disk with one syncfs(2); False where
    the system has no such call (then each file is fsynced)."""
    call = _syncfs_call()
    if call is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return call(fd) == 0
    finally:
        os.close(fd)


@functools.cache
def _syncfs_call() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int
    return call


def _stat(path: str) -> FileStat:
    return FileStat.of(os.stat(path))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
