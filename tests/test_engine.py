"""The download engine in-process: a real peer server and client on loopback, a fake clock.

The middle tier: no processes, real sockets and files; time that matters to the engine (the
wait for a holder) is a fake clock the test moves, so hours of patience take no time at all.
Pause and cancel are checked on whatever Python runs the suite (3.11 and 3.13 in CI).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from swarmshare.app.download import Destination, Download, EngineDeps
from swarmshare.app.shelf import Shelf
from swarmshare.app.sources import PeerSource, Source, SwarmOrigin
from swarmshare.app.swarm import Swarm
from swarmshare.core.manifest import ChunkRef, Manifest
from swarmshare.core.peers import Peer
from swarmshare.core.transfer import MOVES, BadMove, Outcome, PauseReason, State, check_move
from swarmshare.net.chunkconn import Buffer
from swarmshare.net.client import PeerClient
from swarmshare.net.server import PeerServer
from swarmshare.store.db import Database
from swarmshare.store.library import Library

from helpers import write_test_file

MIB = 1 << 20


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, Callable[[], None], list[bool]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        cancelled = [False]
        heapq.heappush(self._timers, (when, next(self._seq), callback, cancelled))
        return _Handle(cancelled)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now:
            _, _, callback, cancelled = heapq.heappop(self._timers)
            if not cancelled[0]:
                callback()

    @property
    def armed(self) -> int:
        return sum(1 for t in self._timers if not t[3][0])


@dataclass
class _Handle:
    cancelled: list[bool]

    def cancel(self) -> None:
        self.cancelled[0] = True


@dataclass
class GatedSource:
    """A real peer source that lets a chunk through only when the test opens the gate."""

    inner: PeerSource
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    fetched: int = 0
    key: str = "gated"
    label: str = "127.0.0.1"
    version: object = 0

    def holds(self, index: int) -> bool:
        return True

    async def fetch(self, ref: ChunkRef) -> Buffer:
        await self.gate.acquire()
        data = await self.inner.fetch(ref)
        self.fetched += 1
        return data

    def release(self, buffer: Buffer) -> None:
        self.inner.release(buffer)


@dataclass
class ScriptedOrigin:
    """An origin whose sources the test sets."""

    manifest_value: Manifest | None
    listed: list[Source] = field(default_factory=list)
    unverified: bool = False
    wakes: list[Callable[[], None]] = field(default_factory=list)

    async def manifest(self) -> Manifest | None:
        return self.manifest_value

    def sources(self, manifest: Manifest) -> list[Source]:
        return list(self.listed)

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        self.wakes.append(wake)
        return lambda: self.wakes.remove(wake)

    def problems(self) -> list[str]:
        return ["peer 'x' at 127.0.0.9 went away"]


@dataclass
class Lab:
    server: PeerServer
    client: PeerClient
    manifest: Manifest
    original: Path
    library: Library

    def source(self) -> PeerSource:
        peer = Peer(
            peer_id="seeder",
            address="127.0.0.1",
            port=self.server.port,
            name="seeder",
            interval=30.0,
            first_seen=0.0,
            last_seen=0.0,
            announced_version="v",
        )
        return PeerSource(peer, self.client, self.manifest.content_id, None)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    original = tmp_path / "seed" / "movie.bin"
    original.parent.mkdir()
    write_test_file(original, 3 * MIB, seed=5)  # 48 chunks of 64 KiB
    db = Database.open_home(tmp_path / "home")
    library = Library(db)
    record = library.share(str(original)).record
    shelf = Shelf(library, tmp_path / "home", db.peer_id(), None, lambda: None)
    shelf.reload()
    try:
        async with (
            PeerServer(shelf, "127.0.0.1", 0) as server,
            PeerClient(local_address="127.0.0.1") as client,
        ):
            yield Lab(server, client, library.manifest(record.id), original, library)
    finally:
        db.close()


def _download(
    lab: Lab, origin: ScriptedOrigin, out: Path, clock: FakeClock, **kw: object
) -> Download:
    return Download(
        lab.manifest.content_id,
        "movie.bin",
        Destination(out),
        origin,
        EngineDeps(clock=clock),
        **kw,  # type: ignore[arg-type]
    )


async def _until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until `predicate` holds (the test's own timeout bounds it)."""
    while not predicate():  # noqa: ASYNC110 - the engine's own events are what is tested
        await asyncio.sleep(0.001)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_whole_download_in_process(lab: Lab, tmp_path: Path) -> None:
    clock = FakeClock()
    origin = ScriptedOrigin(lab.manifest, [lab.source()])
    download = _download(lab, origin, tmp_path / "out", clock)
    (tmp_path / "out").mkdir()
    outcome = await download.run()
    assert outcome.state is State.DONE
    assert _sha(tmp_path / "out" / "movie.bin") == _sha(lab.original)
    assert download.stats.chunks_done == lab.manifest.chunk_total


async def test_pause_is_acknowledged_and_nothing_is_written_after(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    clock = FakeClock()
    gated = GatedSource(lab.source())
    origin = ScriptedOrigin(lab.manifest, [gated])
    download = _download(lab, origin, out, clock)
    run = asyncio.ensure_future(download.run())
    for _ in range(5):
        gated.gate.release()
    await _until(lambda: download.stats.chunks_done >= 5)
    for _ in range(20):
        gated.gate.release()  # more chunks on their way while the pause comes in
    download.stop(Outcome(State.PAUSED, "paused", PauseReason.USER))
    outcome = await run
    assert outcome.state is State.PAUSED and outcome.pause is PauseReason.USER
    part = out / "movie.bin.part"
    frozen = _sha(part)
    assert download.part is not None and download.part.closed
    for _ in range(50):
        gated.gate.release()
        await asyncio.sleep(0)
    assert _sha(part) == frozen
    # Resume: a new run keeps every verified chunk and fetches only the rest.
    download.reset(None, False)
    gated.gate = asyncio.Semaphore(1000)
    fetched_before = gated.fetched
    outcome = await download.run()
    assert outcome.state is State.DONE
    assert download.stats.resumed_chunks >= 5
    assert (
        gated.fetched - fetched_before == lab.manifest.chunk_total - download.stats.resumed_chunks
    )
    assert _sha(out / "movie.bin") == _sha(lab.original)


async def test_cancel_through_a_task_cancellation_still_closes_cleanly(
    lab: Lab, tmp_path: Path
) -> None:
    """Cancelling the task (as asyncio.run does on Ctrl-C) ends the run as a pause, cleanly."""
    out = tmp_path / "out"
    out.mkdir()
    gated = GatedSource(lab.source())
    download = _download(lab, ScriptedOrigin(lab.manifest, [gated]), out, FakeClock())
    run = asyncio.ensure_future(download.run())
    for _ in range(3):
        gated.gate.release()
    await _until(lambda: download.stats.chunks_done >= 3)
    run.cancel()
    (ended,) = await asyncio.gather(run, return_exceptions=True)
    assert isinstance(ended, asyncio.CancelledError)  # the cancellation is not swallowed
    assert download.state is State.PAUSED
    assert download.part is not None and download.part.closed


async def test_no_holder_for_the_wait_pauses_on_the_fake_clock(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    clock = FakeClock()
    origin = ScriptedOrigin(None)  # nobody can send the manifest
    download = _download(lab, origin, out, clock, hold_wait=30.0)
    run = asyncio.ensure_future(download.run())
    await _until(lambda: clock.armed > 0)
    assert not run.done()
    clock.advance(29.0)
    await asyncio.sleep(0)
    assert not run.done()
    clock.advance(1.5)
    outcome = await run
    assert outcome.state is State.PAUSED and outcome.pause is PauseReason.NO_HOLDER
    assert "within 30 s" in outcome.reason and "127.0.0.9 went away" in outcome.reason


async def test_holder_leaving_mid_download_pauses_after_the_wait(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    clock = FakeClock()
    gated = GatedSource(lab.source())
    origin = ScriptedOrigin(lab.manifest, [gated])
    download = _download(lab, origin, out, clock, hold_wait=10.0)
    run = asyncio.ensure_future(download.run())
    for _ in range(4):
        gated.gate.release()
    await _until(lambda: download.stats.chunks_done >= 4)
    origin.listed = []  # the only holder leaves
    for wake in origin.wakes:
        wake()
    await _until(lambda: download.state is State.WAITING)
    clock.advance(10.5)
    outcome = await run
    assert outcome.state is State.PAUSED and outcome.pause is PauseReason.NO_HOLDER
    assert "last" in outcome.reason and (out / "movie.bin.part").exists()


def test_state_table_allows_only_its_moves() -> None:
    for old in State:
        for new in State:
            if new is old or new in MOVES[old]:
                assert check_move(old, new) is new
            else:
                with pytest.raises(BadMove):
                    check_move(old, new)
    assert not MOVES[State.DONE] and not MOVES[State.CANCELLED]
    assert State.FINDING in MOVES[State.PAUSED]


class HoldersOnly:
    """The part of a swarm an origin reads: who holds a content (and whom it discredits)."""

    def __init__(self, holders: list[Peer]) -> None:
        self._holders = holders
        self.listeners: list[Callable[[object], None]] = []
        self.catalog_listeners: list[Callable[[object], None]] = []
        self.discredited: list[str] = []

    def holders(self, content_id: str) -> list[tuple[Peer, object]]:
        return [(peer, None) for peer in self._holders]

    def discredit(self, peer: Peer, content_id: str) -> None:
        self.discredited.append(peer.address)


def _peer(name: str, address: str, port: int) -> Peer:
    return Peer(
        peer_id=name,
        address=address,
        port=port,
        name=name,
        interval=30.0,
        first_seen=0.0,
        last_seen=0.0,
        announced_version="v",
    )


async def test_a_silent_holder_does_not_hold_up_the_manifest(lab: Lab) -> None:
    """Holders are asked at once: a peer that never answers (first in line) does not delay
    the manifest another holder can send now (asked one after another, this would hang: the
    client here waits an hour for a silent peer)."""
    silent_connections: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent_connections.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    silent_port = server.sockets[0].getsockname()[1]
    holders = HoldersOnly(
        [_peer("silent", "127.0.0.1", silent_port), _peer("honest", "127.0.0.1", lab.server.port)]
    )
    try:
        async with PeerClient(
            local_address="127.0.0.1", idle_timeout=3600, deadline_base_seconds=3600
        ) as client:
            origin = SwarmOrigin(cast(Swarm, holders), client, lab.manifest.content_id)
            manifest = await origin.manifest()
        assert manifest is not None and manifest.content_id == lab.manifest.content_id
        assert silent_connections, "the silent peer was asked too"
    finally:
        for writer in silent_connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_an_invalid_manifest_is_reported_with_who_and_why(lab: Lab) -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"not": "a manifest"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(liar, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    holders = HoldersOnly([_peer("liar", "127.0.0.1", port)])
    try:
        async with PeerClient(local_address="127.0.0.1") as client:
            origin = SwarmOrigin(cast(Swarm, holders), client, lab.manifest.content_id)
            assert await origin.manifest() is None
        (problem,) = origin.problems()
        assert "peer 'liar' at 127.0.0.1" in problem and lab.manifest.content_id[:12] in problem
        assert holders.discredited == ["127.0.0.1"]
    finally:
        server.close()
        await server.wait_closed()


async def test_pause_mid_batches_of_small_files(tmp_path: Path) -> None:
    """A folder of small files travels in batches; a pause in the middle is acknowledged,
    nothing is written after it, and the rest comes on resume."""
    album = tmp_path / "seed" / "album"
    for index in range(300):
        (album / f"d{index % 10}").mkdir(parents=True, exist_ok=True)
        write_test_file(album / f"d{index % 10}" / f"f{index:03}.txt", 4096, seed=index)
    db = Database.open_home(tmp_path / "home")
    library = Library(db)
    record = library.share(str(album)).record
    shelf = Shelf(library, tmp_path / "home", db.peer_id(), None, lambda: None)
    shelf.reload()
    out = tmp_path / "out"
    out.mkdir()
    try:
        async with (
            PeerServer(shelf, "127.0.0.1", 0, upload_bytes_per_second=200_000) as server,
            PeerClient(local_address="127.0.0.1") as client,
        ):
            lab = Lab(server, client, library.manifest(record.id), album, library)
            source = lab.source()
            download = _download(lab, ScriptedOrigin(lab.manifest, [source]), out, FakeClock())
            run = asyncio.ensure_future(download.run())
            await _until(lambda: download.stats.chunks_done >= 20 or run.done())
            assert not run.done(), "the throttled folder was already complete"
            download.stop(Outcome(State.PAUSED, "paused", PauseReason.USER))
            outcome = await run
            assert outcome.state is State.PAUSED
            assert download.part is not None and download.part.closed
            written = {p: p.read_bytes() for p in (out / "album.part").rglob("*") if p.is_file()}
            for _ in range(200):  # turns of the loop in which a writer not stopped would write
                await asyncio.sleep(0)
            after = {p: p.read_bytes() for p in (out / "album.part").rglob("*") if p.is_file()}
            assert after == written
            done_at_pause = download.stats.chunks_done
            download.reset(None, False)
            assert (await download.run()).state is State.DONE
            assert download.stats.resumed_chunks >= done_at_pause
    finally:
        db.close()
    assert sorted(p.relative_to(out / "album") for p in (out / "album").rglob("*.txt")) == sorted(
        p.relative_to(album) for p in album.rglob("*.txt")
    )
