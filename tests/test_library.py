"""The library with real files and a real SQLite database."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmshare.core import merkle
from swarmshare.core.chunking import chunk_size_for
from swarmshare.errors import AmbiguousError, FileChangedError, NotFoundError, UsageError
from swarmshare.store.db import Database
from swarmshare.store.library import Library


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    db = Database.open_home(tmp_path / "home")
    yield Library(db)
    db.close()


def test_share_file_hashes_every_chunk(library: Library, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "cat.png"
    path.write_bytes(data)
    result = library.share(str(path))
    assert not result.unchanged
    manifest = library.manifest(result.record.id)
    chunk = chunk_size_for(len(data))
    leaves = merkle.piece_leaves(chunk)
    expected = [
        merkle.data_root(data[i : i + chunk], leaves).hex() for i in range(0, len(data), chunk)
    ]
    assert list(manifest.files[0].chunks) == expected
    assert result.record.id == hashlib.sha256(manifest.info).hexdigest()
    assert library.share(str(path)).unchanged


def test_parallel_and_sequential_hashing_agree(library: Library, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    manifest = library.manifest(library.share(str(path)).record.id)
    chunk = manifest.files[0].chunk_size
    assert len(manifest.files[0].chunks) == -(-len(data) // chunk) > 1
    for ref in manifest.chunks():
        piece = data[ref.offset : ref.offset + ref.length]
        assert merkle.data_root(piece, merkle.piece_leaves(chunk)).hex() == ref.sha256


def test_share_folder_skips_links_and_special_files(library: Library, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "2024" / "june").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "2024" / "june" / "b é 😀.txt").write_text("bb")
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to(root / "a.txt")
    os.mkfifo(root / "fifo")
    result = library.share(str(root))
    manifest = library.manifest(result.record.id)
    assert [f.path for f in manifest.files] == ["2024/june/b é 😀.txt", "a.txt", "empty"]
    assert manifest.kind == "dir" and result.record.size == 3
    assert any("link" in s for s in result.skipped) and any("fifo" in s for s in result.skipped)


def test_changed_file_is_detected_and_rehashed(library: Library, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("version one")
    old = library.share(str(path)).record
    assert library.is_intact(old.id)
    path.write_text("version two!")
    assert not library.is_intact(old.id)
    result = library.refresh()
    rehashed, dropped = result.rehashed, result.dropped
    assert [r.name for r in rehashed] == ["notes.txt"] and dropped == ()
    assert rehashed[0].id != old.id
    assert [r.id for r in library.contents()] == [rehashed[0].id]


def test_vanished_file_is_dropped(library: Library, tmp_path: Path) -> None:
    path = tmp_path / "gone.txt"
    path.write_text("bye")
    record = library.share(str(path)).record
    path.unlink()
    result = library.refresh()
    assert result.rehashed == () and [r.id for r in result.dropped] == [record.id]
    assert library.contents() == []


def test_file_changing_while_hashed_is_refused(library: Library, tmp_path: Path) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(os.urandom(2 * 1024 * 1024))

    def append_midway(_n: int) -> None:
        with open(path, "ab") as handle:
            handle.write(b"more")

    with pytest.raises(FileChangedError):
        library.share(str(path), progress=append_midway)
    assert library.contents() == []


def test_resolve_by_name_prefix_and_ambiguity(library: Library, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same.txt").write_text("one")
    (tmp_path / "b" / "same.txt").write_text("two")
    one = library.share(str(tmp_path / "a" / "same.txt")).record
    two = library.share(str(tmp_path / "b" / "same.txt")).record
    assert library.resolve(one.id[:10]).id == one.id
    assert library.resolve(two.id).id == two.id
    with pytest.raises(AmbiguousError) as info:
        library.resolve("same.txt")
    assert len(info.value.candidates) == 2
    with pytest.raises(NotFoundError):
        library.resolve("nothing")
    assert library.unshare(one.id[:8]).id == one.id
    assert library.resolve("same.txt").id == two.id


def test_find_chunk_reuses_local_bytes(library: Library, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    (tmp_path / "x.bin").write_bytes(data)
    manifest = library.manifest(library.share(str(tmp_path / "x.bin")).record.id)
    ref = manifest.chunk(1)
    loc = library.find_chunk(ref.sha256)
    assert loc is not None and (loc.offset, loc.length) == (ref.offset, ref.length)
    (tmp_path / "x.bin").write_bytes(data[::-1])
    assert library.find_chunk(ref.sha256) is None


def test_chunks_are_looked_up_a_batch_at_a_time(library: Library, tmp_path: Path) -> None:
    """Before a download, every missing chunk is looked up among the shared files: a few
    queries for thousands of chunks, not one each (counted with SQLite's trace hook)."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1200):
        (folder / f"f{i:04d}").write_bytes(i.to_bytes(4, "little") * 100)
    manifest = library.manifest(library.share(str(folder)).record.id)
    wanted = [ref.sha256 for ref in manifest.chunks()] + ["00" * 32] * 800
    statements: list[str] = []
    library.db.conn.set_trace_callback(statements.append)
    try:
        found = library.find_chunks(wanted)
    finally:
        library.db.conn.set_trace_callback(None)
    assert len(found) == 1200
    loc = found[manifest.chunk(7).sha256]
    assert loc.path.endswith("f0007") and (loc.offset, loc.length) == (0, 400)
    lookups = [s for s in statements if "chunk_index" in s]
    assert len(lookups) <= 6, len(lookups)  # 2,000 hashes in batches of 500, and one probe


def test_an_empty_library_finds_no_chunk_in_one_query(library: Library) -> None:
    statements: list[str] = []
    library.db.conn.set_trace_callback(statements.append)
    assert library.find_chunks(f"{i:064x}" for i in range(5000)) == {}
    library.db.conn.set_trace_callback(None)
    assert len([s for s in statements if "chunk_index" in s]) == 1


def test_bad_paths(library: Library, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        library.share(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="not a regular file"):
        library.share("/dev/null")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(UsageError):
        library.share(str(loop))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no file"):
        library.share(str(tmp_path / "empty"))


def test_an_old_home_drops_its_old_format_contents_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Content IDs are v2 infohashes now: records of the former format (schema 2) name nothing
    any peer knows, and are dropped with one line that says so."""
    home = tmp_path / "old"
    db = Database.open_home(home)
    db.conn.execute(
        "INSERT INTO contents(id, name, kind, size, chunks, root, manifest, added)"
        " VALUES ('ab', 'cat.png', 'file', 3, 1, '/x/cat.png', x'7b7d', 0)"
    )
    db.conn.execute(
        "INSERT INTO downloads(content_id, name, dest, manifest, state, created, updated)"
        " VALUES ('cd', 'dog.png', '/x', x'7b7d', 'paused', 0, 0)"
    )
    db.conn.execute("PRAGMA user_version=2")
    db.close()
    with caplog.at_level(logging.WARNING, logger="swarmshare"):
        db = Database.open_home(home)
    try:
        assert Library(db).contents() == []
        assert db.conn.execute("SELECT count(*) FROM downloads").fetchone()[0] == 0
    finally:
        db.close()
    (line,) = [r.getMessage() for r in caplog.records if "v2 infohashes" in r.getMessage()]
    assert "1 shared content(s) and 1 download(s)" in line


def test_a_schema_3_home_keeps_its_downloads_and_remembers_torrents_from_then_on(
    tmp_path: Path,
) -> None:
    """Schema 4 adds the torrent a download was started from; older rows have none."""
    from swarmshare.store.downloads import DownloadRow, DownloadTable

    home = tmp_path / "old"
    db = Database.open_home(home)
    db.conn.execute("ALTER TABLE downloads DROP COLUMN torrent")  # as schema 3 made it
    db.conn.execute(
        "INSERT INTO downloads(content_id, name, dest, manifest, state, created, updated)"
        " VALUES ('cd', 'dog.png', '/x', x'', 'paused', 0, 0)"
    )
    db.conn.execute("PRAGMA user_version=3")
    db.close()
    db = Database.open_home(home)
    try:
        assert db.conn.execute("PRAGMA user_version").fetchone()[0] == 4
        table = DownloadTable(db)
        assert table.rows() == [DownloadRow("cd", "dog.png", "/x", b"", "paused")]
        table.save(DownloadRow("cd", "dog.png", "/x", b"", "running", torrent=b"magnet:?xt=x"))
        assert table.rows()[0].torrent == b"magnet:?xt=x"
    finally:
        db.close()


def test_scan_finds_files_in_canonical_order_and_skips_what_cannot_be_shared(
    tmp_path: Path,
) -> None:
    """Folders come among the files at their name's place (so the scan's order is the
    manifest's); links to folders, names no content may hold and paths too deep are skipped."""
    from swarmshare.core.manifest import path_key
    from swarmshare.limits import MAX_PATH_DEPTH
    from swarmshare.store.hashing import scan_path

    root = tmp_path / "tree"
    for rel in ["x/a", "x b", "x/c/d", "x-", "a", "x/c e", "C:/f", "ok/C:"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"1")
    deep = root.joinpath(*["d"] * MAX_PATH_DEPTH)
    deep.mkdir(parents=True)
    (deep / "too-deep").write_bytes(b"1")
    (deep.parent / "deep-enough").write_bytes(b"1")
    (root / "dirlink").symlink_to(root / "x")
    _name, _kind, files, skipped = scan_path(str(root))
    found = [f.rel_path for f in files]
    assert found == sorted(found, key=path_key)
    deep_enough = "/".join(["d"] * (MAX_PATH_DEPTH - 1) + ["deep-enough"])
    assert found == ["a", deep_enough, "x/a", "x/c/d", "x/c e", "x b", "x-"]
    assert {s.split(":")[0] for s in skipped} >= {"C", "dirlink", "ok/C"}
    assert any("too deep" in s for s in skipped)
    assert all(f.abs_path == str(root / f.rel_path) for f in files)
