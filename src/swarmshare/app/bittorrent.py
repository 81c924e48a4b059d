"""BitTorrent in the app: the seeder of every share, and torrents as one more kind of origin.

- `Seeder` keeps the libtorrent session seeding exactly the contents the shelf serves, each from
  its files in place (the torrent is made from the manifest, which holds every hash already).
- `TorrentOrigin` is where a `get magnet:…` or `get X.torrent` download comes from: the LAN
  holders of the content (found by its ID, which is the v2 infohash) and, when a libtorrent
  session is at hand, a `BitTorrentSource` that asks libtorrent for pieces. The engine verifies
  and writes those like any other chunk: libtorrent is a source, never the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmshare.app.shelf import Shelf
from swarmshare.app.sources import Source, SourceError, SwarmOrigin
from swarmshare.core.manifest import ChunkRef, Manifest, ManifestError
from swarmshare.core.torrent import read_torrent, torrent_file
from swarmshare.core.transfer import ChunkOutcome
from swarmshare.errors import SwarmshareError, UsageError
from swarmshare.net.bittorrent import (
    BadPieceError,
    BitTorrentError,
    BitTorrentSession,
    Magnet,
    SessionConfig,
    parse_magnet,
    parse_torrent,
    torrent_bytes,
)
from swarmshare.net.chunkconn import Buffer
from swarmshare.settings import Settings

log = logging.getLogger("swarmshare")

MAX_TORRENT_DOWNLOAD_BYTES = 64 << 20
TORRENT_URL_TIMEOUT_SECONDS = 30.0
LISTEN_WAIT_SECONDS = 10.0
BITTORRENT_RECHECK_SECONDS = 1.0


def session_config(settings: Settings, *, serving: bool) -> SessionConfig:
    """The session a peer runs: the daemon's on --bittorrent-port with LSD (not on loopback), a
    command's own on any port, without LSD."""
    loopback = settings.bind.startswith("127.") or settings.bind == "::1"
    return SessionConfig(
        address=settings.bind,
        port=settings.bittorrent_port if serving else 0,
        lsd=serving and not loopback,
        dht=settings.dht,
        trackers=settings.trackers,
    )


@dataclass(frozen=True)
class TorrentRef:
    """What a torrent reference resolved to: the .torrent bytes (when known) or a magnet."""

    content_id: str
    name: str
    torrent: bytes | None = None
    magnet: Magnet | None = None
    peers: tuple[tuple[str, int], ...] = ()

    def stored(self) -> bytes:
        """What a download record keeps of it: the .torrent, or else the magnet link."""
        if self.torrent is not None:
            return self.torrent
        return self.magnet.uri.encode() if self.magnet is not None else b""


def stored_torrent_ref(stored: bytes) -> TorrentRef:
    """A TorrentRef back from `TorrentRef.stored()`; UsageError if it is not one."""
    if stored.startswith(b"magnet:"):
        magnet = parse_magnet(stored.decode("utf-8", "replace"))
        return TorrentRef(magnet.infohash, magnet.name, magnet=magnet, peers=magnet.peers)
    try:
        manifest = read_torrent(stored).manifest
    except ManifestError as exc:
        raise UsageError(f"not a BitTorrent v2 torrent: {exc}") from None
    return TorrentRef(manifest.content_id, manifest.name, torrent=stored)


async def resolve_torrent(ref: str, bind: str | None = None) -> TorrentRef:
    """Read a magnet link, a .torrent file, or a .torrent at an http(s) URL (bounded; fetched
    from the address `bind` when given)."""
    if ref.lower().startswith("magnet:"):
        magnet = parse_magnet(ref)
        return TorrentRef(magnet.infohash, magnet.name, magnet=magnet, peers=magnet.peers)
    if ref.lower().startswith(("http://", "https://")):
        data = await _download_torrent(ref, bind)
    else:
        data = await asyncio.to_thread(_read_torrent_file, ref)
    try:
        manifest = read_torrent(data).manifest
    except ManifestError as exc:
        raise UsageError(f"{ref}: not a BitTorrent v2 torrent: {exc}") from None
    return TorrentRef(manifest.content_id, manifest.name, torrent=data)


def _read_torrent_file(ref: str) -> bytes:
    return torrent_bytes(Path(ref).expanduser())


async def _download_torrent(url: str, bind: str | None) -> bytes:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=TORRENT_URL_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(local_addr=(bind, 0) if bind else None)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as http,
            http.get(url) as response,
        ):
            if response.status != 200:
                raise UsageError(f"{url}: HTTP {response.status}")
            data = await response.content.read(MAX_TORRENT_DOWNLOAD_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UsageError(f"cannot fetch {url}: {exc or 'timed out'}") from None
    if len(data) > MAX_TORRENT_DOWNLOAD_BYTES:
        raise UsageError(f"{url}: a .torrent is at most {MAX_TORRENT_DOWNLOAD_BYTES} bytes")
    return data


# ---- seeding every share ---------------------------------------------------------------------


class Seeder:
    """Seeds every content the shelf serves in one libtorrent session; `sync()` on changes."""

    def __init__(self, session: BitTorrentSession, shelf: Shelf) -> None:
        self.session = session
        self.shelf = shelf
        self._seeded: set[str] = set()

    def sync(self) -> None:
        """Seed what is newly shared, stop seeding what no longer is."""
        shares = self.shelf.shares()
        for content_id in self._seeded - set(shares):
            self.session.unseed(content_id)
            self._seeded.discard(content_id)
        for content_id, served in shares.items():
            if content_id in self._seeded or self.session.busy(content_id):
                continue  # a download of it still leaving the session: seeded once it left
            try:
                manifest = served.manifest
                files = _files_of(manifest, [path for path, _stat in served.files])
                root = Path(served.record.root)
                self.session.seed(torrent_file(manifest), root.parent, files)
            except (SwarmshareError, OSError, RuntimeError) as exc:
                log.warning("BitTorrent: cannot seed %s: %s", served.record.name, exc)
                continue
            self._seeded.add(content_id)

    def seeded(self) -> set[str]:
        """The content IDs seeded now."""
        return set(self._seeded)


def _files_of(manifest: Manifest, paths: list[str]) -> dict[str, str]:
    """Each file's path in the torrent -> its absolute path on disk."""
    if manifest.kind == "file":
        return {manifest.name: os.path.abspath(paths[0])}
    return {
        f"{manifest.name}/{manifest.path_of(index)}": os.path.abspath(path)
        for index, path in enumerate(paths)
    }


# ---- torrents as an origin -------------------------------------------------------------------


@dataclass
class BitTorrentSource:
    """The BitTorrent swarm of one torrent, through libtorrent: pieces on request, for the
    chunks no LAN holder has (LAN holders come first)."""

    session: BitTorrentSession
    infohash: str
    lan: list[Source] = field(default_factory=list)
    key: str = "bittorrent"
    label: str = "BitTorrent"
    version: object = None
    _everything: bool = False
    _have: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self._have, self._everything = self.session.swarm_state(self.infohash)
        lan = tuple(s.version for s in self.lan)
        self.version = (self._everything, len(self._have), hash(self._have), lan)

    def offers(self) -> bool:
        """Whether it has anything at all to offer now."""
        return self._everything or bool(self._have)

    def holds(self, index: int) -> bool:
        """What no LAN holder has, of what libtorrent holds or a connected BitTorrent peer
        has (or everything, with web seeds)."""
        if any(source.holds(index) for source in self.lan):
            return False
        return self._everything or index in self._have

    async def fetch(self, ref: ChunkRef) -> Buffer:
        """One piece from libtorrent (the engine verifies it)."""
        try:
            data = await self.session.piece(self.infohash, ref.index)
        except BadPieceError as exc:
            raise SourceError(str(exc), ChunkOutcome.BAD_HASH) from None
        except BitTorrentError as exc:
            raise SourceError(str(exc), ChunkOutcome.UNREACHABLE) from None
        if len(data) < ref.length:
            raise SourceError("a BitTorrent piece of the wrong size", ChunkOutcome.SHORT)
        return bytearray(memoryview(data)[: ref.length])

    def release(self, buffer: Buffer) -> None:
        """Nothing pooled."""


@dataclass
class TorrentOrigin:
    """A content named by a magnet link or a .torrent: LAN holders first, BitTorrent too."""

    lan: SwarmOrigin
    ref: TorrentRef
    scratch: Path
    open_session: Callable[[], Coroutine[Any, Any, BitTorrentSession | None]]
    unverified: bool = False
    _torrent: bytes | None = None
    _torrent_infohash: str | None = None
    _recheck: asyncio.TimerHandle | None = None
    _joining: asyncio.Task[None] | None = None
    _session: BitTorrentSession | None = None
    _infohash: str | None = None
    _manifest: Manifest | None = None
    _pending: asyncio.Task[bytes] | None = None
    _problems: list[str] = field(default_factory=list)
    _wakes: list[Callable[[], None]] = field(default_factory=list)

    async def manifest(self) -> Manifest | None:
        """From the .torrent; for a magnet, from a LAN holder or else from BitTorrent peers."""
        if self._manifest is not None:
            return self._manifest
        if self.ref.torrent is not None:
            self._manifest = read_torrent(self.ref.torrent).manifest
            await self._join(self.ref.torrent)
            return self._manifest
        found = await self.lan.manifest()
        if found is not None:
            self._manifest = found
            await self._join(torrent_file(found))
            return found
        return await self._from_swarm()

    async def _from_swarm(self) -> Manifest | None:
        assert self.ref.magnet is not None
        session = await self._open()
        if session is None:
            return None
        if self._pending is None:
            if session.busy(self.ref.content_id):
                return None  # an earlier run's torrent is still leaving the session
            self._infohash = session.fetch_magnet(self.ref.magnet, self.scratch)
            self._pending = asyncio.ensure_future(session.torrent(self._infohash))
        if not self._pending.done():
            return None
        try:
            data = self._pending.result()
            manifest = read_torrent(data).manifest
        except (ManifestError, BitTorrentError) as exc:
            self._problem(f"BitTorrent peers sent a bad torrent: {exc}")
            return None
        if manifest.content_id != self.ref.content_id:
            self._problem("BitTorrent peers sent the torrent of another content")
            return None
        self._manifest, self._torrent = manifest, data
        return manifest

    async def _join(self, torrent: bytes) -> None:
        self._torrent = torrent
        await self._open()
        self._try_join()

    def _try_join(self) -> None:
        """Join the torrent's swarm (once the session is open and the torrent known)."""
        session, torrent = self._session, self._torrent
        if session is None or torrent is None or self._infohash is not None:
            return
        try:
            if self._torrent_infohash is None:
                self._torrent_infohash = parse_torrent(torrent).infohash
            infohash = self._torrent_infohash
            if infohash in session.seeding() or session.busy(infohash):
                return  # seeded here already, or an earlier run's still leaving: next time
            self._infohash = session.fetch(torrent, self.scratch, self.ref.peers)
        except (BitTorrentError, UsageError) as exc:
            self._problem(f"BitTorrent: {exc}")

    async def _open(self) -> BitTorrentSession | None:
        if self._session is None:
            try:
                self._session = await self.open_session()
            except SwarmshareError as exc:
                self._problem(str(exc))
                return None
            if self._session is not None:
                self._session.listeners.append(self._wake)
            else:
                self._problem("BitTorrent is off in this daemon (run --bittorrent): LAN only")
        return self._session

    def _wake(self) -> None:
        for wake in list(self._wakes):
            wake()

    def sources(self, manifest: Manifest) -> list[Source]:
        """The LAN holders, and the BitTorrent swarm once joined."""
        found = self.lan.sources(manifest)
        if self._torrent is None and self._joining is None:
            # A remembered download of a magnet link: its manifest is known, the swarm not
            # joined yet (the torrent is the manifest's).
            self._joining = asyncio.ensure_future(self._join(torrent_file(manifest)))
        self._try_join()
        if self._session is not None and self._infohash is not None:
            swarm = BitTorrentSource(self._session, self._infohash, list(found))
            if swarm.offers():
                found.append(swarm)
            elif self._recheck is None:
                # Not a holder while it offers nothing (so that a download without any holder
                # pauses after its wait); looked at again in a moment.
                self._recheck = asyncio.get_running_loop().call_later(
                    BITTORRENT_RECHECK_SECONDS, self._rechecked
                )
        return found

    def _rechecked(self) -> None:
        self._recheck = None
        self._wake()

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Wake on LAN changes and on BitTorrent peers and pieces."""
        stop_lan = self.lan.watch(wake)
        self._wakes.append(wake)
        if self._torrent is not None and self._infohash is None and self._joining is None:
            self._joining = asyncio.ensure_future(self._join(self._torrent))  # a resumed run

        def stop() -> None:
            stop_lan()
            if wake in self._wakes:
                self._wakes.remove(wake)
            if not self._wakes:
                self.close()  # the run ended: leave the swarm until the next one

        return stop

    def problems(self) -> list[str]:
        """The LAN holders' problems and BitTorrent's."""
        return self.lan.problems() + self._problems[-3:]

    def close(self) -> None:
        """Leave the BitTorrent swarm (the download ended)."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        for task in (self._pending, self._joining):
            if task is not None:
                task.cancel()
        self._joining = None
        if self._session is not None:
            with contextlib.suppress(ValueError):
                self._session.listeners.remove(self._wake)
            if self._infohash is not None:
                self._session.stop_fetching(self._infohash)
        self._infohash = None
        self._pending = None

    def _problem(self, line: str) -> None:
        if line not in self._problems:
            log.warning("%s", line)
            self._problems.append(line)
