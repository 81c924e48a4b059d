"""One hostile host against in-process peers on loopback: proofs copied or relayed in a private
swarm, announcement floods, a full peer table, spoofed peer IDs, renamed contents. The hostile
side is the suite's own (evilpeer.HostilePeer, a relay built on faultrelay.pipe); every test
counts outcomes and work, never time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from evilpeer import HostilePeer
from faultrelay import pipe
from inproc import JumpClock, make_manifest, member, until
from swarmshare.app.loopback import spare_port
from swarmshare.core.announce import Announcement, encode_private
from swarmshare.core.auth import derive_key
from swarmshare.core.catalog import CatalogItem
from swarmshare.limits import MAX_PEER_INTERVAL_SECONDS, MAX_PEERS_PER_ADDRESS
from swarmshare.net.client import PeerClient, PeerUnavailable

SECRET = "correct horse battery staple"


@asynccontextmanager
async def relay(bind: str, target: tuple[str, int]) -> AsyncIterator[int]:
    """A host at `bind` that passes every TCP byte on to `target`, both ways; its port."""

    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target, local_addr=(bind, 0))
        writers.update((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer, 0.0), pipe(up_reader, writer, 0.0))

    server = await asyncio.start_server(handle, bind, 0)
    async with server:
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            for writer in writers:
                writer.close()


async def test_a_relayed_private_request_is_refused(tmp_path: Path) -> None:
    port = spare_port()
    async with member(tmp_path, 3, port, secret=SECRET) as b:
        b.holdings.add(make_manifest(tmp_path, "payroll.xlsx", b"salaries"))
        async with (
            PeerClient(local_address="127.0.0.2", key=derive_key(SECRET)) as a_client,
            relay("127.0.0.9", (b.address, b.server.port)) as relay_port,
        ):
            direct = await a_client.catalog(b.address, b.server.port)
            assert direct is not None and direct.items[0].name == "payroll.xlsx"
            with pytest.raises(PeerUnavailable, match="401"):
                await a_client.catalog("127.0.0.9", relay_port)  # A's proof, relayed to B
        assert b.server.auth_refused == 1


async def test_a_private_announcement_rebroadcast_from_another_address_is_ignored(
    tmp_path: Path,
) -> None:
    port = spare_port()
    captured = encode_private(  # member B's signed announcement, as heard on the LAN
        Announcement("b" * 16, 5001, "peer3", "0", 10.0),
        derive_key(SECRET),
        time.time(),
        "127.0.0.3",
    )
    async with (
        member(tmp_path, 2, port, secret=SECRET) as a,
        HostilePeer("127.0.0.9", port) as attacker,
        HostilePeer("127.0.0.3", port) as from_b,
    ):
        attacker.send_raw(captured)
        from_b.send_raw(captured)  # the same bytes from the address they were signed for
        await until(a.swarm, lambda: "b" * 16 in a.swarm.table.peers)
        assert a.swarm.table.peers["b" * 16].address == "127.0.0.3"
        refused = a.swarm.discovery.stats.foreign
        attacker.send_raw(captured)
        await until(a.swarm, lambda: a.swarm.discovery.stats.foreign > refused)
        assert a.swarm.table.conflicts == 0  # refused by the proof, before the table


async def test_announcement_floods_cost_a_few_catalogue_fetches(tmp_path: Path) -> None:
    port = spare_port()
    clock = JumpClock()
    async with member(tmp_path, 2, port, clock=clock) as a, HostilePeer("127.0.0.9", port) as evil:
        evil.serve_catalog([CatalogItem(f"{i:064x}", f"f{i}", "file", i, 1) for i in range(2000)])
        stats = a.swarm.discovery.stats
        start = stats.received
        for i in range(200):  # a new version every time, one its catalogue never matches
            evil.announce(version=f"{i + 1:x}", interval=30.0)
        await until(a.swarm, lambda: stats.received >= start + 200)
        await until(a.swarm, lambda: evil.requests["catalog"] >= 1 and not a.swarm._fetching)
        assert evil.requests["catalog"] == 1
        for step in range(64):  # a minute of protocol time, the lie repeated every second
            clock.jump(1.0)
            before = stats.received
            evil.announce(version=f"{1000 + step:x}", interval=30.0)
            await until(a.swarm, lambda: stats.received > before)  # noqa: B023
            a.swarm.wake()
            await until(a.swarm, lambda: not a.swarm._fetching)
        # backed off 1, 2, 4, ... 32 s: a handful of fetches, not 64
        assert 3 <= evil.requests["catalog"] <= 8, evil.requests


async def test_a_flood_of_long_lived_fake_peers_does_not_keep_an_honest_one_out(
    tmp_path: Path,
) -> None:
    port = spare_port()
    clock = JumpClock()
    async with member(tmp_path, 2, port, clock=clock) as a, HostilePeer("127.0.0.9", port) as evil:
        stats = a.swarm.discovery.stats
        start = stats.received
        for batch in range(6):  # 1,030 datagrams, within the per-source rate limit
            for i in range(batch * 200, min(1030, batch * 200 + 200)):
                evil.announce(peer_id=f"{i + 0xF000:016x}", interval=3600.0)
            await until(a.swarm, lambda: stats.received >= start + min(1030, batch * 200 + 200))  # noqa: B023
            clock.jump(1.0)
        from_evil = [p for p in a.swarm.table.peers.values() if p.address == "127.0.0.9"]
        assert len(from_evil) == MAX_PEERS_PER_ADDRESS
        assert all(p.interval == MAX_PEER_INTERVAL_SECONDS for p in from_evil)
        async with member(tmp_path, 3, port, clock=clock) as honest:
            await until(a.swarm, lambda: honest.swarm.peer_id in a.swarm.table.peers)


async def test_a_peer_id_from_a_second_address_neither_redirects_nor_says_bye(
    tmp_path: Path,
) -> None:
    port = spare_port()
    async with (
        member(tmp_path, 2, port) as a,
        member(tmp_path, 3, port) as b,
        HostilePeer("127.0.0.9", port) as evil,
    ):
        b.holdings.add(make_manifest(tmp_path, "real.txt", b"real"))
        b.swarm.changed()
        await until(a.swarm, lambda: [i.name for i in a.swarm.network()] == ["real.txt"])
        b_id = b.swarm.peer_id
        version = evil.serve_catalog(
            [CatalogItem("e" * 64, "evil.txt", "file", 4, 1)], peer_id=b_id
        )
        stats = a.swarm.discovery.stats
        before = stats.received
        evil.announce(peer_id=b_id, version=version, interval=10.0)
        evil.announce(peer_id=b_id, bye=True)
        await until(a.swarm, lambda: stats.received >= before + 2)
        assert a.swarm.table.conflicts == 2
        assert a.swarm.table.peers[b_id].address == "127.0.0.3"
        assert [i.name for i in a.swarm.network()] == ["real.txt"]
        assert evil.requests["catalog"] == 0


async def test_a_content_is_called_what_its_manifest_says(tmp_path: Path) -> None:
    port = spare_port()
    async with (
        member(tmp_path, 2, port) as a,
        member(tmp_path, 3, port) as seeder,
        HostilePeer("127.0.0.9", port) as mute,
        HostilePeer("127.0.0.10", port) as renamer,
    ):
        manifest = make_manifest(tmp_path, "report.pdf", b"quarterly figures")
        cid = seeder.holdings.add(manifest)
        seeder.swarm.changed()
        await until(a.swarm, lambda: len(a.swarm.holders(cid)) == 1)
        entry = CatalogItem(cid, "aaa-renamed.pdf", manifest.kind, manifest.total_size, 1)
        renamer.manifests[cid] = manifest.encoded  # it can serve the manifest, names it wrong
        for liar in (mute, renamer):  # "hostile" sorts before "peer3"
            liar.announce(version=liar.serve_catalog([entry]), interval=10.0)
        await until(a.swarm, lambda: a.swarm.manifest_checks >= 1 and not a.swarm._checking)
        assert [(i.name, i.id) for i in a.swarm.network()] == [("report.pdf", cid)]
        assert [p.address for p, _ in a.swarm.holders(cid)] == ["127.0.0.3"]
