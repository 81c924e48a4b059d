"""The swarm as this peer sees it: discovery, the live peer table, and their catalogues.

Used by the daemon (listening, announcing its catalogue) and by CLI commands that run without a
daemon (not listening on the discovery port, soliciting answers once and waiting).

Time: one clock, the event loop's (or the `clock` passed in); the peer table says when it next
needs to be woken and one timer is armed for it. Catalogues are fetched when the table says so
and their outcome handed back to it (it paces re-fetches per peer).

Paths: UDP announcements (broadcast, unicast peers, and IPv6 link-local multicast with the
wildcard bind), and for a serving peer mDNS/DNS-SD (net/mdns.py). Every sighting goes into the
one peer table as an announcement from its source address: a peer found several ways is one
peer. A sighting restated from mDNS's cache (not new) is skipped while the peer's own
announcements keep it alive, so the two paths do not contend over its catalogue version.

Names: a content is called what its manifest (which hashes to its ID) says, never what a
catalogue claims. Where catalogues disagree on the name of an ID, the manifest is fetched once
(a few at a time, remembered per ID) and its name shown. A peer that lists a content and then
cannot serve its manifest, or lists it under another name, loses credit: its entries for that
content are ignored for LISTING_DISCREDIT_SECONDS (`discredit` lets the download engine do the
same for a peer that cannot serve the chunks it lists).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from swarmshare.core.announce import Announcement
from swarmshare.core.auth import derive_key
from swarmshare.core.catalog import Catalog, CatalogItem
from swarmshare.core.peers import CatalogStale, Peer, PeerEvent, PeerLeft, PeerTable
from swarmshare.core.torrent import magnet_json
from swarmshare.errors import RemoteProtocolError, SwarmshareError
from swarmshare.limits import (
    LISTING_DISCREDIT_SECONDS,
    MAX_CHECKED_NAMES,
    MAX_DISCREDITED_LISTINGS,
    MAX_NAME_CHECKS_IN_FLIGHT,
)
from swarmshare.net.client import PeerClient, PeerUnavailable
from swarmshare.net.discovery import Clock, Discovery, OnForeign
from swarmshare.net.interfaces import (
    broadcast_addresses,
    ipv4_interfaces,
    ipv6_interfaces,
    is_wildcard,
)
from swarmshare.settings import Settings

if TYPE_CHECKING:
    from swarmshare.net.mdns import ServiceDiscovery

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
        } | magnet_json(self.id, self.name)


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
        clock: Clock | None = None,
        fingerprint: str = "",
        lan_page: bool = False,
    ) -> None:
        """`clock` (default: the running loop's `time`) is what `now` is everywhere here.
        `fingerprint`: of this peer's TLS certificate, announced (a private swarm);
        `lan_page`: the peer server has a LAN page, advertised by mDNS as `_http._tcp`."""
        self.settings = settings
        self.fingerprint = fingerprint
        self.lan_page = lan_page
        self.peer_id = peer_id
        self.client = client
        self.table = PeerTable(peer_id)
        self.listeners: list[EventListener] = []
        self.catalog_listeners: list[Callable[[Peer], None]] = []
        self.catalog_failures = 0
        self.catalog_fetches = 0
        self.manifest_checks = 0
        self.clock: Clock = time.monotonic
        self._clock_arg = clock
        self._catalog_version = catalog_version
        self._serving_port = serving_port
        self._update: asyncio.Event | None = None
        self._fetching: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # content ID -> peer ID -> what that peer's catalogue says of it
        self._listed: dict[str, dict[str, CatalogItem]] = {}
        self._checked: OrderedDict[str, _Facts] = OrderedDict()  # content ID -> its manifest's
        self._checking: set[str] = set()
        self._check_slots = asyncio.Semaphore(MAX_NAME_CHECKS_IN_FLIGHT)
        self._discredited: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._network: list[NetworkItem] | None = None
        self._network_until = 0.0
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
            clock=clock,
            ipv6=ipv6_interfaces() if uses_ipv6(settings) else [],
        )
        self.services: ServiceDiscovery | None = None
        self._mdns = listen and bool(serving_port) and uses_mdns(settings)

    async def __aenter__(self) -> Swarm:
        self.clock = self._clock_arg or asyncio.get_running_loop().time
        self._update = asyncio.Event()
        await self.discovery.__aenter__()
        if self._mdns:
            self.services = self._service_discovery()
            try:
                await self.services.__aenter__()
            except BaseException:
                await self.discovery.__aexit__(None, None, None)
                raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._serving_port:
            self.discovery.send(bye=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.services is not None:
            await self.services.__aexit__(*exc)
        await self.discovery.__aexit__(*exc)

    def changed(self) -> None:
        """Our catalogue changed: announce it soon."""
        self.discovery.changed()
        if self.services is not None:
            self.services.changed()

    def wake(self) -> None:
        """Do what is due by the clock now: expire peers, fetch catalogues, announce (the
        timers call this; a test that moves a fake clock may too)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._dispatch(self.table.tick(self.clock()))
        self.discovery.wake()
        self._arm(force=True)

    def network(self) -> list[NetworkItem]:
        """Every content the live peers hold, by name (computed again only after a change)."""
        now = self.clock()
        if self._network is not None and now < self._network_until:
            return list(self._network)
        found = []
        for content_id in self._listed:
            holders = self._credited(content_id, now)
            if not holders:
                continue
            item = NetworkItem(content_id, *self._facts(content_id, holders))
            for peer, entry in holders:
                (item.complete if entry.complete else item.partial).append(peer)
            found.append(item)
        found.sort(key=lambda i: (i.name.lower(), i.id))
        self._network = found
        self._network_until = min(self._discredited.values(), default=math.inf)
        return list(found)

    def holders(self, content_id: str) -> list[tuple[Peer, CatalogItem]]:
        """The live peers whose catalogue lists a content (and that are not discredited for
        it), with what they hold of it."""
        return self._credited(content_id, self.clock())

    def discredit(self, peer: Peer, content_id: str) -> None:
        """`peer` listed a content it could not serve: ignore its listing of it for a while."""
        key = (peer.peer_id, content_id)
        self._discredited.pop(key, None)
        self._discredited[key] = self.clock() + LISTING_DISCREDIT_SECONDS
        while len(self._discredited) > MAX_DISCREDITED_LISTINGS:
            self._discredited.popitem(last=False)
        self._notify()

    async def wait_updated(self, seconds: float) -> None:
        """Return when any peer or catalogue changes, or after `seconds`."""
        assert self._update is not None, "use the swarm inside `async with`"
        update = self._update
        try:
            async with asyncio.timeout(seconds):
                await update.wait()
        except TimeoutError:
            pass

    async def settle(self, wait: float) -> None:
        """Wait up to `wait` seconds for answers, returning early once every catalogue is in."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        quiet_since = loop.time()
        while loop.time() < deadline:
            await self.wait_updated(min(0.1, max(0.0, deadline - loop.time())))
            pending = (
                any(p.catalog is None and p.fetch_failures == 0 for p in self.table.peers.values())
                or self._fetching
                or self._checking
            )
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
            fingerprint=self.fingerprint,
        )

    def _service_discovery(self) -> ServiceDiscovery:
        from swarmshare.net.mdns import ServiceDiscovery  # zeroconf loads only when used

        bind = self.settings.bind
        interfaces: list[str | int] = []
        addresses: list[str] = []
        if is_wildcard(bind):
            for _name, interface in ipv4_interfaces():
                interfaces.append(str(interface.ip))
            addresses += [str(a) for a in interfaces]
            for v6 in self.discovery.ipv6:
                interfaces.append(v6.index)
                addresses.append(v6.link_local)
        else:
            interfaces.append(bind)
            addresses.append(bind)
        return ServiceDiscovery(
            interfaces=interfaces,
            addresses=addresses,
            make_announcement=lambda: self._announcement(False),
            on_sighting=self._sighted,
            interval=self.settings.interval,
            networks=[interface.network for _name, interface in ipv4_interfaces()],
            lan_page=self.lan_page,
        )

    def _sighted(self, ann: Announcement, address: str, fresh: bool) -> None:
        """A peer's service record, found by mDNS (`fresh`) or restated from its cache."""
        if not fresh:
            peer = self.table.peers.get(ann.peer_id)
            if peer is not None and self.clock() - peer.last_seen < peer.interval:
                return  # its announcements keep it alive
        self._heard(ann, address)

    def _heard(self, ann: Announcement, address: str) -> None:
        events = self.table.heard(ann, address, self.clock())
        if events:
            self._dispatch(events)
        self._arm()

    def _dispatch(self, events: list[PeerEvent]) -> None:
        for event in events:
            if isinstance(event, CatalogStale):
                self._fetching.add(event.peer.peer_id)
                self._spawn(self._fetch_catalog(event.peer))
            elif isinstance(event, PeerLeft):
                self._index(event.peer.peer_id, event.peer.catalog, None)
            for listener in self.listeners:
                listener(event)
        if events:
            self._notify()

    def _arm(self, force: bool = False) -> None:
        deadline = self.table.next_deadline()
        if self._timer is not None:
            if not force and (deadline is None or deadline >= self._timer_at):
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer_at = deadline
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, deadline - self.clock()), self.wake)

    async def _fetch_catalog(self, peer: Peer) -> None:
        etag = peer.catalog.version if peer.catalog else None
        served: Catalog | None = None
        self.catalog_fetches += 1
        try:
            served = await self.client.catalog(peer.address, peer.port, etag)
            if served is None:
                served = peer.catalog  # unchanged since `etag`
            elif served.peer_id != peer.peer_id:
                served = None  # someone else's catalogue
        except (PeerUnavailable, RemoteProtocolError):
            served = None
        finally:
            self._fetching.discard(peer.peer_id)
        if served is None:
            self.catalog_failures += 1
        old = peer.catalog
        self.table.fetched(peer, served, self.clock())
        if served is not None and self.table.peers.get(peer.peer_id) is peer:
            if served is not old:
                self._index(peer.peer_id, old, served)
                self._check_names(served)
            for listener in self.catalog_listeners:
                listener(peer)
        self._notify()
        self._arm()

    def _index(self, peer_id: str, old: Catalog | None, new: Catalog | None) -> None:
        if old is not None:
            for entry in old.items:
                listed = self._listed.get(entry.id)
                if listed is not None:
                    listed.pop(peer_id, None)
                    if not listed:
                        del self._listed[entry.id]
        if new is not None:
            for entry in new.items:
                self._listed.setdefault(entry.id, {})[peer_id] = entry

    def _credited(self, content_id: str, now: float) -> list[tuple[Peer, CatalogItem]]:
        found = []
        peers, discredited = self.table.peers, self._discredited
        for peer_id, entry in self._listed.get(content_id, {}).items():
            peer = peers.get(peer_id)
            if peer is None:
                continue
            if discredited:
                until = discredited.get((peer_id, content_id))
                if until is not None:
                    if until > now:
                        continue
                    del discredited[(peer_id, content_id)]
            found.append((peer, entry))
        if len(found) > 1:
            found.sort(key=lambda pe: (pe[0].name, pe[0].address))
        return found

    def _facts(self, content_id: str, holders: list[tuple[Peer, CatalogItem]]) -> _Facts:
        checked = self._checked.get(content_id)
        if checked is not None:
            return checked
        if len(holders) == 1:
            entry = holders[0][1]
            return _Facts(entry.name, entry.kind, entry.size, entry.chunks)
        votes: dict[_Facts, int] = {}
        for _peer, entry in holders:
            facts = _facts_of(entry)
            votes[facts] = votes.get(facts, 0) + 1
        return max(votes, key=lambda facts: (votes[facts], facts))

    def _check_names(self, catalog: Catalog) -> None:
        """Start a manifest check for each content this catalogue describes unlike another's."""
        for entry in catalog.items:
            if entry.id in self._checked or entry.id in self._checking:
                continue
            facts = _facts_of(entry)
            listed = self._listed.get(entry.id, {})
            if len(listed) > 1 and any(_facts_of(e) != facts for e in listed.values()):
                self._checking.add(entry.id)
                self._spawn(self._check_name(entry.id))

    async def _check_name(self, content_id: str) -> None:
        try:
            async with self._check_slots:
                for peer, _entry in self._credited(content_id, self.clock()):
                    self.manifest_checks += 1
                    try:
                        manifest = await self.client.manifest(peer.address, peer.port, content_id)
                    except (PeerUnavailable, SwarmshareError):
                        self.discredit(peer, content_id)
                        continue
                    truth = _Facts(
                        manifest.name, manifest.kind, manifest.total_size, manifest.chunk_total
                    )
                    self._checked[content_id] = truth
                    while len(self._checked) > MAX_CHECKED_NAMES:
                        self._checked.popitem(last=False)
                    for other, listed in self._credited(content_id, self.clock()):
                        if _facts_of(listed) != truth:
                            self.discredit(other, content_id)
                    return
        finally:
            self._checking.discard(content_id)
            self._notify()

    def _notify(self) -> None:
        self._network = None
        if self._update is not None:
            self._update.set()
            self._update = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def uses_ipv6(settings: Settings) -> bool:
    """Whether discovery also runs over IPv6: asked for, and bound to every interface."""
    return settings.ipv6 and is_wildcard(settings.bind)


def uses_mdns(settings: Settings) -> bool:
    """Whether a serving peer also uses mDNS: asked for, and not bound to loopback."""
    if not settings.mdns:
        return False
    if is_wildcard(settings.bind):
        return True
    try:
        return not ipaddress.ip_address(settings.bind).is_loopback
    except ValueError:
        return False


class _Facts(NamedTuple):
    name: str
    kind: str
    size: int
    chunks: int


def _facts_of(entry: CatalogItem) -> _Facts:
    return _Facts(entry.name, entry.kind, entry.size, entry.chunks)


def peer_json(peer: Peer, now: float | None = None) -> dict[str, object]:
    """A live peer as plain JSON: name, address, port, last seen, items."""
    mono = time.monotonic()  # the default event loop's clock, which `last_seen` is on
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
