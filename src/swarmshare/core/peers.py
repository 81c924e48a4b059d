"""The peer table: which peers are alive, from the announcements heard and the time passed in.

How it works: every valid announcement from another peer refreshes that peer's entry, keyed by
peer ID, at the packet's source address (never an address from the payload). A peer is new the
first time it is heard (or after it expired); its catalogue is stale whenever the announced
version differs from the one last fetched. A peer not heard for EXPIRY_INTERVALS of its own
announced intervals, or that says bye, is gone. No clock here: callers pass `now` and ask
`next_deadline()` when to call `expire` again.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmshare.core.announce import Announcement
from swarmshare.core.catalog import Catalog
from swarmshare.limits import EXPIRY_INTERVALS, MAX_PEERS


@dataclass
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

    @property
    def expires_at(self) -> float:
        """When the peer is gone unless heard again."""
        return self.last_seen + EXPIRY_INTERVALS * self.interval

    @property
    def catalog_stale(self) -> bool:
        """Whether the announced catalogue differs from the one held."""
        return self.catalog is None or self.catalog.version != self.announced_version


@dataclass(frozen=True, slots=True)
class PeerJoined:
    """A peer was heard for the first time (or again after it expired)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """A peer said bye or was not heard for too long."""

    peer: Peer
    reason: str


@dataclass(frozen=True, slots=True)
class CatalogStale:
    """A peer announced a catalogue version other than the one held."""

    peer: Peer


PeerEvent = PeerJoined | PeerLeft | CatalogStale


class PeerTable:
    """Live peers, keyed by peer ID."""

    def __init__(self, own_id: str) -> None:
        self.own_id = own_id
        self.peers: dict[str, Peer] = {}
        self.dropped_full = 0

    def heard(self, ann: Announcement, address: str, now: float) -> list[PeerEvent]:
        """Take in one announcement from `address`; the events it causes."""
        if ann.peer_id == self.own_id or ann.port == 0:
            return []
        peer = self.peers.get(ann.peer_id)
        if ann.bye:
            if peer is None:
                return []
            del self.peers[ann.peer_id]
            return [PeerLeft(peer, "said goodbye")]
        if peer is None:
            if len(self.peers) >= MAX_PEERS:
                self.dropped_full += 1
                return []
            peer = Peer(
                ann.peer_id,
                address,
                ann.port,
                ann.name,
                ann.interval,
                now,
                now,
                ann.catalog_version,
            )
            self.peers[ann.peer_id] = peer
            return [PeerJoined(peer), CatalogStale(peer)]
        moved = (peer.address, peer.port) != (address, ann.port)
        peer.address, peer.port, peer.name = address, ann.port, ann.name
        peer.interval, peer.last_seen = ann.interval, now
        peer.announced_version = ann.catalog_version
        if moved:
            peer.catalog = None
        return [CatalogStale(peer)] if peer.catalog_stale else []

    def expire(self, now: float) -> list[PeerEvent]:
        """Drop the peers not heard for too long."""
        gone = [p for p in self.peers.values() if p.expires_at <= now]
        for peer in gone:
            del self.peers[peer.peer_id]
        return [PeerLeft(peer, "not heard from") for peer in gone]

    def next_deadline(self) -> float | None:
        """When `expire` may next drop a peer, or None with no peers."""
        return min((p.expires_at for p in self.peers.values()), default=None)

    def live(self) -> list[Peer]:
        """The live peers, by name."""
        return sorted(self.peers.values(), key=lambda p: (p.name, p.address))
