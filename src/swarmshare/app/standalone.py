"""Looking at the swarm without a daemon: solicit answers, wait briefly, fetch catalogues."""

from __future__ import annotations

from dataclasses import dataclass

from swarmshare.app.swarm import NetworkItem, Swarm, peer_json
from swarmshare.net.client import PeerClient
from swarmshare.settings import Settings
from swarmshare.store.db import Database


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
        PeerClient(local_address=settings.bind, idle_timeout=settings.read_idle_timeout) as client,
        Swarm(settings, peer_id, client, listen=False) as swarm,
    ):
        await swarm.settle(wait)
        items: list[NetworkItem] = swarm.network()
        return NetworkView(
            [i.as_json() | {"here": False} for i in items],
            [peer_json(p) for p in swarm.table.live()],
        )
