"""Benchmark: the download scheduler's cost per chunk at 10,000 / 100,000 / 1,000,000 chunks.

Three peers that hold everything; every chunk is asked for and completes, a window at a time,
as in a folder of that many small files. Prints the seconds per run and the growth (ten times
the chunks should take about ten times as long: a cost per chunk that grows with the content
would show here first).

Usage: python bench/scheduler.py
"""

from __future__ import annotations

import time

from swarmshare.core.scheduler import Scheduler


def run(chunks: int) -> float:
    sched = Scheduler([1024] * chunks, timeout=60.0)
    for peer in ("a", "b", "c"):
        sched.add_peer(peer, lambda _index: True)
    start = time.perf_counter()
    now = 0.0
    while not sched.done:
        for request in sched.next_requests(now):
            sched.chunk_done(request.peer, request.chunk, now, 0.001)
        now += 0.001
    return time.perf_counter() - start


def main() -> None:
    rows = {
        n: min(run(n) for _ in range(2 if n < 1_000_000 else 1))
        for n in (10_000, 100_000, 1_000_000)
    }
    for n, seconds in rows.items():
        print(f"{n:>9,} chunks: {seconds:6.2f} s  ({seconds / n * 1e6:5.1f} us a chunk)")
    print(
        f"growth: 10,000 -> 100,000: {rows[100_000] / rows[10_000]:.1f}x;"
        f" 100,000 -> 1,000,000: {rows[1_000_000] / rows[100_000]:.1f}x (linear: 10x)"
    )


if __name__ == "__main__":
    main()
