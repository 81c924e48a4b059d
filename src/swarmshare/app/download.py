"""One swarm download: feeds the scheduler, fetches chunks from many peers at once, verifies
each, writes it into the part file, and finally puts the file in place and into the library.

The scheduler (core) decides; this adapter owns the sockets, the tasks, the clock and the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from swarmshare.app.swarm import Swarm
from swarmshare.app.translog import TransferLog
from swarmshare.core.catalog import bitmap_get, bitmap_new, bitmap_set
from swarmshare.core.manifest import ChunkRef, Manifest
from swarmshare.core.peers import Peer
from swarmshare.core.scheduler import Request, Scheduler
from swarmshare.errors import (
    RemoteProtocolError,
    StoreError,
    SwarmshareError,
    UsageError,
)
from swarmshare.limits import RESUME_RECORD_INTERVAL_SECONDS
from swarmshare.net.client import PeerClient, PeerUnavailable
from swarmshare.store.hashing import FileStat, ScannedFile
from swarmshare.store.library import Library
from swarmshare.store.partfile import PartFile

RATE_WINDOW_SECONDS = 2.0
WAKE_SECONDS = 0.25
FLUSH_EVERY_BYTES = 128 * 1024 * 1024


@dataclass
class Stats:
    """How a download is going, for progress bars, status and the final summary."""

    content_id: str
    name: str
    dest: str
    state: str = "starting"
    total_bytes: int = 0
    done_bytes: int = 0
    fetched_bytes: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    local_chunks: int = 0
    resumed_chunks: int = 0
    retried: int = 0
    bad_chunks: int = 0
    peers_in_use: int = 0
    peers_known: int = 0
    rate: float = 0.0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str = ""
    by_peer: dict[str, int] = field(default_factory=dict)
    dropped_peers: list[str] = field(default_factory=list)
    unverified: bool = False

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, if it can be told."""
        left = self.total_bytes - self.done_bytes
        return left / self.rate if self.rate > 0 and left > 0 else None

    def as_json(self) -> dict[str, object]:
        """Plain JSON for the control API and `get --json`."""
        end = self.finished or time.time()
        return {
            "id": self.content_id,
            "name": self.name,
            "dest": self.dest,
            "state": self.state,
            "total_bytes": self.total_bytes,
            "done_bytes": self.done_bytes,
            "fetched_bytes": self.fetched_bytes,
            "chunks_total": self.chunks_total,
            "chunks_done": self.chunks_done,
            "local_chunks": self.local_chunks,
            "resumed_chunks": self.resumed_chunks,
            "retried": self.retried,
            "bad_chunks": self.bad_chunks,
            "peers_in_use": self.peers_in_use,
            "peers_known": self.peers_known,
            "rate": self.rate,
            "eta": self.eta,
            "seconds": end - self.started,
            "error": self.error,
            "by_peer": dict(self.by_peer),
            "dropped_peers": list(self.dropped_peers),
            "verified": self.state == "done" and not self.unverified,
            "legacy": self.unverified,
        }


class Download:
    """Fetch one content from the swarm into `dest`. `await run()`; SwarmshareError on failure."""

    def __init__(
        self,
        content_id: str,
        name: str,
        dest: Path,
        *,
        swarm: Swarm,
        client: PeerClient,
        library: Library | None = None,
        translog: TransferLog | None = None,
        force: bool = False,
        manifest: Manifest | None = None,
        stall_timeout: float | None = 30.0,
        chunk_timeout: float | None = None,
        on_change: Callable[[Download], None] | None = None,
        on_held: Callable[[Download], None] | None = None,
    ) -> None:
        self.content_id = content_id
        self.dest = dest
        self.swarm = swarm
        self.client = client
        self.library = library
        self.translog = translog
        self.force = force
        self.manifest = manifest
        self.stall_timeout = stall_timeout
        self.chunk_timeout = chunk_timeout
        self.stats = Stats(content_id, name, str(dest))
        self.part: PartFile | None = None
        self.bitmap: bytearray | None = None
        self._on_change = on_change or (lambda _d: None)
        self._on_held = on_held or (lambda _d: None)
        self._wake = asyncio.Event()
        self._results: deque[tuple[Request, str, int, float]] = deque()
        self._tasks: dict[Request, asyncio.Task[None]] = {}
        self._peers: dict[str, Peer] = {}
        self._peer_keys: dict[str, tuple[object, ...]] = {}
        self._samples: deque[tuple[float, int]] = deque()
        self._flush: asyncio.Future[None] | None = None
        self._works: set[asyncio.Future[bool]] = set()
        self._unflushed = 0

    # ---- the whole download ----------------------------------------------------------------

    async def run(self) -> Stats:
        """Download, verify, and put the content in place; returns the final stats."""
        self.swarm.listeners.append(self._poke)
        self.swarm.catalog_listeners.append(self._poke)
        try:
            await self._run()
            self.stats.state = "done"
            return self.stats
        except asyncio.CancelledError:
            if self.stats.state not in ("cancelled", "paused"):
                self.stats.state = "paused"
            raise
        except SwarmshareError as exc:
            self.stats.state = "failed"
            self.stats.error = str(exc)
            raise
        finally:
            self.stats.finished = time.time()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks.clear()
            # Hashing and writing run in threads, which cannot be cancelled: let them end
            # before the part file closes (a write into a closed and reused descriptor would
            # land in some other file).
            await asyncio.gather(*self._works, return_exceptions=True)
            await self._flushed()  # never close the part file under a running flush
            self._save_record(force=True)
            if self.part is not None:
                self.part.close()
            with contextlib.suppress(ValueError):
                self.swarm.listeners.remove(self._poke)
            with contextlib.suppress(ValueError):
                self.swarm.catalog_listeners.remove(self._poke)
            self._on_change(self)

    async def _run(self) -> None:
        if self.manifest is None:
            self.stats.state = "finding peers"
            self._on_change(self)
            self.manifest = await self._fetch_manifest()
        manifest = self.manifest
        self.stats.name = manifest.name
        self.stats.total_bytes = manifest.total_size
        self.stats.chunks_total = manifest.chunk_total
        if await self._already_there(manifest):
            return
        if self.dest.exists() and not self.force:
            raise UsageError(f"{self.dest} exists and differs; use --force to replace it")
        self.part = PartFile(self.dest, manifest)
        claimed = await asyncio.to_thread(self.part.open)
        have = await asyncio.to_thread(self.part.verify, claimed) if claimed else set()
        self.stats.resumed_chunks = len(have)
        self.bitmap = bitmap_new(manifest.chunk_total)
        for index in have:
            bitmap_set(self.bitmap, index)
        self._count_done(have)
        have |= await self._reuse_local(manifest, have)
        self.stats.state = "downloading"
        self._on_change(self)
        if len(have) < manifest.chunk_total:
            await self._swarm_loop(manifest, have)
        self.stats.state = "finishing"
        self._save_record(force=True)
        await self._flushed()
        files = await asyncio.to_thread(self.part.finish, self.force)
        self._complete(manifest, files)

    async def _fetch_manifest(self) -> Manifest:
        waited = 0.0
        while True:
            for peer, _item in self.swarm.holders(self.content_id):
                try:
                    return await self.client.manifest(peer.address, peer.port, self.content_id)
                except (PeerUnavailable, RemoteProtocolError):
                    continue
            if self.stall_timeout is not None and waited >= self.stall_timeout:
                raise SwarmshareError(
                    f"no peer could send the manifest of {self.stats.name}"
                    f" ({self.content_id[:12]}) within {self.stall_timeout:.0f} s"
                )
            await self.swarm.wait_updated(1.0)
            waited += 1.0

    async def _already_there(self, manifest: Manifest) -> bool:
        """An identical DEST is a finished download: nothing is fetched."""
        if manifest.kind != "file" or not self.dest.is_file():
            return False
        if self.dest.stat().st_size != manifest.total_size:
            return False

        def same() -> bool:
            with open(self.dest, "rb") as handle:
                for ref in manifest.chunks():
                    data = os.pread(handle.fileno(), ref.length, ref.offset)
                    if hashlib.sha256(data).hexdigest() != ref.sha256:
                        return False
            return True

        if not await asyncio.to_thread(same):
            return False
        self.stats.local_chunks = manifest.chunk_total
        self.stats.done_bytes = manifest.total_size
        self.stats.chunks_done = manifest.chunk_total
        files = [
            ScannedFile(manifest.name, str(self.dest.resolve()), FileStat.of(self.dest.stat()))
        ]
        self._complete(manifest, files)
        return True

    async def _reuse_local(self, manifest: Manifest, have: set[int]) -> set[int]:
        """Copy chunks that local files already hold (an old DEST, shared files) into the part."""
        assert self.part is not None
        sources: list[tuple[ChunkRef, str, int]] = []
        old_dest = str(self.dest) if manifest.kind == "file" and self.dest.is_file() else None
        for ref in manifest.chunks():
            if ref.index in have:
                continue
            if old_dest is not None:
                sources.append((ref, old_dest, ref.offset))
            if self.library is not None:
                found = self.library.find_chunk(ref.sha256)
                if found is not None and found.length == ref.length:
                    sources.append((ref, found.path, found.offset))
        if not sources:
            return set()
        part = self.part

        def copy() -> set[int]:
            got: set[int] = set()
            for ref, path, offset in sources:
                if ref.index in got:
                    continue
                try:
                    with open(path, "rb") as handle:
                        data = os.pread(handle.fileno(), ref.length, offset)
                except OSError:
                    continue
                if part.write_if_valid(ref, data):
                    got.add(ref.index)
            return got

        got = await asyncio.to_thread(copy)
        assert self.bitmap is not None
        for index in got:
            bitmap_set(self.bitmap, index)
        self.stats.local_chunks = len(got)
        self._count_done(got)
        return got

    # ---- the swarm loop --------------------------------------------------------------------

    async def _swarm_loop(self, manifest: Manifest, have: set[int]) -> None:
        loop = asyncio.get_running_loop()
        sched = Scheduler(manifest.chunk_lengths(), have, timeout=self.chunk_timeout)
        stalled_since: float | None = None
        last_save = loop.time()
        self._sync_peers(sched)
        while not sched.done:
            now = loop.time()
            for request in sched.tick(now):
                self._cut(request, "timeout")
            for request in sched.take_cancels():
                self._cut(request, "cancelled")
            for request in sched.next_requests(now):
                self._start(manifest, request)
            for request in sched.take_cancels():
                self._cut(request, "cancelled")
            self.stats.retried = sched.retries
            self.stats.peers_in_use = len({r.peer for r in self._tasks})
            self.stats.peers_known = len(self._peers)
            if not self._tasks:
                stalled_since = stalled_since if stalled_since is not None else now
                waiting = now - stalled_since
                if self.stall_timeout is not None and waiting > self.stall_timeout:
                    missing = sched.missing
                    raise SwarmshareError(
                        f"no peer can send the last {missing} chunk(s) of {manifest.name};"
                        " the part is kept: run the same command again to resume"
                    )
                self.stats.state = "waiting for peers"
            else:
                stalled_since = None
                self.stats.state = "downloading"
            deadline = sched.next_deadline()
            pause = WAKE_SECONDS if deadline is None else min(WAKE_SECONDS, deadline - now)
            if not self._results:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, pause))
            self._wake.clear()
            while self._results:
                self._take(sched, *self._results.popleft())
            self._sync_peers(sched)
            self._update_rate(loop.time())
            if loop.time() - last_save >= RESUME_RECORD_INTERVAL_SECONDS:
                self._save_record()
                last_save = loop.time()
            self._on_change(self)

    def _start(self, manifest: Manifest, request: Request) -> None:
        peer = self._peers[request.peer]
        ref = manifest.chunk(request.chunk)
        task = asyncio.ensure_future(self._fetch(peer, ref, request))
        self._tasks[request] = task

    async def _fetch(self, peer: Peer, ref: ChunkRef, request: Request) -> None:
        assert self.part is not None
        started = time.monotonic()
        try:
            data = await self.client.chunk(
                peer.address, peer.port, self.content_id, ref.index, ref.length
            )
        except PeerUnavailable as exc:
            self._finish(request, exc.reason, 0, started)
            return
        except RemoteProtocolError:
            self._finish(request, "short", 0, started)
            return
        # The buffer goes back to the pool only once the thread is done with it, even when this
        # task is cancelled meanwhile: a recycled buffer must never change under the hash.
        work = asyncio.ensure_future(asyncio.to_thread(self.part.write_if_valid, ref, data))
        work.add_done_callback(lambda _w: self.client.buffers.put(data))
        self._works.add(work)
        work.add_done_callback(self._works.discard)
        try:
            good = await asyncio.shield(work)
        except StoreError as exc:
            self._finish(request, "disk:" + str(exc), len(data), started)
            return
        self._finish(request, "ok" if good else "bad_hash", len(data), started)

    def _finish(self, request: Request, outcome: str, nbytes: int, started: float) -> None:
        self._tasks.pop(request, None)
        self._results.append((request, outcome, nbytes, time.monotonic() - started))
        self._wake.set()

    def _take(
        self, sched: Scheduler, request: Request, outcome: str, nbytes: int, took: float
    ) -> None:
        peer = self._peers.get(request.peer)
        address = peer.address if peer else request.peer
        self.stats.fetched_bytes += nbytes
        if outcome.startswith("disk:"):
            raise StoreError(outcome[5:])
        if outcome == "ok":
            new = sched.chunk_done(request.peer, request.chunk, time.monotonic(), took)
            if new:
                assert self.bitmap is not None
                bitmap_set(self.bitmap, request.chunk)
                self._count_done({request.chunk})
                self._maybe_flush(nbytes)
                self.stats.by_peer[address] = self.stats.by_peer.get(address, 0) + 1
                self._on_held(self)
            self._log(address, request.chunk, nbytes, "ok" if new else "duplicate")
            return
        if outcome == "bad_hash":
            self.stats.bad_chunks += 1
        was_dropped = request.peer in sched.dropped
        sched.chunk_failed(request.peer, request.chunk, outcome, time.monotonic())
        if request.peer in sched.dropped and not was_dropped:
            self.stats.dropped_peers.append(address)
        self._log(address, request.chunk, nbytes, outcome)

    def _cut(self, request: Request, why: str) -> None:
        task = self._tasks.pop(request, None)
        if task is not None:
            task.cancel()
            peer = self._peers.get(request.peer)
            self._log(peer.address if peer else request.peer, request.chunk, 0, why)

    def _sync_peers(self, sched: Scheduler) -> None:
        live: dict[str, Peer] = {}
        for peer, item in self.swarm.holders(self.content_id):
            if item.chunks != len(sched.lengths) or item.size != self.stats.total_bytes:
                continue  # a catalogue that disagrees with the manifest: ignore that peer
            live[peer.peer_id] = peer
            key = (peer.address, peer.port, item.have)
            if self._peer_keys.get(peer.peer_id) == key:
                continue
            self._peer_keys[peer.peer_id] = key
            bitmap = item.have
            if bitmap is None:
                sched.add_peer(peer.peer_id, _all)
            else:
                sched.add_peer(peer.peer_id, _holder(bitmap))
        for peer_id in list(self._peers):
            if peer_id not in live:
                sched.remove_peer(peer_id)
                self._peer_keys.pop(peer_id, None)
        self._peers = live

    # ---- bookkeeping -----------------------------------------------------------------------

    def holds(self, index: int) -> bool:
        """Whether chunk `index` is verified and written (for serving while downloading)."""
        return self.bitmap is not None and bitmap_get(self.bitmap, index)

    def _maybe_flush(self, nbytes: int) -> None:
        """Start writing back what is on the disk cache every FLUSH_EVERY_BYTES, one flush at
        a time, in a thread, while the transfer goes on."""
        self._unflushed += nbytes
        running = self._flush is not None and not self._flush.done()
        if self._unflushed < FLUSH_EVERY_BYTES or running or self.part is None:
            return
        self._unflushed = 0
        self._flush = asyncio.ensure_future(asyncio.to_thread(self.part.flush))

    async def _flushed(self) -> None:
        if self._flush is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flush)
            self._flush = None

    def _count_done(self, chunks: set[int]) -> None:
        assert self.manifest is not None
        for index in chunks:
            self.stats.done_bytes += self.manifest.chunk(index).length
        self.stats.chunks_done += len(chunks)

    def _update_rate(self, now: float) -> None:
        self._samples.append((now, self.stats.done_bytes))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_bytes = self._samples[0]
        if now > first_time:
            self.stats.rate = (self.stats.done_bytes - first_bytes) / (now - first_time)

    def _save_record(self, force: bool = False) -> None:
        if self.part is None or self.bitmap is None or self.stats.state == "done":
            return
        if not self.part.dest.exists() or force:
            with contextlib.suppress(StoreError):
                if self.part.part.exists():
                    self.part.save_record(self.bitmap)

    def _log(self, peer: str, chunk: int, nbytes: int, result: str) -> None:
        if self.translog is not None:
            self.translog.add("down", peer, self.content_id, self.stats.name, chunk, nbytes, result)

    def _complete(self, manifest: Manifest, files: list[ScannedFile]) -> None:
        self.stats.done_bytes = manifest.total_size
        self.stats.chunks_done = manifest.chunk_total
        self.stats.state = "done"
        if self.library is not None:
            root = files[0].abs_path if manifest.kind == "file" else str(self.dest.resolve())
            self.library.add(manifest, root, files)

    def _poke(self, _event: object = None) -> None:
        self._wake.set()


def _all(_index: int) -> bool:
    return True


def _holder(bitmap: bytes) -> Callable[[int], bool]:
    return lambda index: bitmap_get(bitmap, index)
