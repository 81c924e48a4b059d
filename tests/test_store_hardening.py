"""The home on a shared machine and a hostile LAN: a damaged database, the files' modes, a
flooded transfer log, part files left by refused downloads, files changing while shared, and
names that would collide on other file systems. Real files, real SQLite, real processes."""

from __future__ import annotations

import json
import os
import socket
import stat
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from swarmshare.app.translog import TransferLog
from swarmshare.core import bencode, merkle
from swarmshare.core.chunking import chunk_count, chunk_size_for
from swarmshare.core.manifest import Manifest, ManifestError, decode_manifest, file_entry
from swarmshare.errors import StoreError
from swarmshare.store.db import Database
from swarmshare.store.library import Library, RefreshResult
from swarmshare.store.partfile import PartFile

from conftest import Swarm
from helpers import assert_one_line_error, cli

MIB = 1 << 20

# ---- 15.14: a damaged database ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_database_is_one_clear_line_with_the_way_out(tmp_path: Path, damage: str) -> None:
    home = tmp_path / "home"
    shared = tmp_path / "f.txt"
    shared.write_text("words")
    assert cli(home, "share", str(shared)).returncode == 0
    db_file = home / "swarmshare.db"
    db = Database.open_home(home)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    if damage == "garbage":
        db_file.write_bytes(bytes(range(256)) * 40)
    else:
        db_file.write_bytes(db_file.read_bytes()[:5000])
    for suffix in ("-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    run = ["run", "--bind", "127.0.0.2", "--port", "0", "--control-port", "0"]
    for args in (["library"], ["share", str(shared)], run):
        proc = cli(home, *args)
        assert_one_line_error(proc, str(db_file), "move it aside", "share")
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    db_file.rename(tmp_path / "swarmshare.db.damaged")  # the way out the message gives
    assert cli(home, "share", str(shared)).returncode == 0
    assert [i["name"] for i in json.loads(cli(home, "library", "--json").stdout)] == ["f.txt"]


# ---- 15.15: the home is this user's alone ------------------------------------------------------


def test_home_and_its_files_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shared = tmp_path / "f.txt"
    shared.write_text("words")
    old = os.umask(0o022)
    try:
        assert cli(home, "share", str(shared)).returncode == 0
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        db = Database.open_home(home)  # keeps -wal and -shm in place while open
        try:
            db.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('x', 'y')")
            names = {p.name for p in home.iterdir()}
            assert {"swarmshare.db", "swarmshare.db-wal", "swarmshare.db-shm"} <= names
            for path in home.iterdir():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        finally:
            db.close()
        # A home made by an older version (0755, 0644 files) is tightened on first use.
        home.chmod(0o755)
        for path in home.iterdir():
            path.chmod(0o644)
        assert cli(home, "library").returncode == 0
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for path in home.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        os.umask(old)


def test_daemon_home_files_are_private(swarm: Swarm) -> None:
    old = os.umask(0o022)
    try:
        peer = swarm.start(2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(peer.home.stat().st_mode) == 0o700
    for path in peer.home.rglob("*"):
        if path.name != "run.log":  # the test's own log of the daemon's output
            want = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) == want, path


# ---- 15.6: the transfer log is bounded ---------------------------------------------------------


def test_transfer_log_keeps_the_newest_rows_up_to_its_cap(tmp_path: Path) -> None:
    db = Database.open_home(tmp_path / "home")
    try:
        log = TransferLog(db, max_rows=500)
        for batch in range(8):
            for index in range(250):
                log.add("up", "127.0.0.9", "c" * 64, "f.bin", batch * 250 + index, 10, "ok")
            log.flush()
        assert db.transfer_rows() == 500
        chunks = [row["chunk"] for row in db.transfers(10_000)]
        assert chunks == list(range(1500, 2000))  # the oldest were dropped
    finally:
        db.close()


def test_repeated_refusals_are_one_row_with_a_count(tmp_path: Path) -> None:
    db = Database.open_home(tmp_path / "home")
    now = [1000.0]
    try:
        log = TransferLog(db, refusal_window=10.0, clock=lambda: now[0])
        for index in range(3000):
            log.add("up", "127.0.0.9", "a" * 64, "", index, 0, "unknown_content")
            if index % 700 == 0:
                log.flush()  # the count of a row already written grows
        log.add("up", "127.0.0.9", "b" * 64, "", 0, 0, "unknown_content")
        log.add("up", "127.0.0.8", "a" * 64, "", 0, 0, "unknown_content")
        now[0] += 11  # the window closed: the same refusal again is a new row
        log.add("up", "127.0.0.9", "a" * 64, "", 0, 0, "unknown_content")
        log.add("up", "127.0.0.9", "a" * 64, "", 1, 0, "unknown_content")
        log.flush()
        rows = [(r["peer"], r["content_id"][0], r["count"]) for r in db.transfers()]
        assert rows == [
            ("127.0.0.9", "a", 3000),
            ("127.0.0.9", "b", 1),
            ("127.0.0.8", "a", 1),
            ("127.0.0.9", "a", 2),
        ]
    finally:
        db.close()


def _pipelined_chunk_requests(address: str, port: int, content_id: str, count: int) -> int:
    """Send `count` chunk requests on one kept-alive connection; the replies read back."""
    request = f"GET /v1/content/{content_id}/chunk/0 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    replies = 0
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.connect(("127.0.0.2", port))
        sock.settimeout(30)
        data = b""
        for start in range(0, count, 100):
            sock.sendall(request * min(100, count - start))
            while replies < min(start + 100, count):
                data += sock.recv(65536)
                replies += data.count(b"HTTP/1.1 ")
                data = data[data.rfind(b"HTTP/1.1 ") + 1 :] if b"HTTP/1.1 " in data else data
    return replies


def test_flood_of_requests_for_unknown_content_writes_a_row_not_a_row_each(
    swarm: Swarm,
) -> None:
    peer = swarm.start(2)
    port = int(peer.json("status")["port"])
    unknown = "e" * 64
    assert _pipelined_chunk_requests("127.0.0.9", port, unknown, 2000) == 2000
    rows = peer.json("log", "--limit", "100000")
    assert isinstance(rows, list)
    flood = [r for r in rows if r["peer"] == "127.0.0.9"]
    assert sum(r["count"] for r in flood) == 2000
    assert len(flood) <= 2  # one row per window (a window may close during the flood)


# ---- 15.16: refused downloads leave nothing new; names that collide elsewhere -----------------


def _huge_manifest(free: int, first_chunk: bytes) -> Manifest:
    """One file larger than the free space left (a sparse part costs nothing), whose first
    chunk is `first_chunk`."""
    size = free + 64 * MIB
    chunk_size = chunk_size_for(size)
    assert len(first_chunk) == chunk_size
    first = merkle.data_root(first_chunk, merkle.piece_leaves(chunk_size)).hex()
    digests = [first] + ["0" * 64] * (chunk_count(size, chunk_size) - 1)
    return Manifest.build("huge.bin", "file", [file_entry("huge.bin", size, digests)])


def test_download_refused_for_disk_space_leaves_no_part_behind(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    if free > 8 * 1024**4:
        pytest.skip("more free space than a manifest may describe")
    chunk = os.urandom(chunk_size_for(free + 64 * MIB))
    manifest = _huge_manifest(free, chunk)
    part = PartFile(tmp_path / "huge.bin", manifest)
    with pytest.raises(StoreError, match="not enough disk space"):
        part.open()
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    # A part holding resumable data from an earlier run is kept, data and record both.
    earlier = PartFile(tmp_path / "huge.bin", manifest)
    with open(earlier.part, "wb") as handle:
        handle.write(chunk)
    earlier.save_record({0})
    with pytest.raises(StoreError, match="not enough disk space"):
        PartFile(tmp_path / "huge.bin", manifest).open()
    with open(earlier.part, "rb") as handle:
        assert handle.read(len(chunk)) == chunk
    assert earlier.record.exists()


def test_folder_names_differing_only_by_case_or_normalization_are_refused(
    tmp_path: Path,
) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "café.txt")
    for pair in (["Readme.txt", "README.txt"], [nfc, nfd], ["Docs/a.txt", "docs/b.txt"]):
        entries = [file_entry(path, 3, ["0" * 64]) for path in pair]
        with pytest.raises(ManifestError, match="differ only by case or Unicode normalization"):
            Manifest.build("top", "dir", entries)
        tree: dict[bytes, Any] = {}
        for path in pair:
            *folders, leaf = path.encode().split(b"/")
            node = tree
            for folder in folders:
                node = node.setdefault(folder, {})
            node[leaf] = {b"": {b"length": 3, b"pieces root": bytes(32)}}
        info = {b"file tree": tree, b"meta version": 2, b"name": b"top", b"piece length": 65536}
        raw = bencode.encode({b"info": info, b"piece layers": {}})
        with pytest.raises(ManifestError, match="differ only by case"):
            decode_manifest(raw)
    assert Manifest.build("top", "dir", [file_entry("a.txt", 3, ["0" * 64])])


def test_share_names_the_two_colliding_names(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "Cat.jpg").write_text("one")
    (folder / "cat.jpg").write_text("two")
    (folder / "dog.jpg").write_text("three")
    proc = cli(tmp_path / "home", "share", str(folder))
    assert_one_line_error(proc, "'Cat.jpg' and 'cat.jpg'", "differ only by case")
    (folder / "cat.jpg").rename(folder / "kitten.jpg")
    assert cli(tmp_path / "home", "share", str(folder)).returncode == 0


# ---- 15.13: a shared file changing while the refresh hashes it ---------------------------------


def test_file_still_being_written_at_refresh_is_unsettled_then_rehashed(tmp_path: Path) -> None:
    db = Database.open_home(tmp_path / "home")
    try:
        library = Library(db)
        path = tmp_path / "video.bin"
        path.write_bytes(os.urandom(2 * MIB))
        old = library.share(str(path)).record
        with open(path, "ab") as handle:
            handle.write(b"the writer starts")
        assert not library.is_intact(old.id)

        def still_writing(_n: int) -> None:
            with open(path, "ab") as handle:
                handle.write(b"and goes on")

        result = library.refresh(progress=still_writing)
        assert result == RefreshResult(unsettled=(old,))
        assert library.resolve("video.bin") == old  # not forgotten: unshare still finds it
        assert not library.is_intact(old.id)  # and not served: its files no longer match

        result = library.refresh()  # the writer is done: the file settled
        assert [r.name for r in result.rehashed] == ["video.bin"]
        assert not result.dropped and not result.unsettled
        new = result.rehashed[0]
        assert new.id != old.id and library.is_intact(new.id)
        assert [r.id for r in library.contents()] == [new.id]
        assert library.unshare("video.bin") == new
    finally:
        db.close()
