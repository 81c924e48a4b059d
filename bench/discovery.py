"""Benchmark: discovery latency. Share on one peer -> visible in the network list of 10 others.

Eleven real `swarmshare run` processes on 127.0.0.2..12 (loopback broadcast, a free discovery
port, the default 30 s interval, so only change announcements can explain what is measured).
Each trial shares a new file through one peer's control API and polls the other ten's
/api/network until all list it. Prints median and worst of 10 trials (goal: median < 300 ms).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from swarmshare.app.loopback import LoopbackPeer, LoopbackSwarm

PEERS = 11
TRIALS = 10


def names(peer: LoopbackPeer) -> set[str]:
    """The names in a peer's network list."""
    items: list[dict[str, Any]] = peer.control().get("network")
    return {item["name"] for item in items}


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="swarmshare-bench-") as tmp,
        LoopbackSwarm(Path(tmp)) as lab,
    ):
        root = Path(tmp)
        for i in range(2, 2 + PEERS):
            lab.start(i, wait=False)
        lab.wait_ready()
        peers = lab.peers
        while not all(len(p.control().get("peers")) == PEERS - 1 for p in peers):
            time.sleep(0.05)
        source, others = peers[0], peers[1:]
        worst_per_trial = []
        per_peer = []
        for trial in range(TRIALS):
            path = root / f"trial{trial}.bin"
            path.write_bytes(os.urandom(100_000))
            start = time.perf_counter()
            source.control().post("share", {"paths": [str(path)]})
            pending = set(range(len(others)))
            while pending:
                for k in list(pending):
                    if path.name in names(others[k]):
                        pending.discard(k)
                        per_peer.append(time.perf_counter() - start)
            worst_per_trial.append(time.perf_counter() - start)
        print(f"peers: 1 sharing + {len(others)} watching, {TRIALS} trials, interval 30 s")
        print(
            f"all 10 see it: median {statistics.median(worst_per_trial) * 1000:.0f} ms,"
            f" worst {max(worst_per_trial) * 1000:.0f} ms"
        )
        print(
            f"any one peer:  median {statistics.median(per_peer) * 1000:.0f} ms,"
            f" worst {max(per_peer) * 1000:.0f} ms  (goal: median < 300 ms; seed: up to 60 s)"
        )


if __name__ == "__main__":
    main()
