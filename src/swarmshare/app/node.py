"""The app: everything a face (the CLI, the page) can ask of swarmshare, in one typed interface.

A `Node` is built from settings and wires the parts, each given only what it needs: the library
(store), the shelf of what is served, the swarm (discovery and catalogues), the seed view, the
transfers (the one download engine), the transfer log. The daemon runs one with a peer server
and a control API in front (daemon.py); a command run without a daemon runs one in-process
(session.py). Both answer with the same methods, so the same command behaves the same either way.

Network parts start on demand: `share` or `library` without a daemon open no socket; `ls` starts
discovery without listening and waits for answers; `get` listens too (to hear holders and the
original scripts' announcements).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from swarmshare.app.download import Destination, EngineDeps
from swarmshare.app.seeds import SeedServing, SeedView
from swarmshare.app.shares import Json, ShareProgress, library_json, share_json
from swarmshare.app.shelf import Shelf
from swarmshare.app.sources import DeferredOrigin, Origin, SeedOrigin, SwarmOrigin
from swarmshare.app.swarm import Swarm, peer_json, uses_ipv6
from swarmshare.app.transfers import Transfers
from swarmshare.app.translog import TransferLog
from swarmshare.core.auth import derive_key, web_seed_token
from swarmshare.core.manifest import Manifest
from swarmshare.core.peers import PeerEvent, PeerJoined, PeerLeft
from swarmshare.core.refs import resolve_ref
from swarmshare.core.torrent import is_torrent_ref, magnet, torrent_file
from swarmshare.errors import NotFoundError, SwarmshareError, UsageError
from swarmshare.net.chunkconn import pinning_context
from swarmshare.net.client import PeerClient
from swarmshare.net.interfaces import ipv4_interfaces, is_wildcard
from swarmshare.settings import Settings
from swarmshare.store.db import Database
from swarmshare.store.downloads import DownloadTable
from swarmshare.store.hashing import ScannedFile, v1_piece_hashes
from swarmshare.store.identity import Identity, load_identity
from swarmshare.store.library import ContentRecord, Library, share_paths

if TYPE_CHECKING:
    from swarmshare.app.bittorrent import Seeder, TorrentOrigin, TorrentRef
    from swarmshare.app.localsend import LocalSendService
    from swarmshare.core.localsend import SwarmOffer
    from swarmshare.net.bittorrent import BitTorrentSession
    from swarmshare.net.server import PeerServer

log = logging.getLogger("swarmshare")

_HEX64 = re.compile(r"[0-9a-f]{64}")
DOWNLOADS_DIR_KEY = "downloads_dir"
WATCH_MIN_GAP_SECONDS = 0.1
LAN_HEAD_START_SECONDS = 2.0
PRIVATE_TORRENT_LINE = (
    "a private swarm fetches a torrent's content from its members only, never over BitTorrent"
)


class Changes:
    """A counter bumped whenever something a face shows changed, and a way to wait for it."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        """Something changed."""
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, after: int, seconds: float) -> int:
        """The version, once it is past `after` or `seconds` passed."""
        if self.version > after:
            return self.version
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        return self.version


@dataclass(frozen=True)
class Found:
    """What a name, ID or ID prefix resolved to."""

    content_id: str
    name: str
    origin: Origin | None = None
    torrent: bytes = b""


class Node:
    """One peer's app. `async with Node(settings) as node:`; `serve=True` for the daemon."""

    def __init__(self, settings: Settings, *, serve: bool = False) -> None:
        self.settings = settings
        self.serve = serve
        self.changes = Changes()
        self.started = time.time()
        self.server: PeerServer | None = None
        self.swarm: Swarm | None = None
        self.seed_serving: SeedServing | None = None
        self.localsend: LocalSendService | None = None
        self._sharing: set[asyncio.Task[object]] = set()
        self.bittorrent: BitTorrentSession | None = None
        self.seeder: Seeder | None = None
        self._stack = contextlib.AsyncExitStack()
        self._listening = False
        key = derive_key(settings.secret) if settings.secret else None
        self._key = key
        self._identity: Identity | None = None

    @property
    def identity(self) -> Identity:
        """This peer's certificate (made in the home on first use)."""
        if self._identity is None:
            self._identity = load_identity(self.settings.home, self.settings.name)
        return self._identity

    async def __aenter__(self) -> Node:
        s = self.settings
        try:
            self.db = Database.open_home(s.home)
        except OSError as exc:
            raise UsageError(f"cannot use data directory {s.home}: {exc.strerror}") from None
        self._stack.callback(self.db.close)
        self.library = Library(self.db)
        self.peer_id = self.db.peer_id()
        self.translog = await self._stack.enter_async_context(TransferLog(self.db))
        self.translog.on_flush = self.changes.bump
        self.shelf = Shelf(self.library, s.home, self.peer_id, self.translog, self._held_changed)
        self.seeds = SeedView(s.legacy_port, self._is_native, self.translog)
        loop = asyncio.get_running_loop()
        # A private swarm speaks TLS to each peer, pinned to the certificate its signed
        # announcements name; an open swarm plain HTTP.
        self.client = await self._stack.enter_async_context(
            PeerClient(
                local_address=s.bind,
                idle_timeout=s.read_idle_timeout,
                key=self._key,
                tls=pinning_context() if self._key else None,
                pins=self._pin,
            )
        )
        deps = EngineDeps(
            clock=loop,
            translog=self.translog,
            find_chunks=self.library.find_chunks,
            add_to_library=self._add_to_library,
            chunk_timeout=s.chunk_timeout,
        )
        self.transfers = Transfers(
            DownloadTable(self.db), deps, self._origin, self.changes.bump, self.shelf.changed
        )
        self.shelf.partials = self.transfers
        self._stack.push_async_callback(self.transfers.close)
        self._stack.push_async_callback(self.shelf.close)
        self.shelf.reload()
        if self.serve and s.bittorrent:
            from swarmshare.net.bittorrent import libtorrent

            libtorrent()  # a missing extra is said before anything listens
        if self.serve:
            # Imported here: the HTTP server (aiohttp) is a tenth of a second of start-up that a
            # command without a daemon, which serves nothing, need not pay.
            from swarmshare.net.lanpage import LanPage
            from swarmshare.net.server import PeerServer

            self.server = await self._stack.enter_async_context(
                PeerServer(
                    self.shelf,
                    s.bind,
                    s.port,
                    key=self._key,
                    upload_bytes_per_second=s.upload_bytes_per_second,
                    ipv6=uses_ipv6(s),
                    tls=self.identity.server_context() if self._key else None,
                    lan_page=None if self._key else LanPage(self.shelf, s.name),
                )
            )
            await self._start_swarm(listen=True)
            if s.legacy:
                assert self.swarm is not None
                self.seed_serving = await self._stack.enter_async_context(
                    SeedServing(
                        self.shelf,
                        self.translog,
                        self.swarm.discovery.send_raw,
                        s.bind,
                        s.legacy_port,
                        s.interval,
                    )
                )
            if s.bittorrent:
                await self._start_bittorrent()
        if self.serve and s.localsend:
            from swarmshare.app.localsend import LocalSendService

            self._stack.push_async_callback(self._finish_sharing)

            self.localsend = await self._stack.enter_async_context(
                LocalSendService(
                    s,
                    self.server.port if self.server else None,
                    self.downloads_dir,
                    self._received,
                    self.changes.bump,
                    self._swarm_fetch,
                )
            )
        self.transfers.restore(resume=self.serve)
        return self

    async def _start_bittorrent(self) -> None:
        """The daemon's one libtorrent session, seeding every share (--bittorrent)."""
        from swarmshare.app.bittorrent import LISTEN_WAIT_SECONDS, Seeder, session_config
        from swarmshare.net.bittorrent import BitTorrentSession

        session = BitTorrentSession(session_config(self.settings, serving=True))
        self.bittorrent = await self._stack.enter_async_context(session)
        await session.wait_listening(LISTEN_WAIT_SECONDS)
        seeder = self.seeder = Seeder(session, self.shelf)
        session.removed_listeners.append(seeder.sync)
        seeder.sync()

    async def _bittorrent_session(self) -> BitTorrentSession | None:
        """The session torrent downloads fetch through: the daemon's (None without
        --bittorrent: nothing listens for BitTorrent then), or a command's own. Never in a
        private swarm: its contents' IDs do not leave it (no tracker, web seed or peer of a
        torrent is contacted)."""
        if self._key is not None:
            raise UsageError(PRIVATE_TORRENT_LINE)
        if self.bittorrent is not None or self.serve:
            return self.bittorrent
        from swarmshare.app.bittorrent import session_config
        from swarmshare.net.bittorrent import BitTorrentSession

        session = BitTorrentSession(session_config(self.settings, serving=False))
        self.bittorrent = await self._stack.enter_async_context(session)
        return self.bittorrent

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    # ---- the network, on demand --------------------------------------------------------------

    async def _start_swarm(self, listen: bool) -> Swarm:
        if self.swarm is not None:
            return self.swarm
        serving_port = self.server.port if self.server is not None else 0
        swarm = Swarm(
            self.settings,
            self.peer_id,
            self.client,
            catalog_version=self.shelf.version,
            serving_port=serving_port,
            listen=listen,
            on_foreign=self.seeds.datagram,
            fingerprint=self.identity.fingerprint if self._key and serving_port else "",
            lan_page=self.server is not None and self.server.lan_page is not None,
        )
        self.swarm = await self._stack.enter_async_context(swarm)
        self._listening = listen
        swarm.listeners.append(self._peer_event)
        swarm.catalog_listeners.append(lambda _p: self.changes.bump())
        return swarm

    async def look(self, wait: float) -> None:
        """Without a daemon: ask the network and wait up to `wait` s for the answers."""
        swarm = await self._start_swarm(listen=False)
        if not self.serve:
            await swarm.settle(wait)

    def _peer_event(self, event: PeerEvent) -> None:
        self.changes.bump()
        if isinstance(event, PeerJoined):
            p = event.peer
            log.info("peer joined: %r at %s:%d", p.name, p.address, p.port)
        elif isinstance(event, PeerLeft):
            log.info("peer left: %r at %s (%s)", event.peer.name, event.peer.address, event.reason)

    def _pin(self, host: str, port: int) -> str | None:
        """The certificate fingerprint the peer at host:port announced, signed."""
        if self.swarm is None:
            return None
        for peer in self.swarm.table.peers.values():
            if peer.address == host and peer.port == port:
                return peer.fingerprint or None
        return None

    def lan_page_url(self) -> str | None:
        """Where browsers on the LAN find this peer's page (None: no page)."""
        server = self.server
        if server is None or server.lan_page is None:
            return None
        host = self.settings.bind
        if is_wildcard(host):
            found = ipv4_interfaces()
            host = str(found[0][1].ip) if found else "127.0.0.1"
        return f"http://{host}:{server.port}/"

    def _is_native(self, address: str) -> bool:
        if address == self.settings.bind:
            return True
        return self.swarm is not None and any(p.address == address for p in self.swarm.table.live())

    def _held_changed(self) -> None:
        self.changes.bump()
        if self.swarm is not None and self.serve:
            self.swarm.changed()

    # ---- views -------------------------------------------------------------------------------

    def network(self) -> list[Json]:
        """What the network shares (and the original scripts' contents heard)."""
        held = set(self.shelf.catalog().by_id())
        items: list[Json] = []
        if self.swarm is not None:
            items = [i.as_json() | {"here": i.id in held} for i in self.swarm.network()]
        items += [c.as_json() | {"here": False} for c in self.seeds.live_contents()]
        return items

    def peers(self) -> list[Json]:
        """The live peers, native and seed."""
        found: list[Json] = []
        if self.swarm is not None:
            found = [peer_json(p) for p in self.swarm.table.live()]
        return found + self.seeds.peers()

    def library_list(self) -> list[Json]:
        """What this peer shares, each with whether its files are intact."""
        return library_json(self.library)

    async def share(self, paths: list[str], progress: ShareProgress | None = None) -> list[Json]:
        """Hash and share files or folders (off the event loop); one result or error each."""
        results = await asyncio.to_thread(share_paths, self.settings.home, paths, progress)
        out = share_json(paths, results)
        self.reload()
        return out

    def unshare(self, ref: str) -> Json:
        """Stop sharing a content (by name or ID prefix)."""
        record = self.library.unshare(ref)
        self.reload()
        return record.as_json()

    async def torrent(self, ref: str, hybrid: bool, wait: float) -> Json:
        """A .torrent of a content held here or on the network (`wait` s to hear of it): its
        web seeds are every known holder's BEP 19 route (this peer's too when it serves);
        `hybrid` adds the v1 half (SHA-1 pieces over BEP 47 pad files), read from the files
        here. The file's bytes come back base64-encoded in "torrent"."""
        await self.look(wait)
        try:
            record: ContentRecord | None = self.library.resolve(ref)
        except NotFoundError:
            record = None
        holders: list[tuple[str, int]] = []
        if record is not None:
            content_id, name = record.id, record.name
            manifest = self.library.manifest(content_id)
            if self.server is not None:
                holders += [(host, self.server.port) for host in _own_hosts(self.server.host)]
        else:
            found = self._resolve(ref)
            content_id, name = found.content_id, found.name
            if found.origin is not None:
                raise UsageError(f"{name} is a seed script's file: it has no torrent")
        assert self.swarm is not None
        for item in self.swarm.network():
            if item.id == content_id:
                holders += [(p.address, p.port) for p in item.complete if p.port]
        if record is None:
            if not holders:
                raise NotFoundError(f"no peer holds all of {name} now: no web seed to name")
            manifest = await self._manifest_from(holders, content_id)
        v1 = None
        if hybrid:
            if record is None or not self.library.is_intact(content_id):
                raise UsageError(f"--hybrid reads {name}'s files here: share it (or get it) first")
            paths = [path for path, _stat in self.library.file_paths(content_id)]
            v1 = await asyncio.to_thread(v1_piece_hashes, manifest, paths)
        token = f"{web_seed_token(self._key, content_id)}/" if self._key is not None else ""
        scheme = "https" if self._key is not None else "http"  # a private swarm is TLS only
        urls = [
            f"{scheme}://{_url_host(host)}:{port}/v1/content/{content_id}/bt/{token}"
            for host, port in dict.fromkeys(holders)
        ]
        data = torrent_file(manifest, urls, v1)
        return {
            "id": content_id,
            "name": name,
            "magnet": magnet(content_id, name),
            "hybrid": hybrid,
            "web_seeds": urls,
            "torrent": base64.b64encode(data).decode("ascii"),
        }

    async def _manifest_from(self, holders: list[tuple[str, int]], content_id: str) -> Manifest:
        """The manifest of `content_id` from the first of `holders` that gives a good one."""
        problem: Exception | None = None
        for host, port in holders:
            try:
                return await self.client.manifest(host, port, content_id)
            except (SwarmshareError, OSError) as exc:
                problem = exc
        raise NotFoundError(f"no holder gave the content's manifest ({problem})")

    def reload(self) -> None:
        """The library changed (maybe by another process): serve and announce what it holds."""
        self.shelf.reload()
        if self.swarm is not None and self.serve:
            self.swarm.changed()
        if self.seeder is not None:
            self.seeder.sync()

    def log_rows(self, limit: int) -> list[Json]:
        """The newest `limit` rows of the transfer log, oldest first."""
        self.translog.flush()
        return [dict(row) for row in self.db.transfers(limit)]

    def downloads_dir(self) -> Path:
        """Where downloads started without a folder go."""
        if self.settings.downloads_dir is not None:
            return self.settings.downloads_dir
        stored = self.db.meta(DOWNLOADS_DIR_KEY)
        return Path(stored) if stored else Path(platformdirs.user_downloads_dir())

    def set_downloads_dir(self, text: str) -> Path:
        """Set the download folder (created if missing)."""
        folder = Path(text).expanduser().absolute()
        _make_folder(folder)
        self.db.set_meta(DOWNLOADS_DIR_KEY, str(folder))
        self.changes.bump()
        return folder

    def status(self) -> Json:
        """This peer's state, for `swarmshare status`."""
        s = self.settings
        swarm, server = self.swarm, self.server
        state: Json = {
            "peer_id": self.peer_id,
            "name": s.name,
            "address": s.bind,
            "port": server.port if server else None,
            "discovery_port": s.discovery_port,
            "broadcast": swarm.discovery.targets if swarm else [],
            "interval": s.interval,
            "peers": len(swarm.table.peers) if swarm else 0,
            "items": len(self.shelf.shares()),
            "catalog_version": self.shelf.version(),
            "uptime": time.time() - self.started,
            "served_chunks": self.shelf.served_chunks,
            "served_bytes": self.shelf.served_bytes,
            "private": s.secret is not None,
            "downloads": self.downloads(),
            "ipv6": [i.name for i in swarm.discovery.ipv6] if swarm else [],
            "mdns": _mdns_state(swarm),
            "localsend": None if self.localsend is None else self.localsend.status(),
            "fingerprint": self.identity.fingerprint,
            "compare_code": self.identity.compare_code,
            "tls": self._key is not None,
            "refused_certificates": self.client.refused_certificates,
            "lan_page": self.lan_page_url(),
            "bittorrent": _bittorrent_state(self),
        }
        if server is not None:
            guard = server.guard
            state["auth_refused"] = server.auth_refused
            state["connections_refused"] = (
                0 if guard is None else guard.stats.refused_total + guard.stats.refused_per_peer
            )
            state["slow_connections_cut"] = 0 if guard is None else guard.stats.slow_cut
            gate = server.handshakes
            state["tls_handshakes_cut"] = (
                0
                if gate is None
                else gate.stats.refused_per_peer + gate.stats.evicted + gate.stats.failed
            )
        serving = self.seed_serving
        state["legacy"] = (
            None
            if serving is None
            else {
                "port": serving.server.port,
                "seed_contents": len(self.seeds.live_contents()),
                "seed_datagrams": self.seeds.heard,
                "served": serving.server.served_count,
                "refused": serving.server.refused,
            }
        )
        if swarm is not None:
            st = swarm.discovery.stats
            state["discovery"] = {
                "received": st.received,
                "announcements": st.announcements,
                "malformed": st.malformed,
                "oversized": st.oversized,
                "foreign": st.foreign,
                "rate_limited": st.rate_limited,
                "sent": st.sent,
                "from_others_ipv4": st.others_ipv4,
                "from_others_ipv6": st.others_ipv6,
            }
        return state

    # ---- downloads ---------------------------------------------------------------------------

    def downloads(self) -> list[Json]:
        """Every download this peer knows, newest first."""
        return [d.stats.as_json() for d in self.transfers.all()]

    def download(self, ref: str) -> Json:
        """One download, by ID or ID prefix."""
        return self.transfers.get(ref).stats.as_json()

    async def start_download(
        self,
        ref: str,
        output: str | None,
        dest_dir: str | None,
        force: bool,
        wait: float | None,
    ) -> Json:
        """Resolve what `ref` names (waiting up to `wait` s for it to show up), then download
        it in the background; `wait` also bounds every later wait for a holder (None: no
        bound, as for downloads started on the page)."""
        destination = _destination(output, Path(dest_dir) if dest_dir else self.downloads_dir())
        await self._start_swarm(listen=True)
        found = await self._find_torrent(ref) or await self._find(
            ref, 5.0 if wait is None else wait
        )
        download = self.transfers.start(
            found.content_id,
            found.name,
            destination,
            force=force,
            hold_wait=wait,
            origin=found.origin,
            torrent=found.torrent,
        )
        self.changes.bump()
        return download.stats.as_json()

    async def pause(self, ref: str) -> Json:
        """Pause; returns once nothing more is written to the part file."""
        return (await self.transfers.pause(ref)).stats.as_json()

    async def resume(self, ref: str, wait: float | None = None) -> Json:
        """Resume a paused or failed download."""
        if self.transfers.get(ref).content_id.startswith("seed:") or not self.serve:
            await self._start_swarm(listen=True)
        return self.transfers.resume(ref, wait).stats.as_json()

    async def cancel(self, ref: str) -> Json:
        """Stop and throw the part file away."""
        return (await self.transfers.cancel(ref)).stats.as_json()

    async def watch(self, ref: str, after: int, seconds: float) -> Json:
        """A download's state once anything changed after version `after` (or after
        `seconds`), with the version to wait after next."""
        version = await self.changes.wait(after, seconds)
        if version > after >= 0:
            # Changes come with every chunk: a watcher hears of them a few times a second at
            # most, not once per chunk -- but of the end of a run at once (a command waits for
            # it: a pause here would be a fixed cost of every get).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WATCH_MIN_GAP_SECONDS
            while self.transfers.get(ref).state.active:
                left = deadline - loop.time()
                if left <= 0:
                    break
                await self.changes.wait(self.changes.version, left)
            version = self.changes.version
        return self.transfers.get(ref).stats.as_json() | {"version": version}

    async def _find_torrent(self, ref: str) -> Found | None:
        """A magnet link, .torrent file or URL: its content, found on the LAN by its ID and
        fetched from BitTorrent peers too (None for any other reference)."""
        if not is_torrent_ref(ref):
            return None
        from swarmshare.app.bittorrent import resolve_torrent  # here: most refs are no torrent

        assert self.swarm is not None
        bind = None if is_wildcard(self.settings.bind) else self.settings.bind
        torrent = await resolve_torrent(ref, bind)
        if not self.serve and not self.swarm.holders(torrent.content_id):
            await self.swarm.settle(LAN_HEAD_START_SECONDS)  # LAN holders come first
        origin = self._torrent_origin(torrent)
        return Found(torrent.content_id, torrent.name, origin, torrent.stored())

    def _torrent_origin(self, torrent: TorrentRef) -> TorrentOrigin:
        from swarmshare.app.bittorrent import TorrentOrigin

        assert self.swarm is not None
        lan = SwarmOrigin(self.swarm, self.client, torrent.content_id)
        scratch = self.settings.home / "bittorrent" / torrent.content_id
        return TorrentOrigin(lan, torrent, scratch, self._bittorrent_session)

    async def _find(self, ref: str, wait: float) -> Found:
        """What the user typed, among native and seed contents, waiting up to `wait` s."""
        assert self.swarm is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                return self._resolve(ref)
            except NotFoundError:
                if _HEX64.fullmatch(ref.lower()):
                    return Found(ref.lower(), ref.lower()[:12])  # wait for holders meanwhile
                if loop.time() >= deadline:
                    raise
            await self.swarm.wait_updated(min(0.2, max(0.01, deadline - loop.time())))

    def _resolve(self, ref: str) -> Found:
        assert self.swarm is not None
        candidates: list[tuple[str, str]] = [(i.id, i.name) for i in self.swarm.network()]
        seeds = {f"seed:{c.name}": c.name for c in self.seeds.live_contents()}
        candidates += list(seeds.items())
        try:
            content_id, name = resolve_ref(ref, candidates, lambda c: c, "the network")
        except NotFoundError:
            stem = ref[:-4] if ref.lower().endswith(".png") else None
            if stem is None or f"seed:{stem}" not in seeds:
                raise
            content_id, name = f"seed:{stem}", stem
        if content_id.startswith("seed:"):
            return Found(content_id, name, self._seed_origin(name))
        return Found(content_id, name)

    def _origin(self, content_id: str, torrent: bytes = b"") -> Origin:
        """Where a download comes from; `torrent`: the magnet link or .torrent it was started
        from (a remembered download rejoins that BitTorrent swarm)."""
        if content_id.startswith("seed:"):
            return self._seed_origin(content_id[5:])
        if self.swarm is None:  # a remembered download, listed before the network is up
            return DeferredOrigin(lambda: self._origin(content_id, torrent))
        if torrent:
            from swarmshare.app.bittorrent import stored_torrent_ref

            try:
                ref = stored_torrent_ref(torrent)
            except SwarmshareError as exc:
                log.warning("a remembered download's torrent is unreadable: %s", exc)
            else:
                if ref.content_id == content_id:
                    return self._torrent_origin(ref)
        return SwarmOrigin(self.swarm, self.client, content_id)

    def _seed_origin(self, name: str) -> SeedOrigin:
        bind = self.settings.bind
        return SeedOrigin(
            self.seeds,
            name,
            self.settings.legacy_port,
            None if bind in ("", "0.0.0.0") else bind,
        )

    def _received(self, path: Path) -> None:
        """A file came in over LocalSend: share it with the swarm."""
        task = asyncio.get_running_loop().create_task(self.share([str(path)]))
        self._sharing.add(task)
        task.add_done_callback(self._sharing.discard)

    async def _swarm_fetch(self, offer: SwarmOffer, find: float, wait: float) -> Json:
        """Download a content a LocalSend sender (a swarmshare peer) offered through the swarm,
        into the download folder; its final stats. NotFoundError when it does not show up in
        this peer's swarm within `find` s; OfferMismatch unless its manifest names the one file
        offered, of the size offered; another SwarmshareError when the download fails."""
        from swarmshare.net.localsend import OfferMismatch

        content_id = offer.content_id
        swarm = await self._start_swarm(listen=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(find, wait)
        while content_id not in {i.id for i in swarm.network()}:
            if loop.time() >= deadline:
                raise NotFoundError(f"no peer of this swarm offers {content_id[:12]}")
            await swarm.wait_updated(min(0.2, max(0.01, deadline - loop.time())))
        manifest = await self._origin(content_id).manifest()
        if manifest is None:
            raise NotFoundError(f"no peer of this swarm sends the manifest of {content_id[:12]}")
        if (manifest.kind, manifest.name, manifest.total_size) != ("file", offer.name, offer.size):
            raise OfferMismatch(
                f"{content_id[:12]} is not the file offered ({offer.name!r}, {offer.size} bytes)"
            )
        stats = await self.start_download(content_id, None, None, False, wait)
        after = -1
        while True:
            stats = await self.watch(content_id, after, 10.0)
            after = int(stats["version"])
            if stats["state"] == "done":
                return stats
            if stats["state"] in ("failed", "cancelled", "paused"):
                raise SwarmshareError(f"the download {stats['state']}: {stats['error']}")

    async def _finish_sharing(self) -> None:
        if self._sharing:
            await asyncio.gather(*self._sharing, return_exceptions=True)

    def inbox(self) -> list[Json]:
        """LocalSend offers waiting for an answer."""
        if self.localsend is None:
            raise UsageError("this peer does not receive LocalSend: run it with --localsend")
        return self.localsend.inbox.list()

    def inbox_decide(self, ref: str, accept: bool) -> Json:
        """Accept or refuse a LocalSend offer."""
        if self.localsend is None:
            raise UsageError("this peer does not receive LocalSend: run it with --localsend")
        return self.localsend.inbox.decide(ref, accept)

    def _add_to_library(self, manifest: Manifest, root: str, files: list[ScannedFile]) -> None:
        self.library.add(manifest, root, files)
        self.reload()


def _destination(output: str | None, dest_dir: Path) -> Destination:
    """Where a download goes. OUTPUT ending in '/' (or an existing folder) is a folder, created
    if missing, that gets the content's own name; any other OUTPUT is the exact path, whose
    folder must exist. Without OUTPUT: DEST_DIR/NAME (DEST_DIR created if missing)."""
    if not output:
        folder = dest_dir.expanduser().absolute()
        _make_folder(folder)
        return Destination(folder)
    path = Path(output).expanduser().absolute()
    if output.endswith(("/", os.sep)) or path.is_dir():
        _make_folder(path)
        return Destination(path)
    if not path.parent.is_dir():
        raise UsageError(f"folder {path.parent} does not exist (end -o with / to have it created)")
    if path.name.endswith((".part", ".part.swarmshare")):
        raise UsageError("a download may not end in .part or .part.swarmshare")
    return Destination(path.parent, path)


def _own_hosts(bind: str) -> list[str]:
    """The addresses other hosts reach this peer's server at: its bind address, or for a
    wildcard one each IPv4 interface's (not loopback's)."""
    if not is_wildcard(bind):
        return [bind]
    return [str(interface.ip) for _name, interface in ipv4_interfaces()]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{folder} exists and is not a folder") from None
    except OSError as exc:
        raise UsageError(f"cannot create folder {folder}: {exc.strerror}") from None


def _mdns_state(swarm: Swarm | None) -> Json:
    """mDNS as `status` shows it: on or off (and why), and the peers' records it resolved."""
    services = swarm.services if swarm is not None else None
    if services is None:
        return {"on": False, "error": None, "sightings": 0, "refused": 0}
    return {
        "on": services.running,
        "error": services.error,
        "sightings": services.sightings,
        "refused": services.refused,
    }


def _bittorrent_state(node: Node) -> Json | None:
    """The BitTorrent peer as `status` shows it (None when there is none)."""
    session = node.bittorrent
    if session is None:
        return None
    seeding = node.seeder.seeded() if node.seeder is not None else set()
    return {"port": session.port, "seeding": len(seeding), "dht": node.settings.dht}
