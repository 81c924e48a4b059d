"""The peer table: which peers are alive, from the announcements heard and the time passed in.

How it works:
- Every valid announcement refreshes its peer's entry, keyed by peer ID, at the packet's source
  address (never an address from the payload). A peer is new the first time it is heard (or
  after it expired or left). A peer not heard for EXPIRY_INTERVALS of its announced interval,
  capped at MAX_PEER_INTERVAL_SECONDS, or that says bye, is gone.
- A peer ID belongs to the address it was first heard from while that entry lives. The same ID
  from another address is another claim, refused and counted (`conflicts`): it neither moves
  the peer nor redirects catalogue fetches, and its `bye` removes nothing. (A peer that really
  moved is admitted at its new address once its old entry expires.)
- Room: one source address holds at most MAX_PEERS_PER_ADDRESS entries. When the table is full
  a new peer takes the place of the unproven entry heard least recently (a peer is proven once
  its catalogue was fetched from it: its HTTP port answered); it is refused only when every
  entry is proven.
- Catalogue fetches: the table says when to fetch (`CatalogStale`), one fetch per peer at a time,
  and the caller reports the outcome with `fetched`. The next fetch of that peer is not before
  `gap` later: gap = max(CATALOG_REFETCH_MIN_SECONDS, items / CATALOG_ITEMS_PER_SECOND_PER_PEER)
  after a good fetch, doubling (up to CATALOG_REFETCH_MAX_SECONDS) while the peer keeps
  changing before its gap is over, fails, or serves a version other than the one it announces.
  A stale catalogue whose time has not come is fetched when it comes. So a peer whose
  catalogue keeps changing, or that lies about its version, costs itself time, not us CPU.
- Work per announcement is O(log n): wake-ups live in a heap; `tick(now)` handles the ones due
  and `next_deadline()` says when to call it again. No clock here: callers pass `now`.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass

from swarmshare.core.announce import Announcement
from swarmshare.core.catalog import Catalog
from swarmshare.limits import (
    CATALOG_ITEMS_PER_SECOND_PER_PEER,
    CATALOG_REFETCH_MAX_SECONDS,
    CATALOG_REFETCH_MIN_SECONDS,
    EXPIRY_INTERVALS,
    MAX_PEER_INTERVAL_SECONDS,
    MAX_PEERS,
    MAX_PEERS_PER_ADDRESS,
)


@dataclass(eq=False)
class Peer:
    """One live peer as this peer knows it."""

    peer_id: str
    address: str
    port: int
    name: str
    interval: float
    first_seen: float
    last_seen: float
    announced_version: str
    catalog: Catalog | None = None
    fetch_failures: int = 0
    proven: bool = False
    """Its catalogue was fetched from it at least once."""
    fetching: bool = False
    fetch_wanted: bool = False
    fetch_deferred: bool = False
    fetch_gap: float = 0.0
    fetch_not_before: float = 0.0
    queued_at: float = math.inf
    fingerprint: str = ""
    """Its TLS certificate's fingerprint, as its latest announcement that gave one said."""

    @property
    def expires_at(self) -> float:
        """When the peer is gone unless heard again."""
        return self.last_seen + EXPIRY_INTERVALS * self.interval

    @property
    def catalog_stale(self) -> bool:
        """Whether the announced catalogue differs from the one held."""
        return self.catalog is None or self.catalog.version != self.announced_version

    def _wake_at(self) -> float:
        if self.fetch_wanted and not self.fetching:
            return min(self.expires_at, self.fetch_not_before)
        return self.expires_at


@dataclass(frozen=True, slots=True)
class PeerJoined:
    """A peer was heard for the first time (or again after it expired)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """A peer said bye, was not heard for too long, or made room for another."""

    peer: Peer
    reason: str


@dataclass(frozen=True, slots=True)
class CatalogStale:
    """Fetch this peer's catalogue now, then report the outcome with `PeerTable.fetched`."""

    peer: Peer


PeerEvent = PeerJoined | PeerLeft | CatalogStale


class PeerTable:
    """Live peers, keyed by peer ID."""

    def __init__(self, own_id: str) -> None:
        self.own_id = own_id
        self.peers: dict[str, Peer] = {}
        self.dropped_full = 0
        self.refused_address = 0
        self.conflicts = 0
        self.evicted = 0
        self._unproven: OrderedDict[str, None] = OrderedDict()
        self._per_address: Counter[str] = Counter()
        self._heap: list[tuple[float, str]] = []

    def heard(self, ann: Announcement, address: str, now: float) -> list[PeerEvent]:
        """Take in one announcement from `address`; the events it causes."""
        if ann.peer_id == self.own_id or ann.port == 0:
            return []
        peer = self.peers.get(ann.peer_id)
        if peer is not None and peer.address != address:
            self.conflicts += 1
            return []
        if ann.bye:
            if peer is None:
                return []
            self._remove(peer)
            return [PeerLeft(peer, "said goodbye")]
        interval = min(ann.interval, MAX_PEER_INTERVAL_SECONDS)
        events: list[PeerEvent] = []
        if peer is None:
            room = self._make_room(address)
            if room is None:
                return []
            events += room
            peer = Peer(
                ann.peer_id, address, ann.port, ann.name, interval, now, now, ann.catalog_version
            )
            peer.fingerprint = ann.fingerprint
            self.peers[peer.peer_id] = peer
            self._unproven[peer.peer_id] = None
            self._per_address[address] += 1
            events.append(PeerJoined(peer))
        else:
            if ann.port != peer.port:
                peer.catalog = None  # another server: what the old one held says nothing
            peer.port, peer.name, peer.interval, peer.last_seen = ann.port, ann.name, interval, now
            peer.announced_version = ann.catalog_version
            if ann.fingerprint:  # a sighting that gives none (mDNS) keeps the signed one
                peer.fingerprint = ann.fingerprint
            if not peer.proven:
                self._unproven.move_to_end(peer.peer_id)
        if peer.catalog_stale:
            events += self._want_catalog(peer, now)
        self._queue(peer)
        return events

    def fetched(self, peer: Peer, catalog: Catalog | None, now: float) -> None:
        """The fetch asked for by CatalogStale ended: `catalog` is what the peer served (the
        one held if unchanged), or None if it failed or served someone else's."""
        peer.fetching = False
        if catalog is None:
            peer.fetch_failures += 1
            base = CATALOG_REFETCH_MIN_SECONDS
        else:
            peer.catalog = catalog
            if not peer.proven:
                peer.proven = True
                self._unproven.pop(peer.peer_id, None)
            base = len(catalog.items) / CATALOG_ITEMS_PER_SECOND_PER_PEER
            base = min(CATALOG_REFETCH_MAX_SECONDS, max(CATALOG_REFETCH_MIN_SECONDS, base))
        costly = catalog is None or catalog.version != peer.announced_version
        if costly or peer.fetch_deferred:
            peer.fetch_gap = min(CATALOG_REFETCH_MAX_SECONDS, max(base, 2 * peer.fetch_gap))
        else:
            peer.fetch_gap = base
        peer.fetch_not_before = now + peer.fetch_gap
        peer.fetch_wanted = peer.catalog_stale
        if self.peers.get(peer.peer_id) is peer:
            self._queue(peer)

    def tick(self, now: float) -> list[PeerEvent]:
        """Time passed: drop the peers not heard for too long, fetch the catalogues now due."""
        events: list[PeerEvent] = []
        while self._heap and self._heap[0][0] <= now:
            when, peer_id = heapq.heappop(self._heap)
            peer = self.peers.get(peer_id)
            if peer is None or when != peer.queued_at:
                continue  # superseded
            peer.queued_at = math.inf
            if peer.expires_at <= now:
                self._remove(peer)
                events.append(PeerLeft(peer, "not heard from"))
                continue
            if peer.fetch_wanted and not peer.fetching and now >= peer.fetch_not_before:
                peer.fetch_wanted = False
                if peer.catalog_stale:
                    peer.fetching = peer.fetch_deferred = True
                    events.append(CatalogStale(peer))
            self._queue(peer)
        return events

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do, or None with no peers."""
        heap = self._heap
        while heap:
            when, peer_id = heap[0]
            peer = self.peers.get(peer_id)
            if peer is not None and when == peer.queued_at:
                return when
            heapq.heappop(heap)
        return None

    def live(self) -> list[Peer]:
        """The live peers, by name."""
        return sorted(self.peers.values(), key=lambda p: (p.name, p.address))

    def _want_catalog(self, peer: Peer, now: float) -> list[PeerEvent]:
        if peer.fetching or now < peer.fetch_not_before:
            peer.fetch_wanted = True
            return []
        peer.fetching, peer.fetch_wanted, peer.fetch_deferred = True, False, False
        return [CatalogStale(peer)]

    def _make_room(self, address: str) -> list[PeerEvent] | None:
        if self._per_address[address] >= MAX_PEERS_PER_ADDRESS:
            self.refused_address += 1
            return None
        if len(self.peers) < MAX_PEERS:
            return []
        if not self._unproven:
            self.dropped_full += 1
            return None
        victim = self.peers[next(iter(self._unproven))]
        self._remove(victim)
        self.evicted += 1
        return [PeerLeft(victim, "made room: its server never answered")]

    def _remove(self, peer: Peer) -> None:
        del self.peers[peer.peer_id]
        self._unproven.pop(peer.peer_id, None)
        self._per_address[peer.address] -= 1
        if self._per_address[peer.address] <= 0:
            del self._per_address[peer.address]
        peer.queued_at = math.inf

    def _queue(self, peer: Peer) -> None:
        wake = peer._wake_at()
        if wake < peer.queued_at:
            peer.queued_at = wake
            heapq.heappush(self._heap, (wake, peer.peer_id))
            if len(self._heap) > 2 * len(self.peers) + 64:
                self._heap = [
                    (p.queued_at, p.peer_id) for p in self.peers.values() if p.queued_at < math.inf
                ]
                heapq.heapify(self._heap)
