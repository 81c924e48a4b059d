"""Benchmark: what verifying a chunk by its BEP 52 merkle root costs against one flat SHA-256.

Prints, for 1 MiB pieces (a 1 GiB file's chunks: 64 leaves of 16 KiB): the time of one flat
hashlib.sha256 of 1 MiB, of `merkle.data_root` over the same 1 MiB, and of its parts (the 64
leaf hashes, the 63 internal-node hashes); then the CPU seconds of verifying 1 GiB of such
pieces in 1, 2 and 6 worker threads at once (a download verifies in worker threads), flat and
merkle. hashlib lets go of the GIL for each 16 KiB leaf, so threads hashing at once hand the GIL
to each other 64 times per MiB instead of once.

Usage: python bench/merkle.py   (no network)
"""

from __future__ import annotations

import hashlib
import os
import time
import timeit
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from swarmshare.core import merkle

PIECE_BYTES = 1 << 20
LEAVES = PIECE_BYTES // merkle.BLOCK_BYTES
CALLS = 300
PIECES = 1024


def per_call(fn: Callable[[], object]) -> float:
    return min(timeit.repeat(fn, number=CALLS, repeat=7)) / CALLS


def threaded_cpu(fn: Callable[[int], object], workers: int) -> float:
    start = time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, range(PIECES)))
    return time.process_time() - start


def main() -> None:
    data = os.urandom(PIECE_BYTES)
    leaves = merkle.leaf_hashes(data)
    flat = per_call(lambda: hashlib.sha256(data).digest())
    tree = per_call(lambda: merkle.data_root(data, LEAVES))
    leaf = per_call(lambda: merkle.leaf_hashes(data))
    inner = per_call(lambda: merkle.root(list(leaves), LEAVES))
    print(f"1 MiB piece: flat SHA-256 {flat * 1e6:.0f} us, merkle root {tree * 1e6:.0f} us")
    print(
        f"  ({tree / flat:.3f} x flat; leaves {leaf * 1e6:.0f} us, internal nodes"
        f" {inner * 1e6:.1f} us; Python overhead {(tree - flat) * 1e6 * 1024 / 1e3:.0f} ms/GiB)"
    )
    for workers in (1, 2, 6):
        flat_cpu = threaded_cpu(lambda _: hashlib.sha256(data).digest(), workers)
        tree_cpu = threaded_cpu(lambda _: merkle.data_root(data, LEAVES), workers)
        print(
            f"1 GiB in {workers} thread(s): CPU flat {flat_cpu:.2f} s, merkle {tree_cpu:.2f} s"
            f" (+{tree_cpu - flat_cpu:.2f} s)"
        )


if __name__ == "__main__":
    main()
