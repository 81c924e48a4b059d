"""What this peer holds and serves: its complete shares and the chunks its downloads have.

The shelf is the peer server's `ContentProvider`: it answers which catalogue to send, where a
chunk lives (after checking its file is unchanged on disk), and logs what was served. It reads
the library once per change (`reload`), never per request.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

from swarmshare.app.translog import TransferLog
from swarmshare.core.catalog import Catalog, CatalogItem, make_catalog
from swarmshare.core.location import ChunkLocation
from swarmshare.core.manifest import Manifest
from swarmshare.errors import NotFoundError, ServeError
from swarmshare.limits import REFRESH_RETRY_SECONDS
from swarmshare.store.hashing import FileStat
from swarmshare.store.library import ContentRecord, Library, refresh_home

log = logging.getLogger("swarmshare")
_PAD = re.compile(r"\.pad/([1-9][0-9]{0,9})")  # BEP 47: NAME/.pad/LENGTH


class Served:
    """A complete shared content as it is served: its record; its manifest and its files on
    disk are read from the library when first needed (a command that serves nothing never
    decodes a folder of a million files). NotFoundError when the content left the library."""

    def __init__(self, record: ContentRecord, library: Library) -> None:
        self.record = record
        self._library = library
        self._manifest: Manifest | None = None
        self._files: Sequence[tuple[str, FileStat]] | None = None

    @property
    def manifest(self) -> Manifest:
        """The content's manifest."""
        if self._manifest is None:
            self._manifest = self._library.manifest(self.record.id)
        return self._manifest

    @property
    def files(self) -> Sequence[tuple[str, FileStat]]:
        """The on-disk path and recorded stat of each file, in manifest order."""
        if self._files is None:
            self._files = self._library.file_paths(self.record.id)
        return self._files


class Partials(Protocol):
    """What downloads in progress hold (the shelf serves it too)."""

    def partial_items(self, complete: set[str]) -> list[CatalogItem]:
        """Catalogue entries, with bitmaps, of contents being downloaded."""

    def manifest_bytes(self, content_id: str) -> bytes | None:
        """The manifest of a content being downloaded, if known."""

    def chunk_location(self, content_id: str, index: int) -> tuple[str, ChunkLocation] | None:
        """Where a verified chunk of a download in progress is, if held."""


class _NoPartials:
    def partial_items(self, complete: set[str]) -> list[CatalogItem]:
        return []

    def manifest_bytes(self, content_id: str) -> bytes | None:
        return None

    def chunk_location(self, content_id: str, index: int) -> tuple[str, ChunkLocation] | None:
        return None


class Shelf:
    """The contents this peer serves; build, then `reload()`."""

    def __init__(
        self,
        library: Library,
        home: Path,
        peer_id: str,
        translog: TransferLog | None,
        on_change: Callable[[], None],
    ) -> None:
        self.library = library
        self.peer_id = peer_id
        self.partials: Partials = _NoPartials()
        self.served_chunks = 0
        self.served_bytes = 0
        self._home = home
        self._translog = translog
        self._on_change = on_change
        self._served: dict[str, Served] = {}
        self._catalog: Catalog | None = None
        self._refreshing = False
        self._tasks: set[asyncio.Future[None]] = set()

    # ---- what is held ------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the library from the database; announce if the catalogue changed."""
        served: dict[str, Served] = {}
        for record in self.library.contents():
            # A content never changes: what was read is kept while its record is the same.
            same = self._served.get(record.id)
            keep = same is not None and same.record == record
            served[record.id] = same if same is not None and keep else Served(record, self.library)
        self._served = served
        self.changed()

    def changed(self) -> None:
        """What we hold changed (a share, a download's new chunks): rebuild the catalogue."""
        self._catalog = None
        self._on_change()

    def shares(self) -> dict[str, Served]:
        """The complete contents this peer serves, by content ID."""
        return self._served

    def catalog(self) -> Catalog:
        """The current catalogue of complete shares and partial downloads."""
        if self._catalog is None:
            items = [
                CatalogItem(
                    s.record.id, s.record.name, s.record.kind, s.record.size, s.record.chunks
                )
                for s in self._served.values()
            ]
            items += self.partials.partial_items(set(self._served))
            self._catalog = make_catalog(self.peer_id, items)
        return self._catalog

    def version(self) -> str:
        """The catalogue's version, for announcements."""
        return self.catalog().version

    # ---- ContentProvider (for the peer server) -----------------------------------------------

    def manifest_bytes(self, content_id: str) -> bytes:
        """Canonical manifest bytes of a held content."""
        served = self._served.get(content_id)
        if served is not None:
            return self._read(served, files=False).manifest.encoded
        partial = self.partials.manifest_bytes(content_id)
        if partial is None:
            raise ServeError(404, "unknown_content", "this peer does not hold that content")
        return partial

    def manifest(self, content_id: str) -> Manifest:
        """The manifest of a complete shared content (for the LAN page and its zips)."""
        served = self._served.get(content_id)
        if served is None:
            raise ServeError(404, "unknown_content", "this peer does not share that content")
        return self._read(served, files=False).manifest

    def chunk_location(self, content_id: str, index: int) -> tuple[str, ChunkLocation]:
        """Where one chunk of a held content is, after checking its file is unchanged."""
        served = self._served.get(content_id)
        if served is None:
            partial = self.partials.chunk_location(content_id, index)
            if partial is None:
                raise ServeError(404, "not_held", "this peer does not hold that chunk")
            return partial
        self._read(served)
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
        self._read(served)
        if path is None:
            if served.manifest.kind != "file":
                raise ServeError(400, "is_folder", "name a file inside the folder: /file/PATH")
            index = 0
        else:
            found = served.manifest.find(path)
            if found is None:
                raise ServeError(404, "unknown_path", "no such file in that content")
            index = found
        disk_path, recorded = served.files[index]
        self._check_intact(disk_path, recorded)
        return disk_path

    def web_seed_file(self, content_id: str, path: str) -> str | int:
        """A web seed's NAME[/PATH] of a held content: the file's on-disk path, or the length
        of the BEP 47 pad file `NAME/.pad/N` a hybrid torrent names (served as zeros)."""
        served = self._served.get(content_id)
        if served is None:
            raise ServeError(404, "unknown_content", "this peer does not hold that content")
        manifest = self._read(served, files=False).manifest
        name, _, inside = path.partition("/")
        if name != manifest.name:
            raise ServeError(404, "unknown_path", "a web seed path starts with the content's name")
        if manifest.kind == "file":
            if inside:
                raise ServeError(404, "unknown_path", "no such file in that content")
            return self.file_location(content_id, None)
        if manifest.find(inside) is None:
            pad = _PAD.fullmatch(inside)
            if pad is not None and int(pad[1]) < manifest.piece_length:
                return int(pad[1])
        return self.file_location(content_id, inside)

    def _read(self, served: Served, files: bool = True) -> Served:
        """`served` with its manifest (and `files`) read; ServeError when no longer shared."""
        try:
            _ = served.manifest, served.files if files else None
        except NotFoundError:
            raise ServeError(
                404, "unknown_content", "this peer does not hold that content"
            ) from None
        return served

    def served(
        self, peer: str, content_id: str, name: str, index: int, nbytes: int, result: str
    ) -> None:
        """Log one chunk upload."""
        if result == "ok":
            self.served_chunks += 1
            self.served_bytes += nbytes
        if self._translog is not None:
            self._translog.add("up", peer, content_id, name, index, nbytes, result)

    # ---- files changing on disk --------------------------------------------------------------

    def file_is_intact(self, path: str, recorded: FileStat) -> bool:
        """Whether a shared file is still as it was hashed (re-hashing it in the background if
        not)."""
        if self.library.file_intact(path, recorded):
            return True
        self.refresh()
        return False

    def _check_intact(self, path: str, recorded: FileStat) -> None:
        if not self.file_is_intact(path, recorded):
            raise ServeError(410, "changed_on_disk", "the shared file changed on disk")

    def refresh(self) -> None:
        """Re-hash or drop shared files that changed on disk, off the event loop."""
        if self._refreshing:
            return
        self._refreshing = True

        async def run() -> None:
            try:
                result = await asyncio.to_thread(refresh_home, self._home)
                for record in result.rehashed:
                    log.info("re-hashed changed file: %s is now %s", record.name, record.short_id)
                for record in result.dropped:
                    log.info("stopped sharing %s: gone from disk", record.name)
                for record in result.unsettled:
                    log.info("not sharing %s while it is being written; retrying", record.name)
                if result.rehashed or result.dropped or result.unsettled:
                    self.reload()
                for record in result.unsettled:  # kept in the library, out of the catalogue
                    self._served.pop(record.id, None)
                if result.unsettled:
                    self.changed()
                    asyncio.get_running_loop().call_later(REFRESH_RETRY_SECONDS, self.refresh)
            finally:
                self._refreshing = False

        self._background(run())

    async def close(self) -> None:
        """Wait for a refresh in progress."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
