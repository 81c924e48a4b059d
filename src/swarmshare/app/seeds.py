"""Peers that run the original four scripts, as this peer sees and serves them.

- `SeedView` hears seed announcements on the discovery port and lists their contents (NAME, its
  pieces, the addresses that announced each), marked legacy and unverified. Every session has
  one: a seed content is found the same way with or without a daemon.
- `SeedServing` (a daemon in legacy mode) announces this peer's shared files as NAME_1..NAME_5
  in the seed's datagram format and answers seed downloaders on the legacy TCP port with the
  i-th fifth of a shared file.

Fetching seed contents is a source of the one download engine (sources.py: `SeedOrigin`).
All seed-format bytes are handled in net/legacy.py; here seed names meet the library
(NAME = a shared file's name without its extension).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath

from swarmshare.app.shelf import Shelf
from swarmshare.app.translog import TransferLog
from swarmshare.net.legacy import (
    LegacyServer,
    SeedChunk,
    SeedFormatError,
    decode_seed_announcement,
    encode_seed_announcements,
    is_seed_datagram,
    piece_span,
)

SEED_EXPIRY_SECONDS = 300.0
MAX_SEED_CONTENTS = 10_000

log = logging.getLogger("swarmshare")


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


class SeedView:
    """The seed contents and hosts heard on the discovery port."""

    def __init__(
        self,
        port: int,
        is_native: Callable[[str], bool],
        translog: TransferLog | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.contents: dict[str, SeedContent] = {}
        self.heard = 0
        self.malformed = 0
        self.listeners: list[Callable[[], None]] = []
        self._is_native = is_native
        self._translog = translog
        self._clock = clock

    def datagram(self, data: bytes, address: str) -> None:
        """A datagram that is not a native announcement: maybe the seed's."""
        if not is_seed_datagram(data):
            self.malformed += 1
            return
        if self._is_native(address):
            return  # a swarmshare peer in legacy mode: already listed natively
        try:
            chunks = decode_seed_announcement(data)
        except SeedFormatError:
            self.malformed += 1
            return
        self.heard += 1
        now = self._clock()
        for chunk in chunks:
            content = self.contents.get(chunk.name)
            if content is None:
                if len(self.contents) >= MAX_SEED_CONTENTS:
                    continue
                content = self.contents[chunk.name] = SeedContent(chunk.name)
            content.pieces.setdefault(chunk.index, {})[address] = now
        for listener in list(self.listeners):
            listener()

    def live_contents(self) -> list[SeedContent]:
        """Seed contents heard recently, by name (older announcements are forgotten)."""
        cutoff = self._clock() - SEED_EXPIRY_SECONDS
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
        now, wall = self._clock(), time.time()
        return [
            {
                "peer_id": f"seed:{address}",
                "name": "seed peer (original scripts)",
                "address": address,
                "port": self.port,
                "last_seen": wall - (now - when),
                "items": len(names),
                "legacy": True,
            }
            for address, (when, names) in sorted(seen.items())
        ]

    def log_down(self, address: str, chunk: SeedChunk, nbytes: int, result: str) -> None:
        """One piece fetched (or not) from a seed uploader, in the transfer log."""
        if self._translog is not None:
            self._translog.add(
                "down", address, "", chunk.label, chunk.index, nbytes, result, legacy=True
            )


class SeedServing:
    """A daemon's legacy side: seed announcements of its files and the seed chunk server."""

    def __init__(
        self,
        shelf: Shelf,
        translog: TransferLog,
        send: Callable[[bytes], None],
        bind: str,
        port: int,
        interval: float,
    ) -> None:
        self.shelf = shelf
        self.server = LegacyServer(bind, port, self.locate, self._served)
        self._translog = translog
        self._send = send
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SeedServing:
        await self.server.__aenter__()
        self._task = asyncio.create_task(self._announcer())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.server.__aexit__(*exc)

    def seed_names(self) -> dict[str, str]:
        """NAME -> content ID of every shared single file (the seed knows no folders)."""
        names: dict[str, str] = {}
        served = self.shelf.shares()
        for content_id, item in sorted(served.items(), key=lambda kv: kv[1].record.name):
            if item.record.kind != "file":
                continue
            stem = PurePath(item.record.name).stem
            # Two files with one stem (cat.png, cat.jpg): the seed only ever meant PNGs.
            if stem not in names or item.record.name.lower().endswith(".png"):
                names[stem] = content_id
        return names

    def locate(self, chunk: SeedChunk) -> tuple[str, int, int] | None:
        """Where the i-th fifth of the shared file NAME.* is; None when not shared or changed."""
        content_id = self.seed_names().get(chunk.name)
        if content_id is None:
            return None
        item = self.shelf.shares()[content_id]
        path, recorded = item.files[0]
        if not self.shelf.file_is_intact(path, recorded):
            return None
        offset, length = piece_span(item.record.size, chunk.index)
        return path, offset, length

    def _served(self, peer: str, label: str, nbytes: int, result: str) -> None:
        self._translog.add("up", peer, "", label, _index(label), nbytes, result, legacy=True)
        if result != "ok":
            log.info("legacy: refused %r from %s (%s)", label[:40], peer, result)

    async def _announcer(self) -> None:
        while True:
            self.announce()
            await asyncio.sleep(self._interval)

    def announce(self) -> None:
        """Send NAME_1..NAME_5 of every shared file in seed datagrams."""
        for datagram in encode_seed_announcements(list(self.seed_names())):
            self._send(datagram)


def _index(label: str) -> int:
    tail = label.rpartition("_")[2]
    return int(tail) if tail.isdigit() and len(tail) == 1 else 0
