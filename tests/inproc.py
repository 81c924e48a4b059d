"""In-process peers for the middle test tier: real sockets on loopback, one event loop, and a
clock the test may move forward (the loop's own time plus a jump)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from swarmshare.app.swarm import Swarm
from swarmshare.core.auth import derive_key
from swarmshare.core.catalog import Catalog, CatalogItem, make_catalog
from swarmshare.core.location import ChunkLocation
from swarmshare.core.manifest import Manifest
from swarmshare.net.client import PeerClient
from swarmshare.net.server import PeerServer, ServeError
from swarmshare.settings import Settings
from swarmshare.store.hashing import hash_content, scan_path


class JumpClock:
    """The running loop's time plus however far the test has jumped ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return asyncio.get_running_loop().time() + self.offset

    def jump(self, seconds: float) -> None:
        """Move protocol time forward at once."""
        self.offset += seconds


def make_manifest(directory: Path, name: str, data: bytes) -> Manifest:
    """The manifest of a one-file content called `name` holding `data`."""
    path = directory / name
    path.write_bytes(data)
    scanned_name, kind, files, _ = scan_path(str(path))
    return hash_content(scanned_name, kind, files)


@dataclass
class Holdings:
    """What an in-process peer serves: catalogue and manifests (no chunks)."""

    peer_id: str
    manifests: dict[str, Manifest] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    _catalog: Catalog | None = None

    def add(self, manifest: Manifest, listed_as: str | None = None) -> str:
        """Hold a content (listed under `listed_as` instead of its name, to lie)."""
        self.manifests[manifest.content_id] = manifest
        self.names[manifest.content_id] = listed_as or manifest.name
        self._catalog = None
        return manifest.content_id

    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = make_catalog(
                self.peer_id,
                [
                    CatalogItem(cid, self.names[cid], m.kind, m.total_size, m.chunk_total)
                    for cid, m in self.manifests.items()
                ],
            )
        return self._catalog

    def manifest_bytes(self, content_id: str) -> bytes:
        if content_id not in self.manifests:
            raise ServeError(404, "unknown_content", "not held here")
        return self.manifests[content_id].encoded

    def chunk_location(self, content_id: str, index: int) -> tuple[str, ChunkLocation]:
        raise ServeError(404, "unknown_content", "no chunks in this test peer")

    def file_location(self, content_id: str, path: str | None) -> str:
        raise ServeError(404, "unknown_content", "no files in this test peer")

    def web_seed_file(self, content_id: str, path: str) -> str | int:
        raise ServeError(404, "unknown_content", "no files in this test peer")

    def served(
        self, peer: str, content_id: str, name: str, index: int, nbytes: int, result: str
    ) -> None:
        pass


@dataclass
class Member:
    """One in-process peer: what it holds, its server and its swarm."""

    address: str
    holdings: Holdings
    server: PeerServer
    swarm: Swarm
    client: PeerClient


@asynccontextmanager
async def member(
    home: Path,
    index: int,
    discovery_port: int,
    *,
    clock: Callable[[], float] | None = None,
    interval: float = 10.0,
    secret: str | None = None,
) -> AsyncIterator[Member]:
    """A peer at 127.0.0.`index` with a peer server and a listening swarm."""
    address = f"127.0.0.{index}"
    peer_id = f"{index:016x}"
    settings = Settings(
        home=home,
        name=f"peer{index}",
        bind=address,
        port=0,
        discovery_port=discovery_port,
        broadcast=("127.255.255.255",),
        interval=interval,
        secret=secret,
    )
    key = derive_key(secret) if secret else None
    holdings = Holdings(peer_id)
    async with (
        PeerClient(local_address=address, key=key) as client,
        PeerServer(holdings, address, 0, key=key) as server,
        Swarm(
            settings,
            peer_id,
            client,
            catalog_version=lambda: holdings.catalog().version,
            serving_port=server.port,
            clock=clock,
        ) as swarm,
    ):
        yield Member(address, holdings, server, swarm, client)


async def until(swarm: Swarm, predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for `predicate()` to hold, woken by the swarm's updates; fail after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        await swarm.wait_updated(0.05)
