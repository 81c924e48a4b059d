"""Legacy mode: a swarmshare peer beside peers that run the original four scripts.

- hears seed announcements on the discovery port and lists their contents (NAME, its pieces,
  the addresses that announced each), marked legacy and unverified;
- announces its own shared files as NAME_1..NAME_5 in the seed's datagram format;
- answers seed downloaders on the legacy TCP port with the i-th fifth of a shared file;
- fetches seed contents from seed uploaders, trying every address listed for a piece.

All seed-format bytes are handled in net/legacy.py; this module maps seed names onto the
library (NAME = a shared file's name without its extension).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from swarmshare.app.download import Stats
from swarmshare.app.downloads import resolve_dest
from swarmshare.errors import NotFoundError, SwarmshareError, UsageError
from swarmshare.net.legacy import (
    LegacyServer,
    SeedChunk,
    SeedFetchError,
    SeedFormatError,
    decode_seed_announcement,
    encode_seed_announcements,
    fetch_seed_chunk,
    is_seed_datagram,
    piece_span,
)

if TYPE_CHECKING:
    from swarmshare.app.daemon import Daemon

SEED_EXPIRY_SECONDS = 300.0
MAX_SEED_CONTENTS = 10_000
MAX_SEED_PIECE_BYTES = 256 << 20  # the seed shares PNG files; a fifth of one is small
SEED_FETCH_IDLE_SECONDS = 10.0


@dataclass
class SeedContent:
    """A content the seed peers announce: its pieces and who announced each."""

    name: str
    pieces: dict[int, dict[str, float]] = field(default_factory=dict)

    def addresses(self) -> set[str]:
        """Every address that announced any piece."""
        return {a for holders in self.pieces.values() for a in holders}

    @property
    def count(self) -> int:
        """How many pieces it has: the highest index announced (the seed's small files have
        fewer than five)."""
        return max(self.pieces, default=0)

    @property
    def complete(self) -> bool:
        """Whether every piece 1..count has an address."""
        return all(self.pieces.get(i) for i in range(1, self.count + 1))

    def as_json(self) -> dict[str, object]:
        """A network-list entry."""
        return {
            "id": f"seed:{self.name}",
            "name": self.name,
            "kind": "legacy",
            "size": None,
            "chunks": self.count,
            "peers": len(self.addresses()),
            "complete": self.complete,
            "legacy": True,
            "verified": False,
        }


class Legacy:
    """The legacy side of one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.contents: dict[str, SeedContent] = {}
        self.heard = 0
        self.malformed = 0
        self.server: LegacyServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Legacy:
        s = self.daemon.settings
        self.server = LegacyServer(s.bind, s.legacy_port, self.locate, self._served)
        await self.server.__aenter__()
        self._task = asyncio.create_task(self._announcer())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.server is not None:
            await self.server.__aexit__(*exc)

    # ---- hearing seed announcements --------------------------------------------------------

    def datagram(self, data: bytes, address: str) -> None:
        """A datagram that is not a native announcement: maybe the seed's."""
        if not is_seed_datagram(data):
            self.malformed += 1
            return
        if self._is_native_peer(address):
            return  # a swarmshare peer in legacy mode: already listed natively
        try:
            chunks = decode_seed_announcement(data)
        except SeedFormatError:
            self.malformed += 1
            return
        self.heard += 1
        now = time.monotonic()
        for chunk in chunks:
            content = self.contents.get(chunk.name)
            if content is None:
                if len(self.contents) >= MAX_SEED_CONTENTS:
                    continue
                content = self.contents[chunk.name] = SeedContent(chunk.name)
            content.pieces.setdefault(chunk.index, {})[address] = now

    def live_contents(self) -> list[SeedContent]:
        """Seed contents heard recently, by name (older announcements are forgotten)."""
        cutoff = time.monotonic() - SEED_EXPIRY_SECONDS
        for content in list(self.contents.values()):
            for index in list(content.pieces):
                holders = content.pieces[index]
                for address in [a for a, seen in holders.items() if seen < cutoff]:
                    del holders[address]
                if not holders:
                    del content.pieces[index]
            if not content.pieces:
                del self.contents[content.name]
        return sorted(self.contents.values(), key=lambda c: c.name.lower())

    def peers(self) -> list[dict[str, object]]:
        """The seed peers heard, as peer-list entries."""
        seen: dict[str, tuple[float, set[str]]] = {}
        for content in self.live_contents():
            for holders in content.pieces.values():
                for address, when in holders.items():
                    last, names = seen.get(address, (0.0, set()))
                    seen[address] = (max(last, when), names | {content.name})
        mono, wall = time.monotonic(), time.time()
        return [
            {
                "peer_id": f"seed:{address}",
                "name": "seed peer (original scripts)",
                "address": address,
                "port": self.daemon.settings.legacy_port,
                "last_seen": wall - (mono - when),
                "items": len(names),
                "legacy": True,
            }
            for address, (when, names) in sorted(seen.items())
        ]

    def _is_native_peer(self, address: str) -> bool:
        swarm = self.daemon.swarm
        if address == self.daemon.settings.bind:
            return True
        return swarm is not None and any(p.address == address for p in swarm.table.live())

    # ---- announcing and serving our files ---------------------------------------------------

    def seed_names(self) -> dict[str, str]:
        """NAME -> content ID of every shared single file (the seed knows no folders)."""
        names: dict[str, str] = {}
        for content_id, served in sorted(
            self.daemon.served_items().items(), key=lambda kv: kv[1].record.name
        ):
            if served.manifest.kind != "file":
                continue
            stem = PurePath(served.record.name).stem
            # Two files with one stem (cat.png, cat.jpg): the seed only ever meant PNGs.
            if stem not in names or served.record.name.lower().endswith(".png"):
                names[stem] = content_id
        return names

    def locate(self, chunk: SeedChunk) -> tuple[str, int, int] | None:
        """Where the i-th fifth of the shared file NAME.* is; None when not shared or changed."""
        content_id = self.seed_names().get(chunk.name)
        if content_id is None:
            return None
        served = self.daemon.served_items()[content_id]
        path, recorded = served.files[0]
        if not self.daemon.file_is_intact(path, recorded):
            return None
        offset, length = piece_span(served.record.size, chunk.index)
        return path, offset, length

    def _served(self, peer: str, label: str, nbytes: int, result: str) -> None:
        if self.daemon.translog is not None:
            self.daemon.translog.add(
                "up", peer, "", label, _index(label), nbytes, result, legacy=True
            )
        if result != "ok":
            self.daemon.say(f"legacy: refused {label[:40]!r} from {peer} ({result})")

    async def _announcer(self) -> None:
        while True:
            self.announce()
            await asyncio.sleep(self.daemon.settings.interval)

    def announce(self) -> None:
        """Send NAME_1..NAME_5 of every shared file in seed datagrams."""
        swarm = self.daemon.swarm
        if swarm is None:
            return
        for datagram in encode_seed_announcements(list(self.seed_names())):
            swarm.discovery.send_raw(datagram)

    # ---- fetching seed contents -------------------------------------------------------------

    async def download(
        self, ref: str, output: str | None, dest_dir: Path, force: bool, wait: float
    ) -> Stats:
        """Fetch a seed content from seed uploaders; the result is unverified (no hashes)."""
        name = ref[:-4] if ref.lower().endswith(".png") else ref
        content = await self._wait_for(name, wait)
        dest = resolve_dest(f"{name}.png", output, dest_dir)
        if dest.exists() and not force:
            raise UsageError(f"{dest} exists; use --force to replace it")
        stats = Stats(f"seed:{name}", name, str(dest), unverified=True)
        stats.chunks_total = content.count
        part = dest.with_name(dest.name + ".part")
        settings = self.daemon.settings
        fd = await asyncio.to_thread(os.open, part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for index in range(1, content.count + 1):
                data, address = await self._fetch_piece(content, index, stats)
                await asyncio.to_thread(_write_all, fd, data)
                stats.done_bytes += len(data)
                stats.fetched_bytes += len(data)
                stats.chunks_done += 1
                stats.by_peer[address] = stats.by_peer.get(address, 0) + 1
            await asyncio.to_thread(os.fsync, fd)
            os.close(fd)
            fd = -1
            os.replace(part, dest)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        stats.total_bytes = stats.done_bytes
        stats.state = "done"
        stats.finished = time.time()
        self.daemon.say(
            f"legacy: fetched {name} ({stats.total_bytes} bytes) from seed peers"
            f" {sorted(stats.by_peer)} on port {settings.legacy_port}; UNVERIFIED (no hashes)"
        )
        return stats

    async def _wait_for(self, name: str, wait: float) -> SeedContent:
        deadline = time.monotonic() + wait
        while True:
            content = next((c for c in self.live_contents() if c.name == name), None)
            if content is not None and content.complete:
                return content
            if time.monotonic() >= deadline:
                if content is None:
                    raise NotFoundError(f"nothing called {name!r} in the network")
                missing = [i for i in range(1, content.count + 1) if not content.pieces.get(i)]
                raise SwarmshareError(f"no seed peer announces {name}_{missing[0]}")
            await asyncio.sleep(0.2)

    async def _fetch_piece(
        self, content: SeedContent, index: int, stats: Stats
    ) -> tuple[bytes, str]:
        settings = self.daemon.settings
        chunk = SeedChunk(content.name, index)
        addresses = list(content.pieces.get(index, {}))
        random.shuffle(addresses)
        errors = []
        for address in addresses:
            try:
                data = await _fetch(address, settings.legacy_port, chunk, settings.bind)
            except SeedFetchError as exc:
                errors.append(str(exc))
                stats.retried += 1
                self._log_down(address, chunk, 0, "refused")
                continue
            self._log_down(address, chunk, len(data), "ok")
            return data, address
        raise SwarmshareError(
            f"no seed peer could send {chunk.label} (tried {len(addresses)}): "
            + "; ".join(errors[-2:])
        )

    def _log_down(self, address: str, chunk: SeedChunk, nbytes: int, result: str) -> None:
        if self.daemon.translog is not None:
            self.daemon.translog.add(
                "down", address, "", chunk.label, chunk.index, nbytes, result, legacy=True
            )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _fetch(address: str, port: int, chunk: SeedChunk, bind: str) -> bytes:
    return await fetch_seed_chunk(
        address,
        port,
        chunk,
        limit=MAX_SEED_PIECE_BYTES,
        idle_seconds=SEED_FETCH_IDLE_SECONDS,
        local_address=bind,
    )


def _index(label: str) -> int:
    tail = label.rpartition("_")[2]
    return int(tail) if tail.isdigit() and len(tail) == 1 else 0
