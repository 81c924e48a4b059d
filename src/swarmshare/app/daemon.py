"""The daemon: one process that announces, discovers, serves and downloads.

It is the composition root: it owns the database, the library cache, the peer server, the
swarm (discovery + catalogues), the transfer log, the downloads and the control API, and it
wires them together. `Daemon.run()` lives until SIGINT/SIGTERM (or `stop()`), then shuts down
in order: say bye, stop accepting, cut transfers after a deadline, flush the log, close the db.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from swarmshare.app.downloads import DownloadManager
from swarmshare.app.home import HomeLock, new_token, remove_control_file, write_control_file
from swarmshare.app.legacy import Legacy
from swarmshare.app.swarm import Swarm
from swarmshare.app.translog import TransferLog
from swarmshare.core.auth import derive_key
from swarmshare.core.catalog import Catalog, CatalogItem, make_catalog
from swarmshare.core.location import ChunkLocation
from swarmshare.core.manifest import Manifest
from swarmshare.core.peers import PeerEvent, PeerJoined, PeerLeft
from swarmshare.errors import NotFoundError, UsageError
from swarmshare.net.client import PeerClient
from swarmshare.net.server import PeerServer, ServeError
from swarmshare.settings import Settings
from swarmshare.store.db import Database
from swarmshare.store.hashing import FileStat
from swarmshare.store.library import ContentRecord, Library

Say = Callable[[str], None]


@dataclass(frozen=True)
class Served:
    """A complete shared content as the daemon serves it: record, manifest, files on disk."""

    record: ContentRecord
    manifest: Manifest
    files: list[tuple[str, FileStat]]


class Daemon:
    """A swarmshare peer. Build with settings, then `await run()`."""

    def __init__(self, settings: Settings, say: Say | None = None) -> None:
        self.settings = settings
        self.say: Say = say or (lambda _line: None)
        self.lock = HomeLock(settings.home)
        self.db: Database | None = None
        self.library: Library | None = None
        self.peer_id = ""
        self.started = time.time()
        self.served_chunks = 0
        self.served_bytes = 0
        self.control_port = 0
        self.token = new_token()
        self._served: dict[str, Served] = {}
        self._catalog: Catalog | None = None
        self._stop = asyncio.Event()
        self._refreshing = False
        self._tasks: set[asyncio.Future[None]] = set()
        self.server: PeerServer | None = None
        self.swarm: Swarm | None = None
        self.translog: TransferLog | None = None
        self.client: PeerClient | None = None
        self.downloads = DownloadManager(self)
        self.legacy: Legacy | None = None
        self.ready = asyncio.Event()
        self.change_event = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until stopped; DaemonError (one clear line) if the home or a port is taken."""
        from swarmshare.app.control import ControlServer

        self.lock.acquire()
        try:
            self.db = Database.open_home(self.settings.home)
            self.library = Library(self.db)
            self.peer_id = self.db.peer_id()
            self.reload()
            s = self.settings
            key = derive_key(s.secret) if s.secret else None
            async with (
                TransferLog(self.db) as self.translog,
                PeerClient(
                    local_address=s.bind, idle_timeout=s.read_idle_timeout, key=key
                ) as self.client,
                PeerServer(
                    self, s.bind, s.port, key=key, upload_bytes_per_second=s.upload_bytes_per_second
                ) as self.server,
                Swarm(
                    s,
                    self.peer_id,
                    self.client,
                    catalog_version=lambda: self.catalog().version,
                    serving_port=self.server.port,
                    on_foreign=self._foreign,
                ) as self.swarm,
                contextlib.AsyncExitStack() as optional,
                ControlServer(self, s.control_port) as control,
            ):
                if s.legacy:
                    self.legacy = await optional.enter_async_context(Legacy(self))
                self.swarm.listeners.append(self._peer_event)
                self.swarm.listeners.append(lambda _e: self.touch())
                self.swarm.catalog_listeners.append(lambda _p: self.touch())
                self.control_port = control.port
                write_control_file(s.home, control.port, self.token)
                self._install_signals()
                self.translog.on_flush = self.touch
                self.downloads.restore()
                self.ready.set()
                self._say_started()
                self._spawn_refresh()
                await self._stop.wait()
                self.say("stopping")
                await self.downloads.close()
        finally:
            remove_control_file(self.settings.home)
            if self.db is not None:
                self.db.close()
            self.lock.release()

    def stop(self) -> None:
        """Ask `run` to shut down."""
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)

    def _say_started(self) -> None:
        s = self.settings
        assert self.server is not None and self.swarm is not None
        targets = ", ".join(self.swarm.discovery.targets + [f"{h}:{p}" for h, p in s.peers])
        self.say(f"peer {s.name!r} ({self.peer_id}) serving on {s.bind}:{self.server.port}")
        self.say(f"discovery on UDP {s.discovery_port}, announcing to {targets}")
        self.say(
            f"web page: http://127.0.0.1:{self.control_port}/login?token={self.token}"
            "  (or run: swarmshare open)"
        )
        if self.legacy is not None and self.legacy.server is not None:
            self.say(
                f"legacy mode: seed-compatible chunk server on TCP {s.bind}:"
                f"{self.legacy.server.port}, seed announcements on UDP {s.discovery_port}"
            )
        self.say(f"sharing {len(self._served)} item(s)")

    def touch(self) -> None:
        """Something the page shows changed: wake whoever waits on `change_event`."""
        self.change_event.set()
        self.change_event = asyncio.Event()

    def set_downloads_dir(self, text: str) -> None:
        """Where downloads started without a folder go (kept in the database)."""
        folder = Path(text).expanduser()
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder")
        assert self.db is not None
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('downloads_dir', ?) ON CONFLICT(key)"
                " DO UPDATE SET value = excluded.value",
                (str(folder.resolve()),),
            )
        self.touch()

    def _foreign(self, data: bytes, address: str) -> None:
        if self.legacy is not None:
            self.legacy.datagram(data, address)

    async def start_download(
        self, ref: str, output: str | None, dest_dir: Path, force: bool, wait: float
    ) -> dict[str, object]:
        """Start a download of what `ref` names: native content first, else (in legacy mode)
        a seed content, fetched at once from the original scripts' uploaders."""
        try:
            download = await self.downloads.start(ref, output, dest_dir, force, wait)
        except NotFoundError:
            if self.legacy is None:
                raise
            stats = await self.legacy.download(ref, output, dest_dir, force, wait)
            if self.library is not None:
                await asyncio.to_thread(_share_in_thread, self.settings.home, stats.dest)
                self.reload()
            return stats.as_json()
        return download.stats.as_json()

    def _peer_event(self, event: PeerEvent) -> None:
        if isinstance(event, PeerJoined):
            p = event.peer
            self.say(f"peer joined: {p.name!r} at {p.address}:{p.port}")
        elif isinstance(event, PeerLeft):
            self.say(f"peer left: {event.peer.name!r} at {event.peer.address} ({event.reason})")

    # ---- library ---------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the library from the database and announce if the catalogue changed."""
        assert self.library is not None
        served: dict[str, Served] = {}
        for record in self.library.contents():
            served[record.id] = Served(
                record, self.library.manifest(record.id), self.library.file_paths(record.id)
            )
        self._served = served
        self.catalog_changed()

    def catalog_changed(self) -> None:
        """What we hold changed: rebuild the catalogue and announce it if it differs."""
        self.touch()
        old = self._catalog.version if self._catalog else None
        self._catalog = None
        if self.swarm is not None and self.catalog().version != old:
            self.swarm.changed()

    def _spawn_refresh(self) -> None:
        """Re-hash or drop shared files that changed on disk, off the event loop."""
        if self._refreshing:
            return
        self._refreshing = True

        def work() -> tuple[list[ContentRecord], list[ContentRecord]]:
            db = Database.open_home(self.settings.home)
            try:
                return Library(db).refresh()
            finally:
                db.close()

        async def run() -> None:
            try:
                rehashed, dropped = await asyncio.to_thread(work)
                for record in rehashed:
                    self.say(f"re-hashed changed file: {record.name} is now {record.short_id}")
                for record in dropped:
                    self.say(f"stopped sharing {record.name}: gone from disk")
                if rehashed or dropped:
                    self.reload()
            finally:
                self._refreshing = False

        self._background(run())

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- ContentProvider (for the peer server) ---------------------------------------------

    def catalog(self) -> Catalog:
        """The current catalogue of complete shares (and partial downloads)."""
        if self._catalog is None:
            items = [
                CatalogItem(
                    s.record.id, s.record.name, s.record.kind, s.record.size, s.record.chunks
                )
                for s in self._served.values()
            ]
            items += self.downloads.partial_items(set(self._served))
            self._catalog = make_catalog(self.peer_id, items)
        return self._catalog

    def manifest_bytes(self, content_id: str) -> bytes:
        """Canonical manifest bytes of a held content."""
        served = self._served.get(content_id)
        if served is None:
            partial = self.downloads.manifest_bytes(content_id)
            if partial is None:
                raise ServeError(404, "unknown_content", "this peer does not hold that content")
            return partial
        return served.manifest.encoded

    def chunk_location(self, content_id: str, index: int) -> tuple[str, ChunkLocation]:
        """Where one chunk of a held content is, after checking its file is unchanged."""
        served = self._served.get(content_id)
        if served is None:
            partial = self.downloads.chunk_location(content_id, index)
            if partial is None:
                raise ServeError(404, "not_held", "this peer does not hold that chunk")
            return partial
        if not 0 <= index < served.manifest.chunk_total:
            raise ServeError(416, "bad_index", "no such chunk in that content")
        ref = served.manifest.chunk(index)
        path, recorded = served.files[ref.file_index]
        self._check_intact(path, recorded)
        return served.record.name, ChunkLocation(path, ref.offset, ref.length, ref.sha256)

    def file_location(self, content_id: str, path: str | None) -> str:
        """The on-disk path of one complete file of a held content."""
        served = self._served.get(content_id)
        if served is None:
            raise ServeError(404, "unknown_content", "this peer does not hold that content")
        files = served.manifest.files
        if path is None:
            if served.manifest.kind != "file":
                raise ServeError(400, "is_folder", "name a file inside the folder: /file/PATH")
            index = 0
        else:
            matches = [i for i, f in enumerate(files) if f.path == path]
            if not matches:
                raise ServeError(404, "unknown_path", "no such file in that content")
            index = matches[0]
        disk_path, recorded = served.files[index]
        self._check_intact(disk_path, recorded)
        return disk_path

    def served(
        self, peer: str, content_id: str, name: str, index: int, nbytes: int, result: str
    ) -> None:
        """Log one chunk upload."""
        if result == "ok":
            self.served_chunks += 1
            self.served_bytes += nbytes
        if self.translog is not None:
            self.translog.add("up", peer, content_id, name, index, nbytes, result)

    def served_items(self) -> dict[str, Served]:
        """The complete contents this peer serves, by content ID."""
        return self._served

    def file_is_intact(self, path: str, recorded: FileStat) -> bool:
        """Whether a shared file is still as it was hashed (re-hashing it in the background if
        not)."""
        assert self.library is not None
        if self.library.file_intact(path, recorded):
            return True
        self._spawn_refresh()
        return False

    def _check_intact(self, path: str, recorded: FileStat) -> None:
        if not self.file_is_intact(path, recorded):
            raise ServeError(410, "changed_on_disk", "the shared file changed on disk")

    def downloads_dir(self) -> Path:
        """Where downloads go when the caller names no folder."""
        if self.settings.downloads_dir is not None:
            return self.settings.downloads_dir
        if self.db is not None:
            row = self.db.conn.execute(
                "SELECT value FROM meta WHERE key = 'downloads_dir'"
            ).fetchone()
            if row is not None:
                return Path(row[0])
        return Path(platformdirs.user_downloads_dir())

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """The daemon's state for `swarmshare status`."""
        assert self.server is not None and self.swarm is not None
        stats = self.swarm.discovery.stats
        return {
            "peer_id": self.peer_id,
            "name": self.settings.name,
            "address": self.settings.bind,
            "port": self.server.port,
            "discovery_port": self.settings.discovery_port,
            "control_port": self.control_port,
            "broadcast": self.swarm.discovery.targets,
            "interval": self.settings.interval,
            "peers": len(self.swarm.table.peers),
            "items": len(self._served),
            "catalog_version": self.catalog().version,
            "uptime": time.time() - self.started,
            "served_chunks": self.served_chunks,
            "served_bytes": self.served_bytes,
            "private": self.settings.secret is not None,
            "auth_refused": self.server.auth_refused,
            "connections_refused": (
                0
                if self.server.guard is None
                else self.server.guard.stats.refused_total
                + self.server.guard.stats.refused_per_peer
            ),
            "slow_connections_cut": 0
            if self.server.guard is None
            else self.server.guard.stats.slow_cut,
            "downloads": [d.stats.as_json() for d in self.downloads.all()],
            "legacy": None
            if self.legacy is None or self.legacy.server is None
            else {
                "port": self.legacy.server.port,
                "seed_contents": len(self.legacy.live_contents()),
                "seed_datagrams": self.legacy.heard,
                "served": self.legacy.server.served_count,
                "refused": self.legacy.server.refused,
            },
            "discovery": {
                "received": stats.received,
                "announcements": stats.announcements,
                "malformed": stats.malformed,
                "oversized": stats.oversized,
                "foreign": stats.foreign,
                "rate_limited": stats.rate_limited,
                "sent": stats.sent,
            },
        }


def _share_in_thread(home: Path, path: str) -> None:
    db = Database.open_home(home)
    try:
        Library(db).share(path)
    finally:
        db.close()
