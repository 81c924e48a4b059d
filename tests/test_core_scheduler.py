"""The download scheduler driven by a simulated swarm in simulated time (no sockets, no clock)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from opcount import python_steps
from swarmshare.core.scheduler import Request, Scheduler


@dataclass
class SimPeer:
    peer_id: str
    kind: str  # honest, liar, dead, staller
    speed: float  # bytes per second
    holds: set[int] | None  # None: all


def simulate(
    lengths: list[int], peers: list[SimPeer], seed: int, leave_at: dict[str, float] | None = None
) -> tuple[Scheduler, dict[int, int], list[Request]]:
    rng = random.Random(seed)
    sched = Scheduler(lengths, rng=random.Random(seed))
    for p in peers:
        sched.add_peer(p.peer_id, (lambda i: True) if p.holds is None else p.holds.__contains__)
    by_id = {p.peer_id: p for p in peers}
    writes: dict[int, int] = {}
    sent: list[Request] = []
    events: list[tuple[float, int, str, Request]] = []
    live: set[Request] = set()
    started: dict[Request, float] = {}
    counter = 0
    now = 0.0
    leave = dict(leave_at or {})
    for _ in range(200_000):
        for cancelled in sched.take_cancels():
            live.discard(cancelled)
        for request in sched.next_requests(now):
            assert request.peer not in sched.dropped
            assert request.peer in by_id and request.peer not in leave.get("_gone", set())  # type: ignore[operator]
            holders = [r for r in live if r.chunk == request.chunk]
            assert not holders or request.endgame, "duplicate request outside the endgame"
            sent.append(request)
            live.add(request)
            started[request] = now
            peer = by_id[request.peer]
            counter += 1
            if peer.kind == "dead":
                heapq.heappush(events, (now + 0.001, counter, "unreachable", request))
            elif peer.kind != "staller":
                took = lengths[request.chunk] / peer.speed * rng.uniform(0.8, 1.5)
                outcome = "bad_hash" if peer.kind == "liar" else "ok"
                heapq.heappush(events, (now + took, counter, outcome, request))
        for cancelled in sched.take_cancels():
            live.discard(cancelled)
        sched.check_invariants()
        if sched.done:
            return sched, writes, sent
        deadline = sched.next_deadline()
        next_event = events[0][0] if events else None
        next_leave = min((t for k, t in leave.items() if k != "_gone"), default=None)
        candidates = [t for t in (deadline, next_event, next_leave) if t is not None]
        assert candidates, "stuck: nothing in flight and nothing to wait for"
        now = max(now, min(candidates))
        for peer_id, when in list(leave.items()):
            if peer_id != "_gone" and when <= now:
                del leave[peer_id]
                sched.remove_peer(peer_id)
                live = {r for r in live if r.peer != peer_id}
        for request in sched.tick(now):
            live.discard(request)
        while events and events[0][0] <= now:
            when, _, outcome, request = heapq.heappop(events)
            if request not in live:
                continue  # cut: cancelled, timed out, or its peer left
            live.discard(request)
            if outcome == "ok":
                if sched.chunk_done(request.peer, request.chunk, now, now - started[request]):
                    writes[request.chunk] = writes.get(request.chunk, 0) + 1
            else:
                if outcome == "bad_hash":
                    BAD_DELIVERED[request.peer] = BAD_DELIVERED.get(request.peer, 0) + 1
                sched.chunk_failed(request.peer, request.chunk, outcome, now)
    raise AssertionError("simulation did not finish")


BAD_DELIVERED: dict[str, int] = {}


swarms = st.builds(
    lambda n, lens, kinds, speeds, subsets: (
        [lens[i % len(lens)] for i in range(n)],
        [SimPeer("honest0", "honest", speeds[0], None)]
        + [
            SimPeer(
                f"p{i}",
                kind,
                speeds[(i + 1) % len(speeds)],
                None if subsets[i % len(subsets)] else set(range(0, n, 2)),
            )
            for i, kind in enumerate(kinds)
        ],
    ),
    st.integers(1, 80),
    st.lists(st.integers(1, 2_000_000), min_size=1, max_size=5),
    st.lists(st.sampled_from(["honest", "liar", "dead", "staller"]), max_size=5),
    st.lists(st.floats(1e5, 1e9), min_size=1, max_size=6),
    st.lists(st.booleans(), min_size=1, max_size=5),
)


@given(swarms, st.integers(0, 2**32))
@settings(max_examples=300)
def test_every_chunk_verified_exactly_once(
    swarm: tuple[list[int], list[SimPeer]], seed: int
) -> None:
    lengths, peers = swarm
    BAD_DELIVERED.clear()
    sched, writes, _sent = simulate(lengths, peers, seed)
    assert sched.done
    assert writes == {i: 1 for i in range(len(lengths))}
    for peer in peers:
        bad = BAD_DELIVERED.get(peer.peer_id, 0)
        assert bad <= 2  # two bad chunks: dropped, and never asked again (checked as sent)
        if bad == 2:
            assert peer.peer_id in sched.dropped


def test_dropped_peer_is_never_asked_again() -> None:
    lengths = [100_000] * 40
    peers = [SimPeer("good", "honest", 1e6, None), SimPeer("liar", "liar", 1e9, None)]
    sched, writes, sent = simulate(lengths, peers, seed=1)
    assert "liar" in sched.dropped
    asked = [i for i, r in enumerate(sent) if r.peer == "liar"]
    assert len(asked) <= 4  # its first window, then dropped after two bad chunks
    assert writes == {i: 1 for i in range(40)}


def test_peer_leaving_mid_download() -> None:
    lengths = [64_000] * 50
    peers = [SimPeer("a", "honest", 1e6, None), SimPeer("b", "honest", 1e6, None)]
    sched, writes, _ = simulate(lengths, peers, seed=3, leave_at={"b": 0.5})
    assert sched.done and writes == {i: 1 for i in range(50)}


def test_rarest_first_and_spreading() -> None:
    sched = Scheduler([10] * 4, rng=random.Random(0))
    sched.add_peer("all", lambda i: True)
    sched.add_peer("some", lambda i: i < 2)
    first = [r for r in sched.next_requests(0.0) if not r.endgame]
    # chunks 2 and 3 are held by one peer only: the complete peer is asked for those
    assert sorted(r.chunk for r in first if r.peer == "all") == [2, 3]
    assert sorted(r.chunk for r in first if r.peer == "some") == [0, 1]


def test_stall_is_cut_by_timeout_and_retried_elsewhere() -> None:
    lengths = [1000] * 20
    peers = [SimPeer("stall", "staller", 1e6, None), SimPeer("ok", "honest", 1e2, None)]
    sched, writes, _sent = simulate(lengths, peers, seed=5)
    assert sched.done and writes == {i: 1 for i in range(20)}
    assert sched.retries > 0 and sched.peers["stall"].benches > 0
    assert "stall" not in sched.dropped  # benched, not banned: a stall may be a passing thing


def test_endgame_duplicates_only_at_the_end() -> None:
    lengths = [1000] * 30
    peers = [SimPeer("fast", "honest", 1e6, None), SimPeer("slow", "honest", 1e3, None)]
    _, writes, sent = simulate(lengths, peers, seed=9)
    endgame = [r for r in sent if r.endgame]
    assert endgame, "the fast peer should duplicate the slow peer's last chunks"
    assert writes == {i: 1 for i in range(30)}


def test_downloaders_started_together_ask_for_different_chunks() -> None:
    firsts = []
    for seed in range(4):
        sched = Scheduler([1000] * 1024, rng=random.Random(seed))
        sched.add_peer("seeder", lambda i: True)
        sched.add_peer("partial", lambda i: i % 3 == 0)  # reshuffles buckets: order must hold
        firsts.append(set(r.chunk for r in sched.next_requests(0.0) if r.peer == "seeder"))
    for i, a in enumerate(firsts):
        for b in firsts[i + 1 :]:
            assert len(a & b) <= len(a) // 2, "downloaders would all fetch the same chunks"


class _CountedList(list[int]):
    """A list whose every read is a Python step (so python_steps sees C-level sums over it)."""

    def __getitem__(self, index: int) -> int:  # type: ignore[override]
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[int]:
        for index in range(len(self)):
            yield super().__getitem__(index)


def _steps_per_chunk(chunks: int) -> float:
    """Python steps per chunk of a whole download of `chunks` chunks from two peers."""
    lengths = _CountedList([4096] * chunks)
    sched = Scheduler(lengths, rng=random.Random(1), timeout=10.0)

    def run() -> None:
        sched.add_peer("a", lambda _i: True)
        sched.add_peer("b", lambda _i: True)
        now = 0.0
        while not sched.done:
            for request in sched.next_requests(now):
                now += 0.0001
                sched.chunk_done(request.peer, request.chunk, now, 0.001)
            sched.tick(now)
            sched.next_deadline()

    steps = python_steps(run)
    assert sched.done
    return steps / chunks


def test_scheduling_cost_per_chunk_does_not_grow_with_the_content() -> None:
    """Picking, completing and re-sizing windows cost the same per chunk for 1,000 chunks as
    for 50,000 (no sum over every chunk's length per completed chunk)."""
    small, big = _steps_per_chunk(1000), _steps_per_chunk(50_000)
    assert big <= small * 1.2, (small, big)


def test_small_chunks_get_a_wide_window() -> None:
    """Many small chunks (a folder of small files) are asked for many at a time; big chunks
    keep the usual window."""
    small = Scheduler([4096] * 5000, rng=random.Random(1))
    small.add_peer("a", lambda _i: True)
    big = Scheduler([1 << 20] * 500, rng=random.Random(1))
    big.add_peer("a", lambda _i: True)
    assert len(small.next_requests(0.0)) >= 64
    assert len(big.next_requests(0.0)) <= 16


def test_a_busy_peer_shrinks_its_window_and_one_always_busy_is_benched() -> None:
    """'busy' (a connection closed unanswered) halves the peer's window without counting as a
    failure; once the window is down to one request it counts, so a peer that turns every
    request away is still benched, and the chunks go to the other peer meanwhile."""
    sched = Scheduler([1000] * 64, rng=random.Random(1))
    sched.add_peer("busy", lambda i: True)
    sched.add_peer("other", lambda i: True)
    now = 0.0
    refused = 0
    while sched.peers["busy"].benched_until == 0.0:
        asked = [r for r in sched.next_requests(now) if r.peer == "busy"]
        if not asked:
            break
        for request in asked:
            sched.chunk_failed("busy", request.chunk, "busy", now)
            refused += 1
            if sched.peers["busy"].window > 1:
                assert sched.peers["busy"].failures == 0
        now += 0.1
    state = sched.peers["busy"]
    assert state.benched_until > now and "busy" not in sched.dropped
    assert refused > 3  # a burst of busy replies alone does not bench it
    assert all(r.peer == "other" for r in sched.next_requests(now))
    sched.check_invariants()
