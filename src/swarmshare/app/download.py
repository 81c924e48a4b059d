"""The one download engine: any kind of source, one state machine, verified chunks into a part.

How it works. `Download.run()` drives one content from its origin (sources.py) into `DEST.part`:
find the manifest (FINDING), copy chunks already on this machine, ask the pure scheduler which
chunk to request from which source, verify each chunk in a worker thread and write it, and
finally rename the part into place and hand the result to the library. States and the moves
between them are in core/transfer.py; every change goes through `_move`.

Stopping. `stop(outcome)` (pause, cancel, the daemon shutting down, no holder within the wait)
sets a flag, wakes the loop and cuts every chunk request; `run()` then waits for the hashing and
writing threads already running (a thread cannot be cancelled), saves the resume record, closes
the part file and returns. So when the caller's `await` of a stopped run returns, no byte will be
written to the part file any more. Nothing here depends on how `asyncio.wait_for` treats a
cancellation (it differs between Python 3.11 and 3.12): the loop sleeps on an event, woken by
results and by one timer armed for the next deadline.

Time comes from one injected clock (the event loop by default): `time()` and `call_at()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from swarmshare.app.sources import BatchSource, Origin, Source, SourceError
from swarmshare.app.translog import TransferLog
from swarmshare.core.catalog import bitmap_get, bitmap_new, bitmap_set
from swarmshare.core.location import ChunkLocation
from swarmshare.core.manifest import ChunkRef, Manifest
from swarmshare.core.scheduler import Request, Scheduler
from swarmshare.core.transfer import ChunkOutcome, Outcome, PauseReason, State, check_move
from swarmshare.errors import StoreError, SwarmshareError, UsageError
from swarmshare.limits import (
    BATCH_CHUNK_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_CHUNKS,
    RESUME_RECORD_INTERVAL_SECONDS,
)
from swarmshare.store.hashing import ScannedFile
from swarmshare.store.partfile import PartFile

RATE_WINDOW_SECONDS = 2.0
FLUSH_EVERY_BYTES = 128 * 1024 * 1024
MANIFEST_RETRY_SECONDS = 2.0

T = TypeVar("T")


class TimerHandle(Protocol):
    """A timer that can be called off."""

    def cancel(self) -> None:
        """Do not fire."""


class Clock(Protocol):
    """Where a download reads the time and arms its timers (the event loop, or a fake)."""

    def time(self) -> float:
        """Now, in seconds (monotonic)."""

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Call `callback` at `when`."""


@dataclass(frozen=True)
class Destination:
    """Where a download goes: the exact path, or a folder that gets the content's own name."""

    folder: Path
    exact: Path | None = None

    def path(self, name: str) -> Path:
        """DEST for a content called `name` (its manifest's name, never a catalogue's)."""
        return self.exact if self.exact is not None else self.folder / name

    def encode(self) -> str:
        """One string for the database: a folder ends in '/'."""
        return str(self.exact) if self.exact is not None else str(self.folder).rstrip("/") + "/"

    @classmethod
    def decode(cls, text: str) -> Destination:
        """The inverse of `encode`."""
        if text.endswith("/"):
            return cls(Path(text))
        return cls(Path(text).parent, Path(text))


@dataclass
class Stats:
    """How a download is going, for progress bars, status and the final summary."""

    content_id: str
    name: str
    dest: str
    state: State = State.FINDING
    reason: str = ""
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
    run_seconds: float = 0.0
    by_peer: dict[str, int] = field(default_factory=dict)
    dropped_peers: list[str] = field(default_factory=list)
    unverified: bool = False
    already_there: bool = False
    no_holder: bool = False

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, if it can be told."""
        left = self.total_bytes - self.done_bytes
        return left / self.rate if self.rate > 0 and left > 0 else None

    def as_json(self) -> dict[str, object]:
        """Plain JSON for the control API, the page and `get --json`."""
        end = self.finished or time.time()
        return {
            "id": self.content_id,
            "name": self.name,
            "dest": self.dest,
            "state": self.state.value,
            "error": self.reason,
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
            "transfer_seconds": self.run_seconds,
            "by_peer": dict(self.by_peer),
            "dropped_peers": list(self.dropped_peers),
            "verified": self.state is State.DONE and not self.unverified,
            "legacy": self.unverified,
            "already_there": self.already_there,
            "no_holder": self.no_holder,
        }


@dataclass(frozen=True)
class EngineDeps:
    """What every download of one app shares: the clock, the log, local chunks."""

    clock: Clock
    translog: TransferLog | None = None
    find_chunks: Callable[[Iterable[str]], dict[str, ChunkLocation]] = lambda _hashes: {}
    add_to_library: Callable[[Manifest, str, list[ScannedFile]], None] = lambda *_a: None
    chunk_timeout: float | None = None


class _Stop(Exception):
    """Raised inside the run when a stop was asked for: unwinds to the cleanup."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class _Result:
    request: Request
    outcome: ChunkOutcome
    nbytes: int
    seconds: float
    error: StoreError | None = None


class Download:
    """One content from its origin into its destination. `await run()` returns its Outcome."""

    def __init__(
        self,
        content_id: str,
        name: str,
        destination: Destination,
        origin: Origin,
        deps: EngineDeps,
        *,
        force: bool = False,
        manifest: Manifest | None = None,
        hold_wait: float | None = None,
        on_change: Callable[[Download], None] = lambda _d: None,
        on_held: Callable[[Download], None] = lambda _d: None,
    ) -> None:
        self.content_id = content_id
        self.destination = destination
        self.origin = origin
        self.deps = deps
        self.force = force
        self.manifest = manifest
        self.hold_wait = hold_wait
        self.stats = Stats(content_id, manifest.name if manifest else name, "")
        self.stats.unverified = origin.unverified
        self.stats.dest = str(destination.path(self.stats.name))
        self.part: PartFile | None = None
        self.bitmap: bytearray | None = None
        self._on_change = on_change
        self._on_held = on_held
        self._clock = deps.clock
        self._wake = asyncio.Event()
        self._stopping: Outcome | None = None
        self._stop_event = asyncio.Event()
        self._results: deque[_Result] = deque()
        self._tasks: dict[Request, asyncio.Task[None]] = {}
        # The requests of a batch still wanted (one set shared by all of them): a batch task
        # is cancelled only once none of its requests is.
        self._batches: dict[Request, set[Request]] = {}
        self._sources: dict[str, Source] = {}
        self._versions: dict[str, object] = {}
        self._samples: deque[tuple[float, int]] = deque()
        self._works: set[asyncio.Future[Any]] = set()
        self._flush: asyncio.Future[None] | None = None
        self._unflushed = 0

    @property
    def state(self) -> State:
        """Where the download is."""
        return self.stats.state

    @property
    def dest(self) -> Path:
        """Where the content goes (known for sure once the manifest is)."""
        return Path(self.stats.dest)

    def reset(self, hold_wait: float | None, force: bool) -> None:
        """Before a run (the first or another): the caller's wait and --force."""
        self.hold_wait = hold_wait
        self.force = force
        self._stopping = None
        self._stop_event = asyncio.Event()
        self._move(State.FINDING)  # at once: whoever started it must not see it still paused

    def stop(self, outcome: Outcome) -> None:
        """Ask the run to end with `outcome` (PAUSED or CANCELLED or FAILED)."""
        if self._stopping is None:
            self._stopping = outcome
            self._stop_event.set()
            for task in self._tasks.values():
                task.cancel()
            self._wake.set()

    # ---- the whole run -----------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Download, verify and put the content in place; the Outcome says how it ended."""
        self._move(State.FINDING)
        self._new_run_stats()
        started = self._clock.time()
        unwatch = self.origin.watch(self._poke)
        outcome = Outcome(State.PAUSED, "stopping", PauseReason.SHUTDOWN)
        try:
            await self._run()
            outcome = Outcome(State.DONE)
        except _Stop as stop:
            outcome = stop.outcome
        except SwarmshareError as exc:
            outcome = Outcome(State.FAILED, str(exc))
        finally:
            unwatch()
            await self._cleanup()
            self.stats.run_seconds = self._clock.time() - started
            self.stats.finished = time.time()
            self.stats.reason = outcome.reason
            self.stats.no_holder = outcome.pause is PauseReason.NO_HOLDER
            self._move(outcome.state)
            self._on_change(self)
        return outcome

    def _new_run_stats(self) -> None:
        """What a run reports is its own: bytes fetched, peers, retries (a resumed download's
        summary must not count what an earlier run fetched)."""
        st = self.stats
        st.reason, st.no_holder, st.already_there = "", False, False
        st.fetched_bytes = st.local_chunks = st.resumed_chunks = st.retried = st.bad_chunks = 0
        st.by_peer, st.dropped_peers = {}, []
        st.started, st.finished = time.time(), None

    async def _run(self) -> None:
        if self.manifest is None:
            self.manifest = await self._find_manifest()
        manifest = self.manifest
        self.stats.name = manifest.name
        self.stats.dest = str(self.destination.path(manifest.name))
        self.stats.total_bytes = manifest.total_size
        self.stats.chunks_total = manifest.chunk_total
        self._on_change(self)
        if await self._in_thread(self._already_there, manifest):
            self.stats.already_there = True
            self.stats.local_chunks = manifest.chunk_total
            self._count_all(manifest)
            self._move(State.FINISHING)
            files = await self._in_thread(PartFile(self.dest, manifest).final_files)
            self.deps.add_to_library(manifest, self._library_root(manifest, files), files)
            return
        if (self.dest.exists() or self.dest.is_symlink()) and not self.force:
            raise UsageError(f"{self.dest} exists and differs; use --force to replace it")
        part = self.part = PartFile(self.dest, manifest)
        claimed = await self._in_thread(part.open)
        self._check_stop()
        have = await self._in_thread(part.verify, claimed) if claimed else set()
        self._check_stop()
        self.stats.resumed_chunks = len(have)
        self.bitmap = bitmap_new(manifest.chunk_total)
        self.stats.done_bytes = self.stats.chunks_done = 0
        self._mark(have)
        have |= await self._reuse_local(manifest, have)
        self._check_stop()
        if len(have) < manifest.chunk_total:
            self._move(State.FETCHING)
            self._on_change(self)
            await self._fetch_all(manifest, have)
        self._move(State.FINISHING)
        self._on_change(self)
        # Endgame duplicates may still be out, their chunks being written: cut them, and let
        # every write end before the part is synced, closed and renamed.
        await asyncio.shield(self._settle(self._cut_all()))
        self._save_record(force=True)
        await self._flushed()
        files = await self._in_thread(part.finish, self.force)
        self._count_all(manifest)
        self.deps.add_to_library(manifest, self._library_root(manifest, files), files)

    async def _find_manifest(self) -> Manifest:
        since = self._clock.time()
        while True:
            self._check_stop()
            manifest = await self._guarded(self.origin.manifest())
            if manifest is not None:
                return manifest
            now = self._clock.time()
            self._check_holder_wait(since, now, "the manifest")
            deadline = now + MANIFEST_RETRY_SECONDS
            if self.hold_wait is not None:
                deadline = min(deadline, since + self.hold_wait)
            await self._sleep_until(deadline)

    def _check_holder_wait(self, since: float, now: float, what: str) -> None:
        if self.hold_wait is None or now - since < self.hold_wait:
            return
        problems = self.origin.problems()
        detail = ("; " + "; ".join(problems[-3:])) if problems else ""
        self._stop_now(
            Outcome(
                State.PAUSED,
                f"no peer could send {what} of {self.stats.name} within "
                f"{self.hold_wait:g} s{detail}",
                PauseReason.NO_HOLDER,
            )
        )

    # ---- chunks already here -----------------------------------------------------------------

    def _already_there(self, manifest: Manifest) -> bool:
        """An identical DEST (a file, or a folder with exactly these files) is a finished
        download: nothing is fetched."""
        dest = self.dest
        if manifest.kind == "file":
            if not dest.is_file() or dest.is_symlink():
                return False
            paths = [str(dest)]
        else:
            if not dest.is_dir() or dest.is_symlink():
                return False
            paths = [
                os.path.join(dest, *manifest.path_of(i).split("/"))
                for i in range(manifest.file_count)
            ]
            expected = {os.path.normpath(p) for p in paths}
            for root, dirs, names in os.walk(dest):
                for n in names:
                    if os.path.normpath(os.path.join(root, n)) not in expected:
                        return False
                dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for index, path in enumerate(paths):
            try:
                if os.path.islink(path) or os.stat(path).st_size != manifest.size_of(index):
                    return False
            except OSError:
                return False
        for ref in manifest.chunks():
            try:
                with open(paths[ref.file_index], "rb") as handle:
                    data = os.pread(handle.fileno(), ref.length, ref.offset)
            except OSError:
                return False
            if not ref.matches(data):
                return False
        return True

    def _library_root(self, manifest: Manifest, files: list[ScannedFile]) -> str:
        return files[0].abs_path if manifest.kind == "file" else str(self.dest.resolve())

    async def _reuse_local(self, manifest: Manifest, have: set[int]) -> set[int]:
        """Copy chunks that local files already hold (an old DEST, shared files) into the part."""
        part = self.part
        assert part is not None
        sources: list[tuple[ChunkRef, str, int]] = []
        old_dest = str(self.dest) if manifest.kind == "file" and self.dest.is_file() else None
        held = self.deps.find_chunks(
            ref.sha256 for ref in manifest.chunks() if ref.index not in have
        )
        if not held and old_dest is None:
            return set()  # nothing local to copy: no second pass over every chunk
        for ref in manifest.chunks():
            if ref.index in have:
                continue
            if old_dest is not None:
                sources.append((ref, old_dest, ref.offset))
            found = held.get(ref.sha256)
            if found is not None and found.length == ref.length:
                sources.append((ref, found.path, found.offset))
        if not sources:
            return set()

        def copy() -> set[int]:
            got: set[int] = set()
            for ref, path, offset in sources:
                if ref.index in got or self._stopping is not None:
                    continue
                try:
                    with open(path, "rb") as handle:
                        data = os.pread(handle.fileno(), ref.length, offset)
                except OSError:
                    continue
                if part.write_if_valid(ref, data):
                    got.add(ref.index)
            return got

        got = await self._in_thread(copy)
        self.stats.local_chunks = len(got)
        self._mark(got)
        return got

    # ---- fetching ----------------------------------------------------------------------------

    async def _fetch_all(self, manifest: Manifest, have: set[int]) -> None:
        clock = self._clock
        sched = Scheduler(manifest.chunk_lengths(), have, timeout=self.deps.chunk_timeout)
        stalled_since: float | None = None
        last_save = clock.time()
        self._sources, self._versions = {}, {}  # a new scheduler knows no source yet
        self._sync_sources(manifest, sched)
        while not sched.done:
            self._check_stop()
            now = clock.time()
            for request in sched.tick(now):
                self._cut(request, ChunkOutcome.TIMEOUT)
            for request in sched.take_cancels():
                self._cut(request, ChunkOutcome.CANCELLED)
            self._start_all(manifest, sched.next_requests(now))
            for request in sched.take_cancels():
                self._cut(request, ChunkOutcome.CANCELLED)
            self.stats.retried = sched.retries
            self.stats.peers_in_use = len({r.peer for r in self._tasks})
            self.stats.peers_known = len(self._sources)
            deadlines = [sched.next_deadline()]
            self._move(State.FETCHING if self._tasks else State.WAITING)
            # A holder that fails for a while (benched) is still a holder; one that lied is not.
            if self._tasks or any(key not in sched.dropped for key in self._sources):
                stalled_since = None
            else:
                stalled_since = now if stalled_since is None else stalled_since
                self._check_holder_wait(stalled_since, now, f"the last {sched.missing} chunk(s)")
                if self.hold_wait is not None:
                    deadlines.append(stalled_since + self.hold_wait)
            if not self._results:
                await self._sleep_until(min((d for d in deadlines if d and d > now), default=None))
            while self._results:
                self._take(sched, self._results.popleft())
            self._sync_sources(manifest, sched)
            now = clock.time()
            self._update_rate(now)
            if now - last_save >= RESUME_RECORD_INTERVAL_SECONDS:
                self._save_record()
                last_save = now
            self._on_change(self)

    def _start_all(self, manifest: Manifest, requests: list[Request]) -> None:
        """Start the requests: small chunks to one source go in batches (one round trip for
        many small files), the rest one by one."""
        small: dict[str, list[tuple[Request, ChunkRef]]] = {}
        batching: dict[str, bool] = {}  # a Protocol isinstance is slow: once per source here
        for request in requests:
            source = self._sources[request.peer]
            ref = manifest.chunk(request.chunk)
            if ref.length > BATCH_CHUNK_BYTES:
                self._start(source, ref, request)
                continue
            can = batching.get(request.peer)
            if can is None:
                can = batching[request.peer] = isinstance(source, BatchSource)
            if can:
                small.setdefault(request.peer, []).append((request, ref))
            else:
                self._start(source, ref, request)
        for peer, items in small.items():
            source = self._sources[peer]
            items.sort(key=lambda item: item[1].index)  # runs of files travel as ranges
            batch: list[tuple[Request, ChunkRef]] = []
            size = 0
            for item in items:
                if batch and (
                    len(batch) >= MAX_BATCH_CHUNKS or size + item[1].length > MAX_BATCH_BYTES
                ):
                    self._start_batch(source, batch)
                    batch, size = [], 0
                batch.append(item)
                size += item[1].length
            self._start_batch(source, batch)

    def _start(self, source: Source, ref: ChunkRef, request: Request) -> None:
        self._tasks[request] = asyncio.ensure_future(self._fetch(source, ref, request))

    def _start_batch(self, source: Source, batch: list[tuple[Request, ChunkRef]]) -> None:
        if len(batch) == 1:
            self._start(source, batch[0][1], batch[0][0])
            return
        assert isinstance(source, BatchSource)
        live = {request for request, _ref in batch}
        task = asyncio.ensure_future(self._fetch_batch(source, batch, live))
        for request, _ref in batch:
            self._tasks[request] = task
            self._batches[request] = live

    async def _fetch_batch(
        self, source: BatchSource, batch: list[tuple[Request, ChunkRef]], live: set[Request]
    ) -> None:
        part = self.part
        assert part is not None
        started = self._clock.time()
        refs = [ref for _request, ref in batch]
        try:
            data = await source.fetch_many(refs)
        except SourceError as exc:
            for request, _ref in batch:
                if request in live:
                    self._finish(_Result(request, exc.outcome, 0, self._seconds(started)))
            return
        if self._stopping is not None:
            return
        # Hashed and written in one worker-thread trip; the buffer is this batch's own.
        work = self._thread(part.write_many_if_valid, refs, data)
        try:
            goods = await asyncio.shield(work)
        except StoreError as exc:
            for request, ref in batch:
                if request in live:
                    result = _Result(request, ChunkOutcome.DISK, ref.length, 0.0, exc)
                    self._finish(result)
            return
        seconds = self._seconds(started)
        for (request, ref), good in zip(batch, goods, strict=True):
            if request in live:
                outcome = ChunkOutcome.OK if good else ChunkOutcome.BAD_HASH
                self._finish(_Result(request, outcome, ref.length, seconds))

    async def _fetch(self, source: Source, ref: ChunkRef, request: Request) -> None:
        part = self.part
        assert part is not None
        started = self._clock.time()
        try:
            data = await source.fetch(ref)
        except SourceError as exc:
            self._finish(_Result(request, exc.outcome, 0, self._clock.time() - started))
            return
        if self._stopping is not None:
            source.release(data)
            return
        # The buffer goes back to its pool only once the thread is done with it, even when this
        # task is cancelled meanwhile: a recycled buffer must never change under the hash.
        work = self._thread(part.write_if_valid, ref, data)
        work.add_done_callback(lambda _w: source.release(data))
        try:
            good = await asyncio.shield(work)
        except StoreError as exc:
            self._finish(
                _Result(request, ChunkOutcome.DISK, len(data), self._seconds(started), exc)
            )
            return
        outcome = ChunkOutcome.OK if good else ChunkOutcome.BAD_HASH
        self._finish(_Result(request, outcome, len(data), self._seconds(started)))

    def _seconds(self, started: float) -> float:
        return self._clock.time() - started

    def _finish(self, result: _Result) -> None:
        self._tasks.pop(result.request, None)
        self._batches.pop(result.request, None)
        self._results.append(result)
        self._wake.set()

    def _take(self, sched: Scheduler, result: _Result) -> None:
        request = result.request
        source = self._sources.get(request.peer)
        label = source.label if source else request.peer
        self.stats.fetched_bytes += result.nbytes
        if result.error is not None:
            raise result.error
        now = self._clock.time()
        if result.outcome is ChunkOutcome.OK:
            new = sched.chunk_done(request.peer, request.chunk, now, result.seconds)
            if new:
                self._mark({request.chunk})
                self._maybe_flush(result.nbytes)
                self.stats.by_peer[label] = self.stats.by_peer.get(label, 0) + 1
                self._on_held(self)
            outcome = ChunkOutcome.OK if new else ChunkOutcome.DUPLICATE
            self._log(label, request.chunk, result.nbytes, outcome)
            return
        if result.outcome is ChunkOutcome.BAD_HASH:
            self.stats.bad_chunks += 1
        was_dropped = request.peer in sched.dropped
        sched.chunk_failed(request.peer, request.chunk, result.outcome.value, now)
        if request.peer in sched.dropped and not was_dropped:
            self.stats.dropped_peers.append(label)
        self._log(label, request.chunk, result.nbytes, result.outcome)

    def _cut(self, request: Request, why: ChunkOutcome) -> None:
        task = self._tasks.pop(request, None)
        live = self._batches.pop(request, None)
        if live is not None:
            live.discard(request)  # the rest of its batch is still wanted
        if task is not None:
            if not live:
                task.cancel()
            source = self._sources.get(request.peer)
            self._log(source.label if source else request.peer, request.chunk, 0, why)

    def _sync_sources(self, manifest: Manifest, sched: Scheduler) -> None:
        live: dict[str, Source] = {}
        for source in self.origin.sources(manifest):
            live[source.key] = source
            if self._versions.get(source.key) != source.version:
                self._versions[source.key] = source.version
                sched.add_peer(source.key, source.holds)
        for key in list(self._sources):
            if key not in live:
                sched.remove_peer(key)
                self._versions.pop(key, None)
        self._sources = live

    # ---- waiting and stopping ----------------------------------------------------------------

    async def _sleep_until(self, deadline: float | None) -> None:
        """Until a result, a stop, a source change, or `deadline` (None: no timer)."""
        handle = self._clock.call_at(deadline, self._poke) if deadline is not None else None
        try:
            await self._wake.wait()
        finally:
            if handle is not None:
                handle.cancel()
        self._wake.clear()

    def _check_stop(self) -> None:
        if self._stopping is not None:
            raise _Stop(self._stopping)

    def _stop_now(self, outcome: Outcome) -> None:
        self.stop(outcome)
        self._check_stop()

    async def _guarded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await network I/O, cut short by a stop."""
        task = asyncio.ensure_future(coro)
        stopped = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._check_stop()
        return task.result()

    def _thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `fn` in a worker thread, tracked until it ends (threads cannot be cancelled)."""
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._works.add(work)
        work.add_done_callback(self._work_done)
        return work

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.shield(self._thread(fn, *args))

    def _work_done(self, work: asyncio.Future[Any]) -> None:
        self._works.discard(work)
        if not work.cancelled():
            work.exception()  # retrieved here: whoever awaited it may have been cancelled

    async def _cleanup(self) -> None:
        tasks = self._cut_all()
        # Shielded: a second cancellation (Ctrl-C twice, a shutdown during a pause) must not
        # leave a thread writing into a part file that is closed under it.
        await asyncio.shield(self._drain(tasks))

    def _cut_all(self) -> list[asyncio.Task[None]]:
        """Cancel every request still out; the tasks, to wait for."""
        for task in self._tasks.values():
            task.cancel()
        tasks = list(set(self._tasks.values()))
        self._tasks.clear()
        self._batches.clear()
        return tasks

    async def _settle(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for cut requests and for every write of a worker thread to end."""
        await asyncio.gather(*tasks, return_exceptions=True)
        while self._works:
            await asyncio.gather(*list(self._works), return_exceptions=True)

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        await self._settle(tasks)
        await self._flushed()
        self._save_record(force=True)
        if self.part is not None:
            self.part.close()

    def _poke(self, _event: object = None) -> None:
        self._wake.set()

    def _move(self, state: State) -> None:
        self.stats.state = check_move(self.stats.state, state)

    # ---- bookkeeping -------------------------------------------------------------------------

    def holds(self, index: int) -> bool:
        """Whether chunk `index` is verified and written (for serving while downloading)."""
        return self.bitmap is not None and bitmap_get(self.bitmap, index)

    def _mark(self, chunks: set[int]) -> None:
        assert self.manifest is not None and self.bitmap is not None
        for index in chunks:
            bitmap_set(self.bitmap, index)
            self.stats.done_bytes += self.manifest.chunk(index).length
        self.stats.chunks_done += len(chunks)

    def _count_all(self, manifest: Manifest) -> None:
        self.stats.done_bytes = manifest.total_size
        self.stats.chunks_done = manifest.chunk_total

    def _maybe_flush(self, nbytes: int) -> None:
        """Write back what is in the page cache every FLUSH_EVERY_BYTES, one flush at a time."""
        self._unflushed += nbytes
        running = self._flush is not None and not self._flush.done()
        if self._unflushed < FLUSH_EVERY_BYTES or running or self.part is None:
            return
        self._unflushed = 0
        self._flush = self._thread(self.part.flush)

    async def _flushed(self) -> None:
        if self._flush is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flush)
            self._flush = None

    def _update_rate(self, now: float) -> None:
        self._samples.append((now, self.stats.done_bytes))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_bytes = self._samples[0]
        if now > first_time:
            self.stats.rate = (self.stats.done_bytes - first_bytes) / (now - first_time)

    def _save_record(self, force: bool = False) -> None:
        if self.part is None or self.bitmap is None or self.stats.state is State.DONE:
            return
        if not self.part.dest.exists() or force:
            with contextlib.suppress(StoreError):
                if self.part.part.exists():
                    self.part.save_record(self.bitmap)

    def _log(self, peer: str, chunk: int, nbytes: int, outcome: ChunkOutcome) -> None:
        if self.deps.translog is not None:
            self.deps.translog.add(
                "down",
                peer,
                self.content_id,
                self.stats.name,
                chunk,
                nbytes,
                outcome.value,
                legacy=self.origin.unverified,
            )
