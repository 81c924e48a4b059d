"""Folders of many small files: batches of chunks in one request, descriptors kept open, part
trees synced once; costs counted, not timed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swarmshare.app.download import Destination, Download, EngineDeps
from swarmshare.app.shelf import Shelf
from swarmshare.app.sources import PeerSource, Source
from swarmshare.core.catalog import bitmap_get
from swarmshare.core.location import ChunkLocation
from swarmshare.core.manifest import Manifest
from swarmshare.core.peers import Peer
from swarmshare.core.transfer import State
from swarmshare.net.chunkconn import ChunkClient, ChunkFetchError
from swarmshare.net.client import PeerClient, PeerUnavailable, batch_text
from swarmshare.net.server import DescriptorCache, PeerServer, ServeError, parse_batch
from swarmshare.store.db import Database
from swarmshare.store.library import Library

from conftest import Swarm
from helpers import cli, swarmshare_command, wait_until

FILES = 300


def make_folder(root: Path, files: int, size: int = 1000) -> None:
    for index in range(files):
        folder = root / f"d{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:05d}").write_bytes(bytes([index % 251]) * (size + index % 7))


@dataclass
class Lab:
    server: PeerServer
    client: PeerClient
    manifest: Manifest
    src: Path

    def source(self) -> PeerSource:
        peer = Peer("seeder", "127.0.0.1", self.server.port, "seeder", 30.0, 0.0, 0.0, "v")
        return PeerSource(peer, self.client, self.manifest.content_id, None)


@dataclass
class Origin:
    manifest_value: Manifest
    listed: list[Source] = field(default_factory=list)
    unverified: bool = False

    async def manifest(self) -> Manifest | None:
        return self.manifest_value

    def sources(self, manifest: Manifest) -> list[Source]:
        return list(self.listed)

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        return lambda: None

    def problems(self) -> list[str]:
        return []


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    src = tmp_path / "tree"
    make_folder(src, FILES)
    (src / "d0" / "zero").write_bytes(b"")  # an empty file: no chunk writes it
    db = Database.open_home(tmp_path / "home")
    library = Library(db)
    record = library.share(str(src)).record
    shelf = Shelf(library, tmp_path / "home", db.peer_id(), None, lambda: None)
    shelf.reload()
    try:
        async with (
            PeerServer(shelf, "127.0.0.1", 0) as server,
            PeerClient(local_address="127.0.0.1") as client,
        ):
            yield Lab(server, client, library.manifest(record.id), src)
    finally:
        db.close()


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def test_a_folder_of_small_files_travels_in_a_few_requests(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    loop = asyncio.get_running_loop()
    download = Download(
        lab.manifest.content_id,
        "tree",
        Destination(out),
        Origin(lab.manifest, [lab.source()]),
        EngineDeps(clock=loop),
    )
    before = lab.server.requests
    outcome = await download.run()
    assert outcome.state is State.DONE
    assert _tree(out / "tree") == _tree(lab.src)
    requests = lab.server.requests - before
    # One request per file was the cost before: batches carry up to hundreds of small chunks.
    assert requests <= FILES // 10, requests
    # The descriptors of the served files were opened once each, not once per request.
    assert lab.server.descriptors.opened <= FILES


async def test_batch_reply_is_the_chunks_in_order_and_plain_routes_still_work(lab: Lab) -> None:
    m = lab.manifest
    indices = [5, 6, 7, 100, 3]
    length = sum(m.chunk(i).length for i in indices)
    body = await lab.client.chunks("127.0.0.1", lab.server.port, m.content_id, indices, length)
    view = memoryview(body)
    start = 0
    for index in indices:
        ref = m.chunk(index)
        assert hashlib.sha256(view[start : start + ref.length]).hexdigest() == ref.sha256
        start += ref.length
    one = await lab.client.chunk("127.0.0.1", lab.server.port, m.content_id, 5, m.chunk(5).length)
    assert hashlib.sha256(one).hexdigest() == m.chunk(5).sha256
    # A batch naming a chunk the peer does not have fails as a whole, with the usual code.
    with pytest.raises(PeerUnavailable) as caught:
        await lab.client.chunks("127.0.0.1", lab.server.port, m.content_id, [1, 10**6], 10)
    assert caught.value.reason == "bad_index"


async def test_malformed_batches_are_refused_with_one_clear_error(lab: Lab) -> None:
    http = ChunkClient(local_address=None, idle_timeout=5.0, pool=lab.client.buffers)
    try:
        for bad, code in [
            ("1,,2", "bad_index"),
            ("5-3", "bad_index"),
            ("a", "bad_index"),
            ("0-100000", "bad_index"),
            ("1;2", "bad_index"),
            ("", "not_found"),
        ]:
            path = f"/v1/content/{lab.manifest.content_id}/chunks/{bad}"
            with pytest.raises(ChunkFetchError) as caught:
                await http.get("127.0.0.1", lab.server.port, path, limit=1 << 16)
            assert caught.value.reason == code, (bad, caught.value)
    finally:
        http.close()


def test_batch_text_and_parse_are_inverse() -> None:
    cases = [[3], [1, 2, 3], [5, 9, 10, 11, 2], list(range(0, 256))]
    for indices in cases:
        assert parse_batch(batch_text(indices)) == indices
    assert batch_text([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"
    for bad in ("", ",", "1,", "3-1", "1-2-3", "x", "0-256", "1" * 10):
        with pytest.raises(ServeError):
            parse_batch(bad)


def test_descriptor_cache_is_bounded_and_never_reads_a_replaced_file(tmp_path: Path) -> None:
    paths: list[str] = []
    for index in range(10):
        (tmp_path / f"f{index}").write_bytes(bytes([index]) * 100)
        paths.append(str(tmp_path / f"f{index}"))
    cache = DescriptorCache(4)
    for _round in range(3):
        for index, name in enumerate(paths[:4]):
            assert cache.read(ChunkLocation(name, 0, 100, "")) == bytes([index]) * 100
    assert cache.opened == 4  # kept open between reads
    for name in paths:
        cache.read(ChunkLocation(name, 0, 10, ""))
    open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    cache.close()
    if open_now is not None:
        assert len(os.listdir("/proc/self/fd")) == open_now - 4  # at most 4 were open
    # A file replaced on disk (a new inode at the same path) is read anew.
    replaced = tmp_path / "f0.new"
    replaced.write_bytes(b"n" * 100)
    cache.read(ChunkLocation(paths[0], 0, 100, ""))
    os.replace(replaced, paths[0])
    assert cache.read(ChunkLocation(paths[0], 0, 100, "")) == b"n" * 100
    cache.close()


def _recorded(record: Path) -> set[int]:
    try:
        obj = json.loads(record.read_text())
        bitmap = base64.b64decode(obj["have"])
    except (OSError, ValueError, KeyError):
        return set()
    return {i for i in range(obj["chunks"]) if bitmap_get(bitmap, i)}


def test_folder_download_killed_then_rerun_keeps_every_verified_file(
    swarm: Swarm, tmp_path: Path
) -> None:
    """SIGKILL during a folder's download (at a chunk count read from its resume record), then
    the same get again: the folder is right, and no chunk verified before was fetched again."""
    src = tmp_path / "photos"
    make_folder(src, 2000, size=4000)
    (src / "empty").mkdir()
    (src / "empty" / "a").write_bytes(b"")  # no chunk: created only when the part is renamed
    (seeder,) = [swarm.start(2, "--upload-limit", "1M")]
    assert seeder.cli("share", str(src)).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    record = out / "photos.part.swarmshare"
    first_home = tmp_path / "h1"
    args = swarmshare_command(
        first_home, "get", "photos", "-o", str(out), "--quiet", *swarm.discovery()
    )
    first = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(_recorded(record)) >= 300, timeout=60, interval=0.005)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    claimed = _recorded(record)
    assert 300 <= len(claimed) < 2000
    assert not (out / "photos").exists(), "killed before the end: no final folder yet"
    # The rerun (from another home: the part and its record beside DEST are what resume uses).
    home = tmp_path / "h2"
    proc = cli(home, "get", "photos", "-o", str(out), "--json", "--wait", "30", *swarm.discovery())
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert _tree(out / "photos") == _tree(src)
    assert not record.exists() and not (out / "photos.part").exists()
    assert summary["resumed_chunks"] >= len(claimed)
    log = cli(home, "log", "--json", "--limit", "100000")
    fetched = [
        row["chunk"]
        for row in json.loads(log.stdout)
        if row["direction"] == "down" and row["result"] == "ok"
    ]
    assert not set(fetched) & claimed
    assert len(fetched) == len(set(fetched)) == summary["chunks_total"] - summary["resumed_chunks"]
