"""Where the chunks of a download come from: one small interface, one adapter per kind of source.

The download engine (download.py) knows only `Origin` and `Source`:

- an **Origin** finds the manifest of one content and lists the sources that hold it now
  (swarmshare peers that list it in their catalogues; hosts running the original scripts);
- a **Source** fetches one chunk, and says which chunks it holds.

Later kinds (plain HTTP web seeds, BitTorrent, LocalSend senders) plug in here as further
adapters; the engine does not change.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from swarmshare.app.seeds import SeedContent, SeedView
from swarmshare.app.swarm import Swarm
from swarmshare.core.catalog import bitmap_get
from swarmshare.core.manifest import ChunkRef, Manifest, manifest_of_bytes
from swarmshare.core.peers import Peer
from swarmshare.core.transfer import ChunkOutcome
from swarmshare.errors import IntegrityError, RemoteProtocolError, SwarmshareError
from swarmshare.net.chunkconn import Buffer
from swarmshare.net.client import PeerClient, PeerUnavailable
from swarmshare.net.legacy import SeedChunk, SeedFetchError, fetch_seed_chunk, piece_span

log = logging.getLogger("swarmshare")

MANIFEST_ASKS_AT_ONCE = 8
MAX_SEED_CONTENT_BYTES = 64 << 20  # the seed shares PNG files, assembled in memory once
SEED_FETCH_IDLE_SECONDS = 10.0


class SourceError(SwarmshareError):
    """One chunk request failed; `outcome` says how."""

    def __init__(self, message: str, outcome: ChunkOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class Source(Protocol):
    """One place that can send chunks of one content."""

    key: str
    """Stable and unique among the sources of one download (the scheduler's name for it)."""
    label: str
    """Who it is, for the transfer log and the summary (an address)."""
    version: object
    """Changes whenever what it holds changes."""

    def holds(self, index: int) -> bool:
        """Whether it has chunk `index`."""

    async def fetch(self, ref: ChunkRef) -> Buffer:
        """Exactly `ref.length` bytes, not yet verified; SourceError on failure."""

    def release(self, buffer: Buffer) -> None:
        """A buffer `fetch` returned is no longer used."""


@runtime_checkable
class BatchSource(Source, Protocol):
    """A source that can also send many small chunks in one request."""

    async def fetch_many(self, refs: list[ChunkRef]) -> Buffer:
        """The chunks of `refs`, one after the other, not yet verified; SourceError on
        failure (of the whole batch)."""


class Origin(Protocol):
    """Finds the manifest and the sources of one content."""

    unverified: bool
    """True when the bytes cannot be checked against their publisher's hashes."""

    async def manifest(self) -> Manifest | None:
        """Try every holder once; None when none can send it now (see `problems`)."""

    def sources(self, manifest: Manifest) -> list[Source]:
        """The sources that hold (part of) it now."""

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` when the sources may have changed; returns the way to stop."""

    def problems(self) -> list[str]:
        """What holders did wrong lately, one line each (for the message when nothing is left)."""


class DeferredOrigin:
    """An origin made on first use (a download remembered before the network was up)."""

    unverified = False

    def __init__(self, make: Callable[[], Origin]) -> None:
        self._make = make
        self._origin: Origin | None = None

    @property
    def origin(self) -> Origin:
        """The real origin."""
        if self._origin is None:
            self._origin = self._make()
        return self._origin

    async def manifest(self) -> Manifest | None:
        """The real origin's."""
        return await self.origin.manifest()

    def sources(self, manifest: Manifest) -> list[Source]:
        """The real origin's."""
        return self.origin.sources(manifest)

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """The real origin's."""
        return self.origin.watch(wake)

    def problems(self) -> list[str]:
        """The real origin's."""
        return self.origin.problems()


# ---- swarmshare peers ------------------------------------------------------------------------


@dataclass
class PeerSource:
    """A swarmshare peer, fetched over HTTP."""

    peer: Peer
    client: PeerClient
    content_id: str
    have: bytes | None
    key: str = ""
    label: str = ""
    version: object = None

    def __post_init__(self) -> None:
        self.key = self.peer.peer_id
        self.label = self.peer.address
        self.version = (self.peer.address, self.peer.port, self.have)

    def holds(self, index: int) -> bool:
        """Everything when complete, else what its catalogue's bitmap says."""
        return self.have is None or bitmap_get(self.have, index)

    async def fetch(self, ref: ChunkRef) -> Buffer:
        """One chunk over the kept-alive chunk client."""
        try:
            return await self.client.chunk(
                self.peer.address, self.peer.port, self.content_id, ref.index, ref.length
            )
        except PeerUnavailable as exc:
            raise SourceError(str(exc), _outcome(exc.reason)) from None
        except RemoteProtocolError as exc:
            raise SourceError(str(exc), ChunkOutcome.SHORT) from None

    async def fetch_many(self, refs: list[ChunkRef]) -> Buffer:
        """Many small chunks in one request over the same kept-alive client."""
        try:
            return await self.client.chunks(
                self.peer.address,
                self.peer.port,
                self.content_id,
                [ref.index for ref in refs],
                sum(ref.length for ref in refs),
            )
        except PeerUnavailable as exc:
            raise SourceError(str(exc), _outcome(exc.reason)) from None
        except RemoteProtocolError as exc:
            raise SourceError(str(exc), ChunkOutcome.SHORT) from None

    def release(self, buffer: Buffer) -> None:
        """Back to the client's pool."""
        self.client.buffers.put(buffer)


def _outcome(reason: str) -> ChunkOutcome:
    try:
        return ChunkOutcome(reason)
    except ValueError:
        return ChunkOutcome.REFUSED


@dataclass
class SwarmOrigin:
    """A content held by swarmshare peers, found through their catalogues."""

    swarm: Swarm
    client: PeerClient
    content_id: str
    unverified: bool = False
    _problems: dict[str, str] = field(default_factory=dict)

    async def manifest(self) -> Manifest | None:
        """The manifest from the first holder that sends one hashing to the content ID.

        Every holder is asked at once (up to MANIFEST_ASKS_AT_ONCE): a slow or silent peer
        must not hold the download up while another could answer now."""
        holders = [peer for peer, _item in self.swarm.holders(self.content_id)]
        if not holders:
            return None
        asks = {
            asyncio.ensure_future(self._ask(peer)): peer for peer in holders[:MANIFEST_ASKS_AT_ONCE]
        }
        try:
            while asks:
                done, _ = await asyncio.wait(asks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    asks.pop(task)
                    manifest = task.result()
                    if manifest is not None:
                        return manifest
            return None
        finally:
            for task in asks:
                task.cancel()
            await asyncio.gather(*asks, return_exceptions=True)

    async def _ask(self, peer: Peer) -> Manifest | None:
        what = f"the manifest of {self.content_id[:12]}"
        try:
            manifest = await self.client.manifest(peer.address, peer.port, self.content_id)
        except IntegrityError as exc:
            self._problem(peer, f"{_who(peer)} sent a wrong {what}: {exc}")
            self.swarm.discredit(peer, self.content_id)  # it lists what it cannot serve
        except RemoteProtocolError as exc:
            self._problem(peer, f"{_who(peer)} offered an invalid {what}: {exc}")
            self.swarm.discredit(peer, self.content_id)
        except PeerUnavailable as exc:
            self._problem(peer, f"{_who(peer)} did not send {what}: {exc}")
        else:
            self._problems.pop(peer.address, None)
            return manifest
        return None

    def _problem(self, peer: Peer, line: str) -> None:
        if self._problems.get(peer.address) != line:
            log.warning("%s", line)
        self._problems[peer.address] = line

    def sources(self, manifest: Manifest) -> list[Source]:
        """Every live peer whose catalogue lists it with the manifest's size and chunk count."""
        found: list[Source] = []
        for peer, item in self.swarm.holders(self.content_id):
            if item.chunks != manifest.chunk_total or item.size != manifest.total_size:
                continue  # a catalogue that disagrees with the manifest: ignore that peer
            found.append(PeerSource(peer, self.client, self.content_id, item.have))
        return found

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Wake on any peer or catalogue change."""

        def on_event(_event: object) -> None:
            wake()

        self.swarm.listeners.append(on_event)
        self.swarm.catalog_listeners.append(on_event)

        def stop() -> None:
            for listeners in (self.swarm.listeners, self.swarm.catalog_listeners):
                if on_event in listeners:
                    listeners.remove(on_event)

        return stop

    def problems(self) -> list[str]:
        """The last thing each failing holder did."""
        return list(self._problems.values())


def _who(peer: Peer) -> str:
    return f"peer {peer.name!r} at {peer.address}"


# ---- hosts running the original scripts -------------------------------------------------------


@dataclass
class SeedOrigin:
    """A content announced by the original four scripts: five pieces named NAME_1..NAME_5.

    Their protocol has no hashes and no sizes, so the manifest is made here: every piece is
    fetched once (they are small: the scripts share PNG files), the file is hashed with
    swarmshare's own chunk rule, and the engine then writes it like any other content. Pieces
    fetched again later (a resumed download) must match that first fetch.
    """

    seeds: SeedView
    name: str
    port: int
    bind: str | None
    unverified: bool = True
    _data: bytes | None = None
    _by_address: dict[str, int] = field(default_factory=dict)
    _problems: dict[str, str] = field(default_factory=dict)

    @property
    def content(self) -> SeedContent | None:
        """What the seed peers announce now under this name."""
        return next((c for c in self.seeds.live_contents() if c.name == self.name), None)

    async def manifest(self) -> Manifest | None:
        """Fetch every piece, hash the whole with the native chunk rule."""
        content = self.content
        if content is None or not content.complete:
            if content is not None:
                missing = [i for i in range(1, content.count + 1) if not content.pieces.get(i)]
                self._problems["pieces"] = f"no seed peer announces {self.name}_{missing[0]}"
            return None
        pieces = []
        total = 0
        for index in range(1, content.count + 1):
            data = await self._piece(content, index)
            if data is None:
                return None
            total += len(data)
            if total > MAX_SEED_CONTENT_BYTES:
                raise SwarmshareError(f"{self.name} from seed peers is over the size limit")
            pieces.append(data)
        self._data = b"".join(pieces)
        return _manifest_of(f"{self.name}.png", self._data)

    async def _piece(self, content: SeedContent, index: int) -> bytes | None:
        chunk = SeedChunk(content.name, index)
        addresses = list(content.pieces.get(index, {}))
        random.shuffle(addresses)
        for address in addresses:
            try:
                data = await fetch_seed_chunk(
                    address,
                    self.port,
                    chunk,
                    limit=MAX_SEED_CONTENT_BYTES,
                    idle_seconds=SEED_FETCH_IDLE_SECONDS,
                    local_address=self.bind,
                )
            except SeedFetchError as exc:
                self._problems[address] = f"seed peer {address} did not send {chunk.label}: {exc}"
                self.seeds.log_down(address, chunk, 0, "refused")
                continue
            self.seeds.log_down(address, chunk, len(data), "ok")
            self._by_address[address] = self._by_address.get(address, 0) + 1
            return data
        return None

    def sources(self, manifest: Manifest) -> list[Source]:
        """The fetched bytes, or (resuming) every host that announced the content."""
        if self._data is not None:
            return [_MemorySource(self._data, sorted(self._by_address))]
        content = self.content
        if content is None:
            return []
        return [
            _SeedHostSource(self, address, manifest.total_size)
            for address in sorted(content.addresses())
        ]

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Wake when seed announcements arrive."""
        self.seeds.listeners.append(wake)

        def stop() -> None:
            if wake in self.seeds.listeners:
                self.seeds.listeners.remove(wake)

        return stop

    def problems(self) -> list[str]:
        """What seed peers did wrong lately."""
        return list(self._problems.values())


def _manifest_of(name: str, data: bytes) -> Manifest:
    return manifest_of_bytes(name, data)


@dataclass
class _MemorySource:
    """The pieces already fetched from seed peers, served to the engine from memory."""

    data: bytes
    addresses: list[str]
    key: str = "seed"
    label: str = ""
    version: object = 0

    def __post_init__(self) -> None:
        self.label = ",".join(self.addresses) or "seed"

    def holds(self, index: int) -> bool:
        """All of it."""
        return True

    async def fetch(self, ref: ChunkRef) -> Buffer:
        """A slice of the fetched bytes."""
        return bytearray(self.data[ref.offset : ref.offset + ref.length])

    def release(self, buffer: Buffer) -> None:
        """Nothing pooled."""


@dataclass
class _SeedHostSource:
    """One host running the original scripts, asked for the fifths that cover a chunk."""

    origin: SeedOrigin
    address: str
    size: int
    key: str = ""
    label: str = ""
    version: object = 0

    def __post_init__(self) -> None:
        self.key = f"seed:{self.address}"
        self.label = self.address

    def holds(self, index: int) -> bool:
        """Whatever it announced (it announces whole contents)."""
        return True

    async def fetch(self, ref: ChunkRef) -> Buffer:
        """The pieces covering the chunk, sliced."""
        out = bytearray()
        start, end = ref.offset, ref.offset + ref.length
        for index in range(1, 6):
            offset, length = piece_span(self.size, index)
            if offset + length <= start or offset >= end or length == 0:
                continue
            try:
                data = await fetch_seed_chunk(
                    self.address,
                    self.origin.port,
                    SeedChunk(self.origin.name, index),
                    limit=MAX_SEED_CONTENT_BYTES,
                    idle_seconds=SEED_FETCH_IDLE_SECONDS,
                    local_address=self.origin.bind,
                )
            except SeedFetchError as exc:
                raise SourceError(str(exc), ChunkOutcome.UNREACHABLE) from None
            lo, hi = max(start, offset) - offset, min(end, offset + length) - offset
            out += data[lo:hi]
        if len(out) != ref.length:
            raise SourceError("seed piece of the wrong size", ChunkOutcome.SHORT)
        return out

    def release(self, buffer: Buffer) -> None:
        """Nothing pooled."""
