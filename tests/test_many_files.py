"""Contents of many files in bounded memory: what a manifest and the library keep per file and
per chunk, counted in live allocations (tracemalloc), never timed."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmshare.core.manifest import Manifest, decode_manifest, file_entry, path_key
from swarmshare.store.db import Database
from swarmshare.store.hashing import FileStat, ScannedFile
from swarmshare.store.library import Library

FILES = 20_000


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    db = Database.open_home(tmp_path / "home")
    yield Library(db)
    db.close()


def _folder(files: int) -> Manifest:
    return Manifest.build(
        "d",
        "dir",
        [file_entry(f"d{i % 100:02d}/f{i:07d}", 10, [f"{i:064x}"]) for i in range(files)],
    )


def _kept(make: Callable[[], Any]) -> tuple[Any, int, int]:
    """What `make()` returns, with the memory blocks and bytes it still holds after."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        made = make()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    stats = after.compare_to(before, "filename")
    return made, sum(s.count_diff for s in stats), sum(s.size_diff for s in stats)


def _peak(run: Callable[[], Any]) -> int:
    """The most bytes `run()` held at once, beyond what was held before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_decoded_manifest_holds_no_object_per_file_or_chunk() -> None:
    data = _folder(FILES).encoded
    manifest, blocks, size = _kept(lambda: decode_manifest(data))
    assert len(manifest.files) == FILES and manifest.chunk_total == FILES
    assert blocks < 200  # a handful of arrays, whatever the number of files
    assert size < 60 * FILES  # a few machine integers per file; the bytes are shared
    assert manifest.encoded is data
    # Entries and chunks are still there, made when asked for.
    entry = manifest.files[123]
    assert entry.path == "d00/f0012300" and entry.chunks == (f"{12300:064x}",)
    assert manifest.chunk(123).sha256 == f"{12300:064x}"


def test_the_library_holds_no_object_per_file_of_a_content(
    library: Library, tmp_path: Path
) -> None:
    manifest = _folder(FILES)
    root = str(tmp_path / "d")
    paths = [entry.path for entry in manifest.files]
    files = [ScannedFile(p, f"{root}/{p}", FileStat(10, i, i)) for i, p in enumerate(paths)]
    library.add(manifest, root, files)
    table, blocks, _size = _kept(lambda: library.file_paths(manifest.content_id))
    assert blocks < 200
    assert len(table) == FILES
    assert table[7] == (f"{root}/d00/f0000700", FileStat(10, 7, 7))
    assert table[-1] == (files[-1].abs_path, files[-1].stat)
    assert list(table) == [(f.abs_path, f.stat) for f in files]
    found = library.find_chunk(manifest.chunk(5).sha256)
    assert found is None  # the files are not on disk: a chunk is only found where it is


def test_adding_a_content_does_not_list_its_chunks(library: Library, tmp_path: Path) -> None:
    """A content's chunks go into the chunk index as a stream: its peak does not grow by an
    object per chunk (here 20 files of 1 GiB: 20,480 chunks)."""
    size = 1 << 30
    entries = [
        file_entry(f"f{i:02d}", size, [f"{i:02d}{c:062x}" for c in range(1024)], 1 << 20)
        for i in range(20)
    ]
    manifest = Manifest.build("big", "dir", entries)
    root = str(tmp_path / "big")
    files = [
        ScannedFile(e.path, f"{root}/{e.path}", FileStat(size, 1, i)) for i, e in enumerate(entries)
    ]
    peak = _peak(lambda: library.add(manifest, root, files))
    assert peak < 1_000_000  # 20,480 rows listed first would be several MB


def test_small_files_are_hashed_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of many small files is not one thread task per file."""
    from concurrent.futures import ThreadPoolExecutor

    from swarmshare.store.hashing import hash_content, scan_path

    root = tmp_path / "many"
    for i in range(1000):
        folder = root / f"d{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:04d}").write_bytes(i.to_bytes(4, "little") * 16)
    tasks = 0
    submit = ThreadPoolExecutor.submit

    def counted(self: ThreadPoolExecutor, *args: Any, **kwargs: Any) -> Any:
        nonlocal tasks
        tasks += 1
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", counted)
    name, kind, files, _skipped = scan_path(str(root))
    manifest = hash_content(name, kind, files)
    assert manifest.chunk_total == 1000
    assert tasks <= 50
    data = (root / "d3" / "f0123").read_bytes()
    index = manifest.find("d3/f0123")
    assert index is not None
    assert manifest.chunk(manifest.first_chunk(index)).sha256 == hashlib.sha256(data).hexdigest()


def test_a_small_file_changed_after_the_scan_is_not_shared(tmp_path: Path) -> None:
    from swarmshare.errors import FileChangedError
    from swarmshare.store.hashing import hash_content, scan_path

    root = tmp_path / "few"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}").write_bytes(b"x" * 100)
    name, kind, files, _skipped = scan_path(str(root))
    (root / "f3").write_bytes(b"y" * 101)
    with pytest.raises(FileChangedError):
        hash_content(name, kind, files)


def _small_tree(root: Path, files: int) -> Manifest:
    from swarmshare.store.hashing import hash_content, scan_path

    for i in range(files):
        folder = root / f"d{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}").write_bytes(i.to_bytes(4, "little") * 8)
    name, kind, scanned, _skipped = scan_path(str(root))
    return hash_content(name, kind, scanned)


def _steps_to_download(tmp_path: Path, files: int) -> tuple[int, int]:
    """Python steps to write a folder of `files` small files as batches, and to finish it."""
    from opcount import python_steps
    from swarmshare.store.partfile import PartFile

    src = tmp_path / f"src{files}"
    manifest = _small_tree(src, files)
    dest = tmp_path / f"out{files}" / src.name
    dest.parent.mkdir()
    part = PartFile(dest, manifest)
    part.open()
    refs = list(manifest.chunks())
    data = b"".join(
        (src / manifest.files[r.file_index].path).read_bytes()[r.offset : r.offset + r.length]
        for r in refs
    )
    written = python_steps(lambda: part.write_many_if_valid(refs, data))
    finished = python_steps(lambda: part.finish(force=False))
    assert (dest / "d3" / "f00013").read_bytes() == (src / "d3" / "f00013").read_bytes()
    return written, finished


def test_a_folder_of_small_files_is_written_and_finished_at_a_small_cost_per_file(
    tmp_path: Path,
) -> None:
    """A small file is one open, write and close (no descriptor cache, no lock), and finishing
    resolves each folder once, not each file's path component by component."""
    written, finished = _steps_to_download(tmp_path, 1000)
    assert written <= 8 * 1000
    assert finished <= 12 * 1000


def _tree(root: Path, files: int, folders: int = 20) -> Path:
    for i in range(files):
        folder = root / f"d{i % folders:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}").write_bytes(i.to_bytes(4, "little") * 8)
    return root


def test_a_folder_is_walked_with_one_stat_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan lists each folder once and stats each file once (from its directory entry):
    no lstat, stat, access or islink of its own per file."""
    import os

    from swarmshare.store.hashing import scan_path

    root = _tree(tmp_path / "tree", 500)
    calls: dict[str, int] = {}
    for name in ("stat", "lstat", "access"):
        real = getattr(os, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, counted)
    name, kind, files, skipped = scan_path(str(root))
    assert (kind, len(files), skipped) == ("dir", 500, [])
    assert sum(calls.values()) < 50  # the shared path (resolved), none per file
    assert [f.rel_path for f in files] == sorted((f.rel_path for f in files), key=path_key)


def test_sharing_a_folder_checks_each_name_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name the scan checked is not checked again when the manifest built from it is read
    back (its plain ASCII names need no second look)."""
    from swarmshare.core import manifest as manifest_module
    from swarmshare.store import hashing
    from swarmshare.store.hashing import hash_content, scan_path

    root = _tree(tmp_path / "tree", 400, folders=10)
    checked = 0
    real = manifest_module.validate_name

    def counted(name: str) -> str | None:
        nonlocal checked
        checked += 1
        return real(name)

    monkeypatch.setattr(manifest_module, "validate_name", counted)
    monkeypatch.setattr(hashing, "validate_name", counted)
    name, kind, files, _skipped = scan_path(str(root))
    manifest = hash_content(name, kind, files)
    assert manifest.file_count == 400
    assert checked <= 400 + 10 + 2  # each file and folder, the content's name twice


@pytest.mark.parametrize("files", [600, 2400])
def test_sharing_a_folder_costs_a_few_python_steps_per_file(tmp_path: Path, files: int) -> None:
    """Sharing (walk, hash, manifest, library rows) and sharing again unchanged cost a bounded
    number of Python calls per file, whatever the number of files."""
    from opcount import python_steps

    root = _tree(tmp_path / "tree", files)
    db = Database.open_home(tmp_path / "home")
    try:
        library = Library(db)
        results = []
        first = python_steps(lambda: results.append(library.share(str(root))))
        again = python_steps(lambda: results.append(library.share(str(root))))
    finally:
        db.close()
    assert [r.unchanged for r in results] == [False, True]
    assert results[0].record.chunks == files
    assert first <= 28 * files
    assert again <= 14 * files
