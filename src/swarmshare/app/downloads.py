"""The daemon's downloads: start, pause, resume, cancel; serve what they hold meanwhile.

Downloads are recorded in the database, so a daemon that restarts resumes them (their part
files and resume records say which chunks are already in).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from swarmshare.app.download import Download
from swarmshare.app.swarm import NetworkItem, Swarm
from swarmshare.core.catalog import CatalogItem
from swarmshare.core.location import ChunkLocation
from swarmshare.core.manifest import Manifest, decode_manifest
from swarmshare.core.refs import resolve_ref
from swarmshare.errors import NotFoundError, SwarmshareError, UsageError
from swarmshare.store.partfile import PartFile

if TYPE_CHECKING:
    from swarmshare.app.daemon import Daemon

_HEX64 = re.compile(r"[0-9a-f]{64}")
HELD_ANNOUNCE_SECONDS = 0.5


@dataclass
class Entry:
    """One download the daemon knows: the engine and the task running it (if any)."""

    download: Download
    task: asyncio.Task[None] | None = None


async def find_content(swarm: Swarm, ref: str, wait: float) -> tuple[str, str]:
    """(content ID, name) for what the user typed, waiting up to `wait` s for catalogues."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        items = swarm.network()
        try:
            item: NetworkItem = resolve_ref(ref, items, lambda i: (i.id, i.name), "the network")
            return item.id, item.name
        except NotFoundError:
            if _HEX64.fullmatch(ref.lower()):
                return ref.lower(), ref[:12]  # a full ID: wait for holders while downloading
            if loop.time() >= deadline:
                raise
        await swarm.wait_updated(min(0.2, max(0.01, deadline - loop.time())))


def resolve_dest(name: str, output: str | None, dest_dir: Path) -> Path:
    """Where a download goes: OUTPUT (or OUTPUT/NAME if it is a folder), else DIR/NAME."""
    if output:
        path = Path(output).expanduser()
        if path.is_dir():
            path = path / name
    else:
        path = dest_dir / name
    path = Path(path).absolute()
    if not path.parent.is_dir():
        raise UsageError(f"folder {path.parent} does not exist")
    if path.name.endswith((".part", ".part.swarmshare")):
        raise UsageError("a download may not end in .part or .part.swarmshare")
    return path


class DownloadManager:
    """Every download of one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.entries: dict[str, Entry] = {}
        self._held_pending = False

    async def start(
        self, ref: str, output: str | None, dest_dir: Path, force: bool, wait: float
    ) -> Download:
        """Start (or resume) downloading what `ref` names."""
        swarm = self.daemon.swarm
        assert swarm is not None
        content_id, name = await find_content(swarm, ref, wait)
        entry = self.entries.get(content_id)
        if entry is not None and entry.task is not None and not entry.task.done():
            return entry.download
        dest = resolve_dest(name, output, dest_dir)
        download = self._make(content_id, name, dest, force)
        self.entries[content_id] = Entry(download)
        self._persist(download, "running")
        self._run(content_id)
        return download

    def restore(self) -> None:
        """Resume the downloads that were running when the daemon last stopped."""
        db = self.daemon.db
        assert db is not None
        rows = db.conn.execute(
            "SELECT content_id, name, dest, manifest, state FROM downloads"
        ).fetchall()
        for cid, name, dest, manifest_bytes, state in rows:
            manifest = None
            if manifest_bytes:
                with contextlib.suppress(SwarmshareError):
                    manifest = decode_manifest(bytes(manifest_bytes))
            download = self._make(cid, name, Path(dest), True, manifest)
            download.stats.state = state
            self.entries[cid] = Entry(download)
            if state == "running":
                self._run(cid)

    def pause(self, content_id: str) -> Download:
        """Stop fetching; keep the part file to resume later."""
        entry = self._entry(content_id)
        if entry.task is not None and not entry.task.done():
            entry.download.stats.state = "paused"
            entry.task.cancel()
        self._persist(entry.download, "paused")
        return entry.download

    def resume(self, content_id: str) -> Download:
        """Start a paused or failed download again."""
        entry = self._entry(content_id)
        if entry.task is None or entry.task.done():
            self._persist(entry.download, "running")
            self._run(content_id)
        return entry.download

    async def cancel(self, content_id: str) -> Download:
        """Stop and delete the part file and resume record."""
        entry = self._entry(content_id)
        download = entry.download
        download.stats.state = "cancelled"
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SwarmshareError):
                await entry.task
        if download.manifest is not None:
            PartFile(download.dest, download.manifest).discard()
        self._forget(content_id)
        del self.entries[content_id]
        self.daemon.catalog_changed()
        return download

    def get(self, ref: str) -> Download:
        """A download by content ID or unique prefix."""
        return self._entry(ref).download

    def all(self) -> list[Download]:
        """Every known download, newest first."""
        return sorted((e.download for e in self.entries.values()), key=lambda d: -d.stats.started)

    async def close(self) -> None:
        """Stop every running download (state stays 'running' so a restart resumes it)."""
        tasks = [e.task for e in self.entries.values() if e.task and not e.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- serving what downloads hold -------------------------------------------------------

    def partial_items(self, complete: set[str]) -> list[CatalogItem]:
        """Catalogue entries (with bitmaps) of contents being downloaded."""
        items = []
        for cid, entry in self.entries.items():
            d = entry.download
            if cid in complete or d.manifest is None or d.bitmap is None or d.part is None:
                continue
            if d.stats.state in ("done", "cancelled"):
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

    # ---- internals -------------------------------------------------------------------------

    def _make(
        self, cid: str, name: str, dest: Path, force: bool, manifest: Manifest | None = None
    ) -> Download:
        daemon = self.daemon
        assert daemon.swarm is not None and daemon.client is not None
        return Download(
            cid,
            name,
            dest,
            swarm=daemon.swarm,
            client=daemon.client,
            library=daemon.library,
            translog=daemon.translog,
            force=force,
            manifest=manifest,
            stall_timeout=None,
            chunk_timeout=daemon.settings.chunk_timeout,
            on_held=lambda _d: self._held_changed(),
            on_change=lambda _d: daemon.touch(),
        )

    def _run(self, content_id: str) -> None:
        entry = self.entries[content_id]
        entry.task = asyncio.create_task(self._drive(entry.download))

    async def _drive(self, download: Download) -> None:
        say = self.daemon.say
        say(f"downloading {download.stats.name} -> {download.dest}")
        try:
            stats = await download.run()
        except asyncio.CancelledError:
            return
        except SwarmshareError as exc:
            say(f"download of {download.stats.name} failed: {exc}")
            self._persist(download, "failed", str(exc))
            return
        finally:
            if download.manifest is not None:
                self._save_manifest(download)
        self._forget(download.content_id)
        self.daemon.reload()
        rate = stats.total_bytes / max(1e-6, (stats.finished or time.time()) - stats.started)
        say(
            f"downloaded {stats.name} ({stats.total_bytes} bytes, {rate / 1e6:.1f} MB/s, "
            f"from {len(stats.by_peer)} peer(s)); SHA-256 verified; now sharing it"
        )

    def _held_changed(self) -> None:
        """Announce new chunks at most every HELD_ANNOUNCE_SECONDS (not once per chunk)."""
        if self._held_pending:
            return
        self._held_pending = True

        def fire() -> None:
            self._held_pending = False
            self.daemon.catalog_changed()

        asyncio.get_running_loop().call_later(HELD_ANNOUNCE_SECONDS, fire)

    def _entry(self, ref: str) -> Entry:
        matches = [cid for cid in self.entries if cid.startswith(ref.lower())]
        if len(matches) != 1:
            raise NotFoundError(f"no download {ref!r}")
        return self.entries[matches[0]]

    def _persist(self, download: Download, state: str, error: str = "") -> None:
        db = self.daemon.db
        assert db is not None
        now = time.time()
        manifest = download.manifest.encoded if download.manifest else b""
        with db.transaction() as conn:
            conn.execute(
                "INSERT INTO downloads(content_id, name, dest, manifest, state, error, created,"
                " updated) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(content_id) DO UPDATE SET"
                " name=excluded.name, dest=excluded.dest, state=excluded.state,"
                " error=excluded.error, updated=excluded.updated,"
                " manifest=CASE WHEN length(excluded.manifest) > 0 THEN excluded.manifest"
                " ELSE downloads.manifest END",
                (
                    download.content_id,
                    download.stats.name,
                    str(download.dest),
                    manifest,
                    state,
                    error,
                    now,
                    now,
                ),
            )

    def _save_manifest(self, download: Download) -> None:
        db = self.daemon.db
        if db is None or download.manifest is None:
            return
        with db.transaction() as conn:
            conn.execute(
                "UPDATE downloads SET manifest = ? WHERE content_id = ?",
                (download.manifest.encoded, download.content_id),
            )

    def _forget(self, content_id: str) -> None:
        db = self.daemon.db
        assert db is not None
        with db.transaction() as conn:
            conn.execute("DELETE FROM downloads WHERE content_id = ?", (content_id,))


OnChange = Callable[[Download], None]
