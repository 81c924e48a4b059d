"""The swarm as this peer sees it: discovery, the live peer table, and their catalogues.

Used by the daemon (listening, announcing its catalogue) and by CLI commands that run without a
daemon (not listening on the discovery port, soliciting answers once and waiting).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from swarmshare.core.announce import Announcement
from swarmshare.core.auth import derive_key
from swarmshare.core.catalog import CatalogItem
from swarmshare.core.peers import CatalogStale, Peer, PeerEvent, PeerTable
from swarmshare.errors import RemoteProtocolError
from swarmshare.net.client import PeerClient, PeerUnavailable
from swarmshare.net.discovery import Discovery, OnForeign
from swarmshare.net.interfaces import broadcast_addresses
from swarmshare.settings import Settings

EventListener = Callable[[PeerEvent], None]


@dataclass
class NetworkItem:
    """One content on the network: its description and who holds it."""

    id: str
    name: str
    kind: str
    size: int
    chunks: int
    complete: list[Peer] = field(default_factory=list)
    partial: list[Peer] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        """A plain dict for --json and the control API."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "chunks": self.chunks,
            "peers": len(self.complete) + len(self.partial),
            "complete_peers": [p.peer_id for p in self.complete],
            "partial_peers": [p.peer_id for p in self.partial],
            "complete": bool(self.complete),
        }


class Swarm:
    """Discovery plus catalogue sync; use as `async with Swarm(...) as swarm:`."""

    def __init__(
        self,
        settings: Settings,
        peer_id: str,
        client: PeerClient,
        *,
        catalog_version: Callable[[], str] = lambda: "0",
        serving_port: int = 0,
        listen: bool = True,
        on_foreign: OnForeign | None = None,
    ) -> None:
        self.settings = settings
        self.peer_id = peer_id
        self.client = client
        self.table = PeerTable(peer_id)
        self.listeners: list[EventListener] = []
        self.catalog_listeners: list[Callable[[Peer], None]] = []
        self.catalog_failures = 0
        self._catalog_version = catalog_version
        self._serving_port = serving_port
        self._updated = asyncio.Condition()
        self._fetching: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.discovery = Discovery(
            port=settings.discovery_port,
            bind=settings.bind,
            targets=list(settings.broadcast) or broadcast_addresses(),
            unicast=list(settings.peers),
            interval=settings.interval,
            make_announcement=self._announcement,
            on_announcement=self._heard,
            on_foreign=on_foreign,
            listen=listen,
            key=derive_key(settings.secret) if settings.secret else None,
        )

    async def __aenter__(self) -> Swarm:
        await self.discovery.__aenter__()
        self._spawn(self._expirer())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._serving_port:
            self.discovery.send(bye=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.discovery.__aexit__(*exc)

    def changed(self) -> None:
        """Our catalogue changed: announce it soon."""
        self.discovery.changed()

    def network(self) -> list[NetworkItem]:
        """Every content the live peers hold, by name."""
        items: dict[str, NetworkItem] = {}
        for peer in self.table.live():
            if peer.catalog is None:
                continue
            for entry in peer.catalog.items:
                item = items.get(entry.id)
                if item is None:
                    item = items[entry.id] = _network_item(entry)
                (item.complete if entry.complete else item.partial).append(peer)
        return sorted(items.values(), key=lambda i: (i.name.lower(), i.id))

    def holders(self, content_id: str) -> list[tuple[Peer, CatalogItem]]:
        """The live peers whose catalogue lists a content, with what they hold of it."""
        found = []
        for peer in self.table.live():
            if peer.catalog is not None:
                entry = peer.catalog.by_id().get(content_id)
                if entry is not None:
                    found.append((peer, entry))
        return found

    async def wait_updated(self, seconds: float) -> None:
        """Return when any peer or catalogue changes, or after `seconds`."""
        async with self._updated:
            try:
                await asyncio.wait_for(self._updated.wait(), seconds)
            except TimeoutError:
                pass

    async def settle(self, wait: float) -> None:
        """Wait up to `wait` seconds for answers, returning early once every catalogue is in."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        quiet_since = loop.time()
        while loop.time() < deadline:
            await self.wait_updated(min(0.1, max(0.0, deadline - loop.time())))
            pending = any(p.catalog_stale for p in self.table.live()) or self._fetching
            if pending:
                quiet_since = loop.time()
            elif self.table.peers and loop.time() - quiet_since > 0.3:
                return

    def _announcement(self, solicit: bool) -> Announcement:
        return Announcement(
            self.peer_id,
            self._serving_port,
            self.settings.name,
            self._catalog_version(),
            self.settings.interval,
            solicit,
        )

    def _heard(self, ann: Announcement, address: str) -> None:
        self._dispatch(self.table.heard(ann, address, time.monotonic()))

    def _dispatch(self, events: list[PeerEvent]) -> None:
        for event in events:
            if isinstance(event, CatalogStale):
                self._fetch_catalog(event.peer)
            for listener in self.listeners:
                listener(event)
        if events:
            self._spawn(self._notify())

    def _fetch_catalog(self, peer: Peer) -> None:
        if peer.peer_id in self._fetching:
            self._fetching[peer.peer_id] = True  # fetch again when the current one ends
            return
        self._fetching[peer.peer_id] = False
        self._spawn(self._fetcher(peer))

    async def _fetcher(self, peer: Peer) -> None:
        try:
            again = True
            while again:
                etag = peer.catalog.version if peer.catalog else None
                try:
                    catalog = await self.client.catalog(peer.address, peer.port, etag)
                except (PeerUnavailable, RemoteProtocolError):
                    self.catalog_failures += 1
                    peer.fetch_failures += 1
                    catalog = None
                if catalog is not None and catalog.peer_id == peer.peer_id:
                    peer.catalog = catalog
                    for listener in self.catalog_listeners:
                        listener(peer)
                    await self._notify()
                again = self._fetching.get(peer.peer_id, False)
                self._fetching[peer.peer_id] = False
        finally:
            self._fetching.pop(peer.peer_id, None)
            await self._notify()

    async def _notify(self) -> None:
        async with self._updated:
            self._updated.notify_all()

    async def _expirer(self) -> None:
        while True:
            deadline = self.table.next_deadline()
            delay = 1.0 if deadline is None else max(0.05, deadline - time.monotonic())
            await asyncio.sleep(min(delay, 1.0))
            self._dispatch(self.table.expire(time.monotonic()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _network_item(entry: CatalogItem) -> NetworkItem:
    return NetworkItem(entry.id, entry.name, entry.kind, entry.size, entry.chunks)


def peer_json(peer: Peer, now: float | None = None) -> dict[str, object]:
    """A live peer as plain JSON: name, address, port, last seen, items."""
    mono = time.monotonic()
    wall = time.time() if now is None else now
    return {
        "peer_id": peer.peer_id,
        "name": peer.name,
        "address": peer.address,
        "port": peer.port,
        "last_seen": wall - (mono - peer.last_seen),
        "items": len(peer.catalog.items) if peer.catalog else 0,
        "catalog_version": peer.catalog.version if peer.catalog else None,
    }
