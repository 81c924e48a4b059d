"""The middle tier: discovery and catalogue sync of several peers in one process, on loopback,
driven by events and by a clock the test jumps forward (no sleeps)."""

from __future__ import annotations

from pathlib import Path

from inproc import JumpClock, make_manifest, member, until
from swarmshare.app.loopback import spare_port
from swarmshare.core.pacing import AnnouncePacer, Answer, Broadcast
from swarmshare.limits import CHANGE_ANNOUNCE_DELAY_SECONDS


def test_pacer_schedule_in_simulated_time() -> None:
    pacer = AnnouncePacer(interval=30.0, now=100.0)
    assert pacer.next_deadline() == 100.0
    assert pacer.due(100.0) == [Broadcast(solicit=True)]
    assert pacer.due(100.0) == [] and pacer.next_deadline() == 130.0
    pacer.changed(110.0)
    pacer.changed(110.01)  # one announcement for changes close together
    assert pacer.next_deadline() == 110.0 + CHANGE_ANNOUNCE_DELAY_SECONDS
    assert pacer.due(110.0 + CHANGE_ANNOUNCE_DELAY_SECONDS) == [Broadcast(solicit=False)]
    assert pacer.next_deadline() == 140.0 + CHANGE_ANNOUNCE_DELAY_SECONDS
    for _ in range(1000):  # a solicit flood from one address: one answer
        pacer.solicited(("127.0.0.9", 5001), 115.0, 0.02)
    assert pacer.next_deadline() == 115.02
    assert pacer.due(115.02) == [Answer(("127.0.0.9", 5001))]
    assert pacer.due(116.0) == []


async def test_peers_find_each_other_see_a_change_and_expire_a_silent_one(
    tmp_path: Path,
) -> None:
    port = spare_port()
    clock = JumpClock()
    async with (
        member(tmp_path, 2, port, clock=clock) as a,
        member(tmp_path, 3, port, clock=clock) as b,
        member(tmp_path, 4, port, clock=clock) as c,
    ):
        first = b.holdings.add(make_manifest(tmp_path, "one.txt", b"one"))
        b.swarm.changed()
        await until(a.swarm, lambda: {i.name for i in a.swarm.network()} == {"one.txt"})
        await until(a.swarm, lambda: set(a.swarm.table.peers) == {b.swarm.peer_id, c.swarm.peer_id})
        assert [p.peer_id for p, _ in a.swarm.holders(first)] == [b.swarm.peer_id]

        # A change is announced and fetched (once the per-peer re-fetch pacing allows it).
        b.holdings.add(make_manifest(tmp_path, "two.txt", b"two"))
        b.swarm.changed()
        clock.jump(2.0)
        b.swarm.wake()
        a.swarm.wake()
        await until(a.swarm, lambda: len(a.swarm.network()) == 2)

        # C stops without a goodbye; B keeps announcing. 40 s of protocol time pass in steps.
        await c.swarm.discovery.__aexit__(None, None, None)
        peer_b = a.swarm.table.peers[b.swarm.peer_id]
        for _ in range(4):
            clock.jump(10.0)
            heard_before = peer_b.last_seen
            b.swarm.wake()  # its periodic announcement is due
            await until(a.swarm, lambda: peer_b.last_seen > heard_before)  # noqa: B023
            a.swarm.wake()
        assert set(a.swarm.table.peers) == {b.swarm.peer_id}
        assert [i.name for i in a.swarm.network()] == ["one.txt", "two.txt"]
