"""Every download of one app: start, pause, resume, cancel, remember; serve what they hold.

One object for the daemon and for a command that runs without one. Downloads are remembered
in the database (store/downloads.py), so that a restarted daemon resumes what was running and a
paused download shows in `swarmshare downloads` until it is resumed or cancelled.

Pause and cancel are acknowledged: `pause()` returns once the download's run has ended, its
worker threads are done and its part file is closed, so no byte is written after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from swarmshare.app.download import Destination, Download, EngineDeps
from swarmshare.app.sources import Origin
from swarmshare.core.catalog import CatalogItem
from swarmshare.core.location import ChunkLocation
from swarmshare.core.manifest import Manifest, decode_manifest
from swarmshare.core.transfer import Outcome, PauseReason, State
from swarmshare.errors import NotFoundError, SwarmshareError, UsageError
from swarmshare.store.downloads import DownloadRow, DownloadTable
from swarmshare.store.partfile import PartFile

log = logging.getLogger("swarmshare")

HELD_ANNOUNCE_SECONDS = 0.5
RUNNING = "running"


@dataclass
class Entry:
    """One download and the task running it (if any)."""

    download: Download
    task: asyncio.Task[Outcome] | None = None
    torrent: bytes = b""
    """The torrent it was started from (magnet link or .torrent), remembered with it."""

    @property
    def running(self) -> bool:
        """Whether its task is still going."""
        return self.task is not None and not self.task.done()


class Transfers:
    """The downloads of one app."""

    def __init__(
        self,
        table: DownloadTable,
        deps: EngineDeps,
        make_origin: Callable[[str, bytes], Origin],
        on_change: Callable[[], None],
        on_held: Callable[[], None],
    ) -> None:
        self.entries: dict[str, Entry] = {}
        self._table = table
        self._deps = deps
        self._make_origin = make_origin
        self._on_change = on_change
        self._on_held = on_held
        self._held_pending = False

    # ---- commands ----------------------------------------------------------------------------

    def start(
        self,
        content_id: str,
        name: str,
        destination: Destination,
        *,
        force: bool,
        hold_wait: float | None,
        origin: Origin | None = None,
        torrent: bytes = b"",
    ) -> Download:
        """Start (or resume) downloading a content; an existing entry is reused (not when it
        was started from another torrent: the new one's origin is used then)."""
        entry = self.entries.get(content_id)
        if entry is not None and entry.running:
            if entry.download.destination != destination:
                raise UsageError(
                    f"{entry.download.stats.name} is already being downloaded to"
                    f" {entry.download.dest}; pause or cancel that one first"
                )
            return entry.download
        if (
            entry is None
            or entry.download.destination != destination
            or entry.download.state.final
            or (torrent and torrent != entry.torrent)
        ):
            download = self._make(content_id, name, destination, force, None, origin)
            entry = self.entries[content_id] = Entry(download, torrent=torrent)
        self._run(entry, hold_wait, force)
        return entry.download

    async def pause(self, ref: str) -> Download:
        """Stop fetching and keep the part file; returns once nothing more is written."""
        entry = self._entry(ref)
        await self._stop(entry, Outcome(State.PAUSED, "paused", PauseReason.USER))
        if entry.download.state is not State.DONE:
            self._save(entry.download, State.PAUSED.value)
        return entry.download

    def resume(self, ref: str, hold_wait: float | None = None) -> Download:
        """Start a paused or failed download again."""
        entry = self._entry(ref)
        if not entry.running and not entry.download.state.final:
            self._run(entry, hold_wait, entry.download.force)
        return entry.download

    async def cancel(self, ref: str) -> Download:
        """Stop and delete the part file and resume record."""
        entry = self._entry(ref)
        download = entry.download
        await self._stop(entry, Outcome(State.CANCELLED, "cancelled"))
        if download.state is not State.CANCELLED and not download.state.final:
            download.stats.state = State.CANCELLED  # paused or failed: no run to end
        if download.manifest is not None and download.state is not State.DONE:
            await asyncio.to_thread(PartFile(download.dest, download.manifest).discard)
        self._table.forget(download.content_id)
        self.entries.pop(download.content_id, None)
        self._on_held()
        self._on_change()
        return download

    def get(self, ref: str) -> Download:
        """A download by content ID or unique prefix."""
        return self._entry(ref).download

    def all(self) -> list[Download]:
        """Every known download, newest first."""
        return sorted((e.download for e in self.entries.values()), key=lambda d: -d.stats.started)

    def restore(self, resume: bool) -> None:
        """Remember the downloads of earlier runs; with `resume`, resume those that were
        running (a command without a daemon lists them as paused)."""
        for row in self._table.rows():
            manifest = None
            if row.manifest:
                with contextlib.suppress(SwarmshareError):
                    manifest = decode_manifest(row.manifest)
            destination = Destination.decode(row.dest)
            origin = self._make_origin(row.content_id, row.torrent)
            download = self._make(row.content_id, row.name, destination, True, manifest, origin)
            entry = self.entries[row.content_id] = Entry(download, torrent=row.torrent)
            if row.state == RUNNING and resume:
                self._run(entry, None, True)
            else:
                download.stats.state = State.FAILED if row.state == "failed" else State.PAUSED
                download.stats.reason = row.error

    async def close(self) -> None:
        """Stop every running download; they stay 'running' so that a restart resumes them."""
        entries = [e for e in self.entries.values() if e.running]
        for entry in entries:
            entry.download.stop(Outcome(State.PAUSED, "stopping", PauseReason.SHUTDOWN))
        await asyncio.gather(*(e.task for e in entries if e.task), return_exceptions=True)

    # ---- what downloads hold (served while downloading) --------------------------------------

    def partial_items(self, complete: set[str]) -> list[CatalogItem]:
        """Catalogue entries (with bitmaps) of contents being downloaded."""
        items = []
        for cid, entry in self.entries.items():
            d = entry.download
            if cid in complete or d.manifest is None or d.bitmap is None or d.part is None:
                continue
            if d.state.final or d.origin.unverified:
                continue
            m = d.manifest
            items.append(
                CatalogItem(cid, m.name, m.kind, m.total_size, m.chunk_total, bytes(d.bitmap))
            )
        return items

    def manifest_bytes(self, content_id: str) -> bytes | None:
        """Manifest of a content being downloaded, if known."""
        entry = self.entries.get(content_id)
        if entry is None or entry.download.manifest is None:
            return None
        return entry.download.manifest.encoded

    def chunk_location(self, content_id: str, index: int) -> tuple[str, ChunkLocation] | None:
        """Where a verified chunk of a download in progress is, if it is held."""
        entry = self.entries.get(content_id)
        if entry is None:
            return None
        d = entry.download
        if d.manifest is None or d.part is None or not d.part.paths:
            return None
        if not 0 <= index < d.manifest.chunk_total or not d.holds(index):
            return None
        ref = d.manifest.chunk(index)
        location = ChunkLocation(d.part.paths[ref.file_index], ref.offset, ref.length, ref.sha256)
        return d.manifest.name, location

    # ---- internals ---------------------------------------------------------------------------

    def _make(
        self,
        cid: str,
        name: str,
        destination: Destination,
        force: bool,
        manifest: Manifest | None,
        origin: Origin | None,
    ) -> Download:
        return Download(
            cid,
            name,
            destination,
            origin or self._make_origin(cid, b""),
            self._deps,
            force=force,
            manifest=manifest,
            on_held=lambda _d: self._held_changed(),
            on_change=lambda _d: self._on_change(),
        )

    def _run(self, entry: Entry, hold_wait: float | None, force: bool) -> None:
        download = entry.download
        download.reset(hold_wait, force)
        self._save(download, RUNNING)
        entry.task = asyncio.create_task(self._drive(download))

    async def _drive(self, download: Download) -> Outcome:
        log.info("downloading %s -> %s", download.stats.name, download.dest)
        outcome = await download.run()
        stats = download.stats
        if outcome.state is State.DONE:
            self._table.forget(download.content_id)
            self._held_changed()
            rate = stats.fetched_bytes / max(1e-6, stats.run_seconds)
            check = "UNVERIFIED (no hashes)" if stats.unverified else "SHA-256 verified"
            log.info(
                "downloaded %s (%d bytes, %d fetched at %.1f MB/s from %d peer(s)); %s;"
                " now sharing it",
                stats.name,
                stats.total_bytes,
                stats.fetched_bytes,
                rate / 1e6,
                len(stats.by_peer),
                check,
            )
        elif outcome.state is State.CANCELLED:
            pass  # cancel() forgets it
        elif outcome.pause is PauseReason.SHUTDOWN:
            self._save(download, RUNNING)
        else:
            self._save(download, outcome.state.value, outcome.reason)
            log.info("download of %s %s: %s", stats.name, outcome.state.value, outcome.reason)
        return outcome

    async def _stop(self, entry: Entry, outcome: Outcome) -> None:
        if entry.running and entry.task is not None:
            entry.download.stop(outcome)
            await asyncio.shield(asyncio.gather(entry.task, return_exceptions=True))

    def _save(self, download: Download, state: str, error: str = "") -> None:
        manifest = download.manifest.encoded if download.manifest else b""
        entry = self.entries.get(download.content_id)
        self._table.save(
            DownloadRow(
                download.content_id,
                download.stats.name,
                download.destination.encode(),
                manifest,
                state,
                error,
                entry.torrent if entry is not None else b"",
            )
        )

    def _held_changed(self) -> None:
        """Announce new chunks at most every HELD_ANNOUNCE_SECONDS (not once per chunk)."""
        if self._held_pending:
            return
        self._held_pending = True

        def fire() -> None:
            self._held_pending = False
            self._on_held()

        self._deps.clock.call_at(self._deps.clock.time() + HELD_ANNOUNCE_SECONDS, fire)

    def _entry(self, ref: str) -> Entry:
        if ref in self.entries:
            return self.entries[ref]
        key = ref.lower()
        matches = [cid for cid in self.entries if cid.startswith(key)]
        if len(matches) != 1:
            raise NotFoundError(f"no download {ref!r}")
        return self.entries[matches[0]]
