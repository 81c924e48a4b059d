"""Looking at the swarm without a daemon: solicit answers, wait briefly, fetch catalogues."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swarmshare.app.download import Download, Stats
from swarmshare.app.downloads import find_content, resolve_dest
from swarmshare.app.swarm import NetworkItem, Swarm, peer_json
from swarmshare.app.translog import TransferLog
from swarmshare.core.auth import derive_key
from swarmshare.net.client import PeerClient
from swarmshare.settings import Settings
from swarmshare.store.db import Database
from swarmshare.store.library import Library


@dataclass
class NetworkView:
    """What a look around found."""

    items: list[dict[str, object]]
    peers: list[dict[str, object]]


async def browse(settings: Settings, wait: float) -> NetworkView:
    """Discover peers for up to `wait` seconds (less once every answer is in)."""
    db = Database.open_home(settings.home)
    try:
        peer_id = db.peer_id()
    finally:
        db.close()
    async with (
        PeerClient(
            local_address=settings.bind,
            idle_timeout=settings.read_idle_timeout,
            key=derive_key(settings.secret) if settings.secret else None,
        ) as client,
        Swarm(settings, peer_id, client, listen=False) as swarm,
    ):
        await swarm.settle(wait)
        items: list[NetworkItem] = swarm.network()
        return NetworkView(
            [i.as_json() | {"here": False} for i in items],
            [peer_json(p) for p in swarm.table.live()],
        )


async def standalone_get(
    settings: Settings,
    ref: str,
    output: str | None,
    dest_dir: Path,
    *,
    force: bool,
    wait: float,
    on_change: Callable[[Stats], None],
) -> Stats:
    """Download without a daemon: discover, fetch from every peer, add the result to the library."""
    db = Database.open_home(settings.home)
    try:
        library = Library(db)
        async with (
            TransferLog(db) as translog,
            PeerClient(
                local_address=settings.bind,
                idle_timeout=settings.read_idle_timeout,
                key=derive_key(settings.secret) if settings.secret else None,
            ) as client,
            Swarm(settings, db.peer_id(), client, listen=True) as swarm,
        ):
            content_id, name = await find_content(swarm, ref, wait)
            dest = resolve_dest(name, output, dest_dir)
            download = Download(
                content_id,
                name,
                dest,
                swarm=swarm,
                client=client,
                library=library,
                translog=translog,
                force=force,
                stall_timeout=max(wait, 30.0),
                chunk_timeout=settings.chunk_timeout,
                on_change=lambda d: on_change(d.stats),
            )
            return await download.run()
    finally:
        db.close()
