"""The BitTorrent bridge: one libtorrent session behind a small typed asyncio interface.

libtorrent is an optional extra, imported on first use (`swarmshare[bittorrent]`); without it
every entry point raises one clear UsageError. Nothing here is started unless asked for: no
session, no socket, no multicast.

How it works. libtorrent runs its own threads and sockets; it reports through alerts. The
session has libtorrent write to a pipe whenever alerts are waiting (`set_alert_fd`); the event
loop reads that pipe and pops the alerts, so the loop never blocks on libtorrent.
Two uses:

- **seeding** a content from its files in place: the torrent (made from the manifest, which
  already holds every hash) is added in seed mode, so nothing is hashed again;
- **fetching pieces** for the download engine: a torrent is added with every piece at priority
  0 (libtorrent fetches nothing on its own), and `piece()` asks for one piece with a deadline
  and returns its bytes once libtorrent has it. libtorrent keeps them in a scratch folder; the
  engine verifies and writes them into the download like any other chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmshare.core import torrent
from swarmshare.core.manifest import ManifestError
from swarmshare.errors import RemoteProtocolError, SwarmshareError, UsageError

log = logging.getLogger("swarmshare")

MISSING_EXTRA = "BitTorrent needs the optional extra: pip install 'swarmshare[bittorrent]'"
PIECE_DEADLINE_MS = 2000
SWARM_STATE_MAX_AGE_SECONDS = 0.25
MAX_TORRENT_FILE_BYTES = 64 << 20


class BitTorrentError(SwarmshareError):
    """libtorrent refused or failed something (a bad torrent, a port it cannot listen on)."""


class BadPieceError(BitTorrentError):
    """A BitTorrent peer sent a piece that failed libtorrent's hash check."""


def libtorrent() -> Any:
    """The libtorrent module; UsageError (one line) when the optional extra is missing."""
    try:
        import libtorrent as lt
    except ImportError:
        raise UsageError(MISSING_EXTRA) from None
    return lt


def available() -> bool:
    """Whether libtorrent can be imported."""
    try:
        libtorrent()
    except UsageError:
        return False
    return True


@dataclass(frozen=True)
class SessionConfig:
    """What one libtorrent session may do on the network."""

    address: str = "0.0.0.0"
    """The address it listens on and connects from."""
    port: int = 0
    """Its TCP/UDP listening port (0: any free port)."""
    lsd: bool = True
    """Local service discovery (BEP 14): multicast announcements on the LAN."""
    dht: bool = False
    """Join the mainline DHT (the wide-area swarm)."""
    trackers: tuple[str, ...] = ()
    """Trackers every torrent announces to."""

    def settings_pack(self) -> dict[str, Any]:
        """libtorrent's settings: UPnP and NAT-PMP always off (no router is ever asked to open
        a port), LSD and DHT as configured."""
        lt = libtorrent()
        return {
            "listen_interfaces": f"{_bracket(self.address)}:{self.port}",
            "outgoing_interfaces": "" if self.address in ("0.0.0.0", "::") else self.address,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_lsd": self.lsd,
            "enable_dht": self.dht,
            "dht_bootstrap_nodes": "" if not self.dht else _DHT_BOOTSTRAP,
            "allow_multiple_connections_per_ip": True,
            # A torrent fetched piece by piece is "finished" between requests: its peers must
            # not be dropped as redundant then.
            "close_redundant_connections": False,
            "alert_mask": (
                lt.alert.category_t.error_notification
                | lt.alert.category_t.status_notification
                | lt.alert.category_t.storage_notification
                | lt.alert.category_t.piece_progress_notification
                | lt.alert.category_t.connect_notification
            ),
            "user_agent": "swarmshare",
        }


_DHT_BOOTSTRAP = "dht.libtorrent.org:25401,router.bittorrent.com:6881"


@dataclass(frozen=True)
class TorrentFile:
    """A parsed .torrent (v2 or hybrid)."""

    data: bytes
    """The whole bencoded file."""
    infohash: str
    """The v2 infohash, 64 hex digits."""
    name: str


@dataclass(frozen=True)
class Magnet:
    """What a magnet link names: a v2 infohash, and where to look."""

    infohash: str
    name: str
    peers: tuple[tuple[str, int], ...] = ()
    trackers: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    uri: str = ""


def parse_torrent(data: bytes) -> TorrentFile:
    """A .torrent's bytes -> TorrentFile; UsageError for anything but a v2 or hybrid torrent."""
    lt = libtorrent()
    if len(data) > MAX_TORRENT_FILE_BYTES:
        raise UsageError(f"a .torrent file is at most {MAX_TORRENT_FILE_BYTES} bytes")
    try:
        info = lt.torrent_info(data)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UsageError(f"not a valid .torrent file: {exc}") from None
    hashes = info.info_hashes()
    if not hashes.has_v2():
        raise UsageError("a v1-only torrent has no v2 infohash: swarmshare takes v2 or hybrid ones")
    return TorrentFile(bytes(data), str(hashes.v2), str(info.name()))


def parse_magnet(uri: str) -> Magnet:
    """A magnet link -> Magnet; UsageError unless it names a v2 infohash (urn:btmh:1220...)."""
    found = torrent.parse_magnet(uri)
    if found.content_id is None:
        raise UsageError("the magnet link names no v2 infohash: swarmshare takes v2 and hybrid")
    peers: list[tuple[str, int]] = []
    for value in found.peers:
        host, _, port = value.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            peers.append((host.strip("[]"), int(port)))
    name = found.name or found.content_id[:12]
    return Magnet(found.content_id, name, tuple(peers), found.trackers, found.web_seeds, uri)


@dataclass
class _Fetching:
    handle: Any
    scratch: Path
    waiting: dict[int, list[asyncio.Future[bytes]]] = field(default_factory=dict)
    torrent: bytes | None = None
    state: tuple[float, tuple[frozenset[int], bool]] | None = None


class BitTorrentSession:
    """One libtorrent session. `async with BitTorrentSession(config) as bt:`."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._lt = libtorrent()
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seeding: dict[str, Any] = {}
        self._fetching: dict[str, _Fetching] = {}
        self._metadata: dict[str, list[asyncio.Future[None]]] = {}
        self._removing: set[str] = set()
        self._scratches: dict[str, Path] = {}
        self._listening = asyncio.Event()
        self._pump_armed = False
        self.listen_error: str | None = None
        self.listeners: list[Callable[[], None]] = []
        """Called when something a face shows may have changed (a peer, a piece)."""
        self.removed_listeners: list[Callable[[], None]] = []
        """Called when a torrent left the session (its infohash may be added again)."""

    async def __aenter__(self) -> BitTorrentSession:
        self._loop = asyncio.get_running_loop()
        lt = self._lt
        params = lt.session_params(self.config.settings_pack())
        try:
            self._session = lt.session(params)
        except RuntimeError as exc:
            raise BitTorrentError(f"libtorrent did not start: {exc}") from None
        # libtorrent writes a byte to this pipe when alerts are waiting, from its own thread and
        # without Python's lock (a Python notify callback there can deadlock against a call
        # on the loop's thread).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._session.set_alert_fd(self._wake_w)
        self._loop.add_reader(self._wake_r, self._pump)
        self._pump()  # alerts that came before
        return self

    async def __aexit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._wake_r)
        for fetching in self._fetching.values():
            for futures in fetching.waiting.values():
                for future in futures:
                    future.cancel()
        scratches = [f.scratch for f in self._fetching.values()] + list(self._scratches.values())
        self._fetching.clear()
        self._seeding.clear()
        # The session's destructor joins libtorrent's threads (and says goodbye to trackers):
        # the last reference is dropped in a worker thread so the loop keeps running meanwhile.
        box = [session]
        del session
        await asyncio.to_thread(_close_session, box)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for scratch in scratches:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    @property
    def port(self) -> int:
        """The port libtorrent listens on (0 when it does not)."""
        return int(self._session.listen_port()) if self._session is not None else 0

    async def wait_listening(self, seconds: float) -> int:
        """The listening port once libtorrent listens; BitTorrentError if it cannot."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), seconds)
        if self.listen_error is not None:
            raise BitTorrentError(self.listen_error)
        return self.port

    # ---- seeding -----------------------------------------------------------------------------

    def seed(self, torrent: bytes, save_path: Path, files: dict[str, str] | None = None) -> str:
        """Seed a torrent from its files without checking them (seed mode): each file at
        `files[its path in the torrent]` (absolute), else under `save_path`; its v2 infohash."""
        lt = self._lt
        params = self._params(torrent, save_path)
        if files:
            layout = params.ti.layout()
            renamed = {}
            for index in range(layout.num_files()):
                where = files.get(layout.file_path(index))
                if where is not None and where != str(save_path / layout.file_path(index)):
                    renamed[index] = where
            params.renamed_files = renamed
        params.flags |= lt.torrent_flags.seed_mode
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        handle = self._session.add_torrent(params)
        infohash = str(handle.info_hashes().v2)
        self._seeding[infohash] = handle
        return infohash

    def unseed(self, infohash: str) -> None:
        """Stop seeding (the files stay)."""
        handle = self._seeding.pop(infohash, None)
        if handle is not None:
            self._removing.add(infohash)
            self._session.remove_torrent(handle)

    def seeding(self) -> set[str]:
        """The infohashes seeded now."""
        return set(self._seeding)

    def busy(self, infohash: str) -> bool:
        """Whether a torrent is in the session (seeded, fetched, or still being removed)."""
        return infohash in self._seeding or infohash in self._fetching or infohash in self._removing

    # ---- fetching pieces ---------------------------------------------------------------------

    def fetch(
        self,
        torrent: bytes,
        scratch: Path,
        peers: list[tuple[str, int]] | tuple[tuple[str, int], ...] = (),
        web_seeds: tuple[str, ...] = (),
    ) -> str:
        """Join a torrent's swarm to fetch pieces on request (into `scratch`); its infohash."""
        lt = self._lt
        params = self._params(torrent, scratch)
        count = params.ti.num_pieces()
        # Pieces only on request; but a torrent that wants nothing is finished and does not
        # connect to seeders: one piece (the last) is wanted, so that it connects and learns
        # what its peers have (a torrent joined from a magnet link did so for the metadata).
        params.piece_priorities = [0] * (count - 1) + [1] if count else []
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        for url in web_seeds:
            params.url_seeds.append(url)
        infohash = self._infohash(params)
        if self.busy(infohash):
            raise UsageError(f"torrent {infohash[:12]} is already in the session")
        scratch.mkdir(parents=True, exist_ok=True)
        handle = self._session.add_torrent(params)
        self._fetching[infohash] = _Fetching(handle, scratch)
        for host, port in peers:
            handle.connect_peer((host, port))
        return infohash

    def connect(self, infohash: str, peers: list[tuple[str, int]]) -> None:
        """Tell a fetching torrent about more peers."""
        fetching = self._fetching.get(infohash)
        if fetching is not None:
            for host, port in peers:
                fetching.handle.connect_peer((host, port))

    async def piece(self, infohash: str, index: int) -> bytes:
        """The bytes of one piece (as libtorrent has them: checked against its own hashes,
        but the caller verifies again); waits until a peer sent it."""
        fetching = self._fetching.get(infohash)
        if fetching is None:
            raise BitTorrentError(f"torrent {infohash[:12]} is not being fetched")
        assert self._loop is not None
        future: asyncio.Future[bytes] = self._loop.create_future()
        first = index not in fetching.waiting
        fetching.waiting.setdefault(index, []).append(future)
        if first:
            handle = fetching.handle
            if handle.have_piece(index):
                handle.read_piece(index)
            else:
                handle.set_piece_deadline(
                    index, PIECE_DEADLINE_MS, self._lt.deadline_flags_t.alert_when_available
                )
        try:
            return await future
        finally:
            waiters = fetching.waiting.get(index)
            if waiters is not None and future in waiters:
                waiters.remove(future)

    def peer_count(self, infohash: str) -> int:
        """BitTorrent peers connected for a torrent."""
        fetching = self._fetching.get(infohash)
        handle = fetching.handle if fetching is not None else self._seeding.get(infohash)
        return 0 if handle is None else int(handle.status().num_peers)

    def swarm_state(self, infohash: str) -> tuple[frozenset[int], bool]:
        """What a fetched torrent can get now: the pieces libtorrent holds or a connected peer
        has; and whether it has web seeds (they hold everything)."""
        fetching = self._fetching.get(infohash)
        if fetching is None or not fetching.handle.is_valid():
            return frozenset(), False
        assert self._loop is not None
        now = self._loop.time()
        if fetching.state is not None and now - fetching.state[0] < SWARM_STATE_MAX_AGE_SECONDS:
            return fetching.state[1]  # the engine asks after every chunk: not libtorrent each time
        handle = fetching.handle
        status = handle.status(self._lt.torrent_handle.query_pieces)
        held = {i for i, h in enumerate(status.pieces) if h}
        # Empty when libtorrent has every piece (then it keeps no piece picker).
        held.update(i for i, peers in enumerate(handle.piece_availability()) if peers)
        state = frozenset(held), bool(handle.url_seeds())
        fetching.state = (now, state)
        return state

    def fetch_magnet(self, magnet: Magnet, scratch: Path) -> str:
        """Join a magnet link's swarm (into `scratch`); `await torrent(infohash)` then gives its
        .torrent. Until then libtorrent fetches as it likes (the piece layers come with pieces);
        from then on only pieces asked for."""
        lt = self._lt
        if self.busy(magnet.infohash):
            raise UsageError(f"torrent {magnet.infohash[:12]} is already in the session")
        try:
            params = lt.parse_magnet_uri(magnet.uri)
        except RuntimeError as exc:
            raise UsageError(f"not a valid magnet link: {exc}") from None
        params.save_path = str(scratch)
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        for url in self.config.trackers:
            params.trackers.append(url)
        scratch.mkdir(parents=True, exist_ok=True)
        handle = self._session.add_torrent(params)
        self._fetching[magnet.infohash] = _Fetching(handle, scratch)
        for host, port in magnet.peers:
            handle.connect_peer((host, port))
        return magnet.infohash

    async def torrent(self, infohash: str) -> bytes:
        """The .torrent (info dict and every piece layer) of a torrent being fetched, once
        libtorrent has it; cancel to give up."""
        fetching = self._fetching.get(infohash)
        if fetching is None:
            raise BitTorrentError(f"torrent {infohash[:12]} is not being fetched")
        assert self._loop is not None
        while fetching.torrent is None:
            handle = fetching.handle
            if handle.is_valid() and handle.has_metadata():
                handle.save_resume_data(self._lt.save_resume_flags_t.save_info_dict)
            future: asyncio.Future[None] = self._loop.create_future()
            self._metadata.setdefault(infohash, []).append(future)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, 1.0)
        handle = fetching.handle
        if handle.is_valid():  # from now on, only the pieces asked for
            count = handle.torrent_file().num_pieces()
            handle.prioritize_pieces([1 if handle.have_piece(i) else 0 for i in range(count)])
        return fetching.torrent

    def stop_fetching(self, infohash: str) -> None:
        """Leave a torrent's swarm and forget its scratch pieces."""
        fetching = self._fetching.pop(infohash, None)
        if fetching is None:
            return
        for futures in fetching.waiting.values():
            for future in futures:
                future.cancel()
        self._removing.add(infohash)
        self._scratches[infohash] = fetching.scratch
        self._session.remove_torrent(fetching.handle, self._lt.session.delete_files)

    # ---- alerts ------------------------------------------------------------------------------

    def _pump(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass
        if self._session is None:
            return
        lt = self._lt
        changed = False
        for alert in self._session.pop_alerts():
            if isinstance(alert, lt.read_piece_alert):
                self._piece_read(alert)
                changed = True
            elif isinstance(alert, lt.listen_succeeded_alert):
                self._listening.set()
            elif isinstance(alert, lt.listen_failed_alert):
                self.listen_error = f"BitTorrent cannot listen: {alert.message()}"
                self._listening.set()
            elif isinstance(alert, lt.metadata_received_alert | lt.piece_finished_alert):
                self._wake_metadata()
                changed = True
            elif isinstance(alert, lt.torrent_removed_alert):
                self._removing.discard(str(alert.info_hashes.v2))
                for listener in list(self.removed_listeners):
                    listener()
            elif isinstance(alert, lt.torrent_deleted_alert | lt.torrent_delete_failed_alert):
                scratch = self._scratches.pop(str(alert.info_hashes.v2), None)
                if scratch is not None:  # libtorrent deleted its files; the folders are ours
                    shutil.rmtree(scratch, ignore_errors=True)
            elif isinstance(alert, lt.save_resume_data_alert):
                self._resume_data(alert)
            elif isinstance(alert, lt.hash_failed_alert):
                self._piece_failed(alert)
            elif isinstance(alert, lt.peer_connect_alert | lt.peer_disconnected_alert):
                changed = True
            elif alert.category() & lt.alert.category_t.error_notification:
                log.debug("BitTorrent: %s", alert.message())
        if changed:
            self._wake_metadata()
            for listener in list(self.listeners):
                listener()

    def _piece_read(self, alert: Any) -> None:
        infohash = str(alert.handle.info_hashes().v2) if alert.handle.is_valid() else ""
        fetching = self._fetching.get(infohash)
        if fetching is None:
            return
        futures = fetching.waiting.pop(alert.piece, [])
        if alert.error.value():
            error = BitTorrentError(f"BitTorrent piece {alert.piece}: {alert.error.message()}")
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return
        data = bytes(alert.buffer)
        for future in futures:
            if not future.done():
                future.set_result(data)

    def _resume_data(self, alert: Any) -> None:
        fetching = self._fetching.get(str(alert.params.info_hashes.v2))
        if fetching is None:
            return
        # A piece layer still missing (RuntimeError), or written before libtorrent had all its
        # hashes (it does not hash to its root yet): asked again at the next save.
        with contextlib.suppress(RuntimeError, ManifestError):
            data = bytes(self._lt.bencode(self._lt.write_torrent_file(alert.params, 0)))
            torrent.read_torrent(data)
            fetching.torrent = data
            self._wake_metadata()

    def _piece_failed(self, alert: Any) -> None:
        log.debug("BitTorrent: %s", alert.message())
        fetching = self._fetching.get(str(alert.handle.info_hashes().v2))
        if fetching is None:
            return
        error = BadPieceError(f"a BitTorrent peer sent a bad piece {alert.piece_index}")
        for future in fetching.waiting.pop(alert.piece_index, []):
            if not future.done():
                future.set_exception(error)

    def _wake_metadata(self) -> None:
        for futures in self._metadata.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
            futures.clear()

    # ---- helpers -----------------------------------------------------------------------------

    def _params(self, torrent: bytes, save_path: Path) -> Any:
        lt = self._lt
        try:
            params = lt.load_torrent_buffer(torrent)
        except RuntimeError as exc:
            raise RemoteProtocolError(f"not a valid .torrent: {exc}") from None
        params.save_path = str(save_path)
        for url in self.config.trackers:
            params.trackers.append(url)
        return params

    def _infohash(self, params: Any) -> str:
        return str(params.ti.info_hashes().v2)


def _close_session(box: list[Any]) -> None:
    session = box.pop()
    session.pause()
    del session


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def torrent_bytes(path_or_data: Path | bytes) -> bytes:
    """The bytes of a .torrent file (a path), bounded."""
    if isinstance(path_or_data, bytes):
        return path_or_data
    try:
        with path_or_data.open("rb") as f:
            return f.read(MAX_TORRENT_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path_or_data}: {exc.strerror}") from None
