"""The download scheduler: which chunk to ask which peer for, and when to give up on a request.

How it works. The scheduler is fed events -- a peer appears (with the chunks it holds), a
chunk arrived and verified, a request failed (and why), time passed -- and answers with
decisions: the requests to send now, and the requests to cancel. It owns no sockets and reads
no clock: every call takes `now`, and `next_deadline()` says when to call `tick()` again.

Rules:
- Rarest first: a peer is asked for the missing chunk that the fewest live peers hold (ties
  broken at random, so that downloaders started together fetch different chunks and can feed
  each other).
- Each peer has a window of requests in flight. It follows the peer's measured rate (enough
  bytes in flight to keep it busy for WINDOW_SECONDS), within MIN/MAX_WINDOW_REQUESTS and the
  per-peer and total byte limits; a failure halves it. A peer too busy to answer (it closed
  a new connection unanswered, or said so) halves it too, and that counts as a failure only
  once the window is down to MIN_WINDOW_REQUESTS: a peer that turns everything away still ends
  up benched.
- A request that fails (timeout, unreachable, short read, error status) or brings a chunk that
  does not hash to its manifest entry is retried on another peer where one holds the chunk.
  A peer that sent MAX_BAD_CHUNKS_PER_PEER bad chunks is dropped and never asked again. A peer
  with MAX_PEER_FAILURES failures in a row is benched for a while (doubling each time, up to
  MAX_BENCH_SECONDS): a slow or briefly unreachable peer may be the only one holding a chunk,
  so it is asked again later rather than given up for good. A timeout also halves the peer's
  rate estimate, so its next deadlines are longer.
- A request's deadline and the rate sample its chunk gives both run from when it was decided,
  time spent waiting for a connection to the peer included (the client bounds connections per
  peer for all downloads together): that wait is queueing for the same peer's bandwidth, so the
  rate measured is this download's share of it, and a deadline of a few times its queue at that
  rate stays consistent with the latency actually seen (its bytes in flight / its rate).
- A chunk is requested from one peer at a time, except in the endgame (every missing chunk
  already requested, at most ENDGAME_CHUNKS missing): then idle peers duplicate outstanding
  requests, and the first verified copy cancels the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from swarmshare.limits import (
    BATCH_CHUNK_BYTES,
    CHUNK_TIMEOUT_INITIAL_SECONDS,
    CHUNK_TIMEOUT_MIN_SECONDS,
    ENDGAME_CHUNKS,
    INITIAL_WINDOW_BYTES,
    INITIAL_WINDOW_REQUESTS,
    MAX_BAD_CHUNKS_PER_PEER,
    MAX_INFLIGHT_BYTES_PER_PEER,
    MAX_INFLIGHT_BYTES_TOTAL,
    MAX_PEER_FAILURES,
    MAX_WINDOW_CHUNKS,
    MAX_WINDOW_REQUESTS,
    MIN_WINDOW_REQUESTS,
    WINDOW_CAP_BYTES,
)

WINDOW_SECONDS = 0.5
RATE_SMOOTHING = 0.3
FIRST_BENCH_SECONDS = 1.0
MAX_BENCH_SECONDS = 30.0
Holds = Callable[[int], bool]


@dataclass(frozen=True, slots=True)
class Request:
    """Ask `peer` for chunk `chunk`; give up at `deadline`."""

    peer: str
    chunk: int
    deadline: float
    endgame: bool = False


@dataclass
class PeerState:
    """What the scheduler knows of one source peer."""

    peer_id: str
    holds: Holds
    window: float = INITIAL_WINDOW_REQUESTS
    rate: float = 0.0
    inflight: dict[int, Request] = field(default_factory=dict)
    inflight_bytes: int = 0
    failures: int = 0
    bad_chunks: int = 0
    chunks_done: int = 0
    bytes_done: int = 0
    benched_until: float = 0.0
    benches: int = 0


class Scheduler:
    """Decides the requests of one download."""

    def __init__(
        self,
        lengths: list[int],
        have: Iterable[int] = (),
        *,
        rng: random.Random | None = None,
        timeout: float | None = None,
    ) -> None:
        self.lengths = lengths
        self._average = sum(lengths) / max(1, len(lengths))
        # Small chunks (many small files) travel in batches: a window of many of them costs
        # a few requests, so it is bounded in bytes, between the request counts.
        self._max_window = MAX_WINDOW_REQUESTS
        self._initial_window = INITIAL_WINDOW_REQUESTS
        if self._average <= BATCH_CHUNK_BYTES:
            per_chunk = max(1.0, self._average)
            self._max_window = max(
                MAX_WINDOW_REQUESTS, min(MAX_WINDOW_CHUNKS, int(WINDOW_CAP_BYTES / per_chunk))
            )
            initial = int(INITIAL_WINDOW_BYTES / per_chunk)
            self._initial_window = max(INITIAL_WINDOW_REQUESTS, min(self._max_window, initial))
        self.have = [False] * len(lengths)
        for index in have:
            self.have[index] = True
        self.missing = sum(1 for h in self.have if not h)
        self.peers: dict[str, PeerState] = {}
        self.dropped: set[str] = set()
        self.retries = 0
        self._rng = rng or random.Random()
        self._fixed_timeout = timeout
        self._inflight: dict[int, set[str]] = {}
        self._inflight_bytes = 0
        self._cancels: list[Request] = []
        self._last_failed_on: dict[int, str] = {}
        self._order = [i for i in range(len(lengths)) if not self.have[i]]
        self._rng.shuffle(self._order)
        self._availability = [0] * len(lengths)
        # Chunks missing and not requested, bucketed by availability (insertion order is the
        # random tie-break; picks take the newest first), so that a pick is O(1) when a peer
        # holds everything (see `_take_out`).
        self._buckets: dict[int, dict[int, None]] = {0: dict.fromkeys(self._order)}
        self._candidate: set[int] = set(self._order)

    # ---- events ----------------------------------------------------------------------------

    def add_peer(self, peer_id: str, holds: Holds) -> None:
        """A peer can serve the chunks for which `holds(index)` is true (or updated its set)."""
        if peer_id in self.dropped:
            return
        state = self.peers.get(peer_id)
        if state is not None:
            self._count(state.holds, -1)
            state.holds = holds
        else:
            state = self.peers[peer_id] = PeerState(peer_id, holds, self._initial_window)
        self._count(holds, +1)

    def remove_peer(self, peer_id: str) -> None:
        """A peer left the network: cancel what it was asked for."""
        state = self.peers.pop(peer_id, None)
        if state is None:
            return
        self._count(state.holds, -1)
        for request in list(state.inflight.values()):
            self._forget(request)
            self._cancels.append(request)

    def chunk_done(self, peer_id: str, chunk: int, now: float, seconds: float) -> bool:
        """A chunk from `peer_id` verified. True if it is new (write it), False if a duplicate."""
        state = self.peers.get(peer_id)
        request = state.inflight.get(chunk) if state else None
        if request is not None:
            self._forget(request)
        if state is not None:
            length = self.lengths[chunk]
            state.failures = 0
            state.chunks_done += 1
            state.bytes_done += length
            sample = length / max(seconds, 1e-6) * max(1, len(state.inflight) + 1)
            state.rate = (
                sample
                if state.rate == 0
                else ((1 - RATE_SMOOTHING) * state.rate + RATE_SMOOTHING * sample)
            )
            self._resize(state)
        if self.have[chunk]:
            return False
        self.have[chunk] = True
        self.missing -= 1
        self._uncandidate(chunk)
        for other in list(self._inflight.get(chunk, ())):  # endgame duplicates
            duplicate = self.peers[other].inflight[chunk]
            self._forget(duplicate)
            self._cancels.append(duplicate)
        return True

    def chunk_local(self, chunk: int) -> None:
        """A chunk was found in a local file and need not be fetched."""
        if not self.have[chunk]:
            self.have[chunk] = True
            self.missing -= 1
            self._uncandidate(chunk)

    def chunk_failed(self, peer_id: str, chunk: int, reason: str, now: float) -> None:
        """A request failed: `reason` is 'bad_hash', 'timeout', 'unreachable', 'short', 'busy',
        ..."""
        state = self.peers.get(peer_id)
        if state is None:
            return
        request = state.inflight.get(chunk)
        if request is not None:
            self._forget(request)
        if not self.have[chunk]:
            self.retries += 1
            self._last_failed_on[chunk] = peer_id
        if reason == "busy" and state.window > MIN_WINDOW_REQUESTS:
            state.window = max(MIN_WINDOW_REQUESTS, state.window / 2)
            return
        if reason == "bad_hash":
            state.bad_chunks += 1
            if state.bad_chunks >= MAX_BAD_CHUNKS_PER_PEER:
                self.drop_peer(peer_id)
                return
        else:
            state.failures += 1
            if reason == "timeout":
                state.rate /= 2
            if state.failures >= MAX_PEER_FAILURES:
                self._bench(state, now)
                return
        state.window = max(MIN_WINDOW_REQUESTS, state.window / 2)

    def drop_peer(self, peer_id: str) -> None:
        """Never ask this peer again."""
        self.dropped.add(peer_id)
        self.remove_peer(peer_id)

    def tick(self, now: float) -> list[Request]:
        """Requests whose deadline passed: treated as failed, and returned so they are cut."""
        expired = [r for s in self.peers.values() for r in s.inflight.values() if r.deadline <= now]
        for request in expired:
            self.chunk_failed(request.peer, request.chunk, "timeout", now)
        return expired

    # ---- decisions -------------------------------------------------------------------------

    def next_requests(self, now: float) -> list[Request]:
        """The requests to send now, filling every peer's window."""
        out: list[Request] = []
        if self.missing == 0:
            return out
        for state in self.peers.values():
            if 0 < state.benched_until <= now:
                state.benched_until = 0.0
        peers = sorted(self.peers.values(), key=lambda s: -s.rate)
        progress = True
        while progress:
            progress = False
            for state in peers:
                if len(state.inflight) >= int(state.window) or state.benched_until > now:
                    continue
                chunk = self._pick(state)
                endgame = False
                if chunk is None:
                    chunk = self._pick_endgame(state)
                    endgame = chunk is not None
                if chunk is None:
                    continue
                length = self.lengths[chunk]
                if self._inflight_bytes + length > MAX_INFLIGHT_BYTES_TOTAL and self._inflight:
                    return out
                if state.inflight_bytes + length > MAX_INFLIGHT_BYTES_PER_PEER and state.inflight:
                    continue
                request = Request(state.peer_id, chunk, now + self._timeout(state, length), endgame)
                state.inflight[chunk] = request
                state.inflight_bytes += length
                self._inflight.setdefault(chunk, set()).add(state.peer_id)
                self._uncandidate(chunk)
                self._inflight_bytes += length
                out.append(request)
                progress = True
        return out

    def take_cancels(self) -> list[Request]:
        """Requests to cut (duplicates that lost the endgame race, peers that left)."""
        cancels, self._cancels = self._cancels, []
        return cancels

    def next_deadline(self) -> float | None:
        """When `tick` (or `next_requests`) should next be called; None: wait for events."""
        times = [r.deadline for s in self.peers.values() for r in s.inflight.values()]
        times += [s.benched_until for s in self.peers.values() if s.benched_until > 0]
        return min(times, default=None)

    @property
    def done(self) -> bool:
        """Whether every chunk is held."""
        return self.missing == 0

    @property
    def inflight_count(self) -> int:
        """Requests outstanding."""
        return sum(len(s.inflight) for s in self.peers.values())

    def unavailable(self) -> list[int]:
        """Missing chunks that no live peer holds."""
        return [i for i in self._order if not self.have[i] and self._availability[i] == 0]

    def check_invariants(self) -> None:
        """Assert the bookkeeping is consistent (for tests)."""
        for chunk in self._order:
            expected = not self.have[chunk] and chunk not in self._inflight
            assert (chunk in self._candidate) == expected, chunk
            if expected:
                assert chunk in self._buckets[self._availability[chunk]], chunk
        assert sum(len(b) for b in self._buckets.values()) == len(self._candidate)
        for state in self.peers.values():
            assert state.inflight_bytes == sum(self.lengths[c] for c in state.inflight)

    # ---- internals -------------------------------------------------------------------------

    def _pick(self, state: PeerState) -> int | None:
        fallback: int | None = None
        for avail in sorted(self._buckets):
            if avail == 0:
                continue  # nobody holds these (this peer included)
            for chunk in reversed(self._buckets[avail]):
                if not state.holds(chunk):
                    continue
                if self._last_failed_on.get(chunk) == state.peer_id:
                    fallback = chunk if fallback is None else fallback
                    continue
                return chunk
        if fallback is not None:
            # Only retry on the peer that just failed it when no other live peer holds it.
            others = any(
                p.holds(fallback) for p in self.peers.values() if p.peer_id != state.peer_id
            )
            return None if others else fallback
        return None

    def _pick_endgame(self, state: PeerState) -> int | None:
        if self.missing > ENDGAME_CHUNKS:
            return None
        if self._candidate:
            return None  # chunks still unrequested: not the endgame yet
        choices = [
            c
            for c, holders in self._inflight.items()
            if state.peer_id not in holders and state.holds(c) and not self.have[c]
        ]
        if not choices:
            return None
        return min(choices, key=lambda c: (len(self._inflight[c]), c))

    def _bench(self, state: PeerState, now: float) -> None:
        """Rest a failing peer: cut what it was asked for, ask again after a backoff."""
        for request in list(state.inflight.values()):
            self._forget(request)
            self._cancels.append(request)
        state.benches += 1
        pause = min(MAX_BENCH_SECONDS, FIRST_BENCH_SECONDS * 2 ** (state.benches - 1))
        state.benched_until = now + pause
        state.failures = 0
        state.window = MIN_WINDOW_REQUESTS

    def _forget(self, request: Request) -> None:
        state = self.peers.get(request.peer)
        if state is not None and state.inflight.get(request.chunk) == request:
            del state.inflight[request.chunk]
            state.inflight_bytes -= self.lengths[request.chunk]
        holders = self._inflight.get(request.chunk)
        if holders is not None:
            holders.discard(request.peer)
            if not holders:
                del self._inflight[request.chunk]
        self._inflight_bytes -= self.lengths[request.chunk]
        chunk = request.chunk
        if not self.have[chunk] and chunk not in self._inflight and chunk not in self._candidate:
            self._candidate.add(chunk)
            self._buckets.setdefault(self._availability[chunk], {})[chunk] = None

    def _resize(self, state: PeerState) -> None:
        if state.rate <= 0:
            return
        want = state.rate * WINDOW_SECONDS / max(1.0, self._average)
        state.window = max(MIN_WINDOW_REQUESTS, min(self._max_window, max(want, 2.0)))

    def _timeout(self, state: PeerState, length: int) -> float:
        if self._fixed_timeout is not None:
            return self._fixed_timeout
        if state.rate <= 0:
            return CHUNK_TIMEOUT_INITIAL_SECONDS
        queued = state.inflight_bytes + length
        return max(CHUNK_TIMEOUT_MIN_SECONDS, 8 * queued / state.rate)

    def _count(self, holds: Holds, delta: int) -> None:
        # In this download's own random order: chunks moved between buckets keep it, so that
        # downloaders started together ask for different chunks first.
        for chunk in self._order:
            if holds(chunk):
                old = self._availability[chunk]
                self._availability[chunk] = old + delta
                if chunk in self._candidate:
                    self._take_out(old, chunk)
                    self._buckets.setdefault(old + delta, {})[chunk] = None

    def _uncandidate(self, chunk: int) -> None:
        if chunk in self._candidate:
            self._candidate.discard(chunk)
            self._take_out(self._availability[chunk], chunk)

    def _take_out(self, avail: int, chunk: int) -> None:
        """Remove `chunk` from its availability bucket.

        Picks walk a bucket from its newest key back (`_pick`), and the newest key leaves by
        `popitem`: a dict walked from the front steps over the slot of every key deleted before
        its first live one, so picking from the front made each pick cost up to a step per chunk
        already picked (quadratic: 3 s of a 100,000-file get). From the back, and with the last
        key popped, each pick is O(1)."""
        bucket = self._buckets[avail]
        if next(reversed(bucket)) == chunk:
            bucket.popitem()
        else:
            del bucket[chunk]
        if not bucket:
            del self._buckets[avail]
