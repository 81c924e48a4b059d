"""Benchmark: `swarmshare share` of a large file against `sha256sum` of the same file.

Prints wall times, MB/s, the ratio share/sha256sum (goal <= 1.0), and the peak RSS of the share.
Usage: python bench/share.py [SIZE_MIB]   (default 1024)
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import ensure_bytecode


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def main() -> None:
    ensure_bytecode()
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    with tempfile.TemporaryDirectory(prefix="swarmshare-bench-") as tmp:
        path = Path(tmp) / "big.bin"
        with open(path, "wb") as handle:
            block = os.urandom(1 << 20)
            for _ in range(size_mib):
                handle.write(block)
        subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)  # warm cache
        sha_wall, _ = timed(["sha256sum", str(path)])
        runs = []
        for attempt in range(2):
            home = Path(tmp) / f"home{attempt}"
            wall, rss = timed(
                [sys.executable, "-m", "swarmshare", "--home", str(home), "share", str(path)]
            )
            runs.append((wall, rss))
            shutil.rmtree(home)
        share_wall = min(w for w, _ in runs)
        rss = max(r for _, r in runs)
        mb = size_mib * 1.048576
        print(f"file:            {size_mib} MiB (page cache warm)")
        print(f"sha256sum:       {sha_wall:.2f} s  {mb / sha_wall:.0f} MB/s")
        print(f"swarmshare share:{share_wall:.2f} s  {mb / share_wall:.0f} MB/s  (best of 2)")
        print(f"ratio share/sha256sum: {share_wall / sha_wall:.2f}  (goal <= 1.0)")
        print(f"peak RSS of share: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
