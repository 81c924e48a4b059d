"""Benchmark: folders of many small files.

A tree of FILES files of SIZE bytes in 100 subfolders is shared by 3 loopback seeders
(127.0.0.2-4) and fetched by a 4th (127.0.0.5) with a standalone `swarmshare get`; in the same
run the same tree goes through tar over a loopback TCP socket, then `sync`. `swarmshare share`
of the tree is timed against `sha256sum` over the same files, and a second share of the
unchanged tree is timed too. Prints the times and the ratios against the goals (get at most 3x
the tar pipe, share at most 2x sha256sum).

The tar pipe and the get take turns, and no tree is deleted before the end: ext4 passes over
inodes freed in the last half minute when it allocates new ones, so whichever ran right after
10,000 files were deleted paid up to ten times the kernel time for creating its own.

Usage: python bench/folder.py [FILES [SIZE_BYTES]]   (default 10000 4096; loopback only)
       python bench/folder.py --scale                 (1,000 / 10,000 / 100,000 x 1 KiB and
                                                        10,000 x 4 KiB: the growth ratios)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bytecode import ensure_bytecode
from swarmshare.app.loopback import LoopbackSwarm

SEEDERS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
DOWNLOADER = "127.0.0.5"
FOLDERS = 100


def swarmshare(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "swarmshare", "--home", str(home), *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"swarmshare {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return done


def make_tree(root: Path, files: int, size: int) -> None:
    for index in range(files):
        folder = root / f"d{index % FOLDERS:03d}"
        if index < FOLDERS:
            folder.mkdir(parents=True)
        data = index.to_bytes(8, "little") * (size // 8) + b"x" * (size % 8)
        (folder / f"f{index:07d}.bin").write_bytes(data)


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def tar_pipe(src: Path, dest: Path) -> float:
    """tar of `src` through a loopback TCP socket into `dest`, then sync: wall seconds."""
    dest.mkdir()
    listener = socket.socket()
    listener.bind((DOWNLOADER, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    start = time.perf_counter()

    def receive() -> None:
        conn, _ = listener.accept()
        with conn:
            untar = subprocess.Popen(["tar", "-x", "-C", str(dest)], stdin=subprocess.PIPE)
            assert untar.stdin is not None
            while data := conn.recv(1 << 20):
                untar.stdin.write(data)
            untar.stdin.close()
            untar.wait()

    receiver = threading.Thread(target=receive)
    receiver.start()
    with socket.create_connection((DOWNLOADER, port), source_address=(SEEDERS[0], 0)) as out:
        tar = subprocess.Popen(
            ["tar", "-c", "-C", str(src.parent), src.name], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        while data := tar.stdout.read(1 << 20):
            out.sendall(data)
        tar.wait()
    receiver.join()
    subprocess.run(["sync"], check=True)
    listener.close()
    return time.perf_counter() - start


def sha256sum(src: Path) -> float:
    paths = sorted(str(p) for p in src.rglob("*") if p.is_file())
    start = time.perf_counter()
    for first in range(0, len(paths), 5000):
        subprocess.run(["sha256sum", *paths[first : first + 5000]], check=True, capture_output=True)
    return time.perf_counter() - start


def one(files: int, size: int, rounds: int = 2) -> dict[str, float]:
    """Times for one tree: share, share again, sha256sum, get, tar pipe (best of `rounds`)."""
    with tempfile.TemporaryDirectory(prefix="swarmshare-bench-") as tmp:
        root = Path(tmp)
        src = root / "tree"
        make_tree(src, files, size)
        subprocess.run(["sync"], check=True)
        sha = min(sha256sum(src) for _ in range(rounds))
        share = again = 1e9
        for attempt in range(rounds):
            home = root / f"share{attempt}"
            share = min(share, timed(swarmshare, home, "share", str(src)))
            again = min(again, timed(swarmshare, home, "share", str(src)))
        with LoopbackSwarm(root) as lab:
            for index, address in enumerate(SEEDERS):
                home = root / f"seed{index}"
                if index == 0:
                    shutil.copytree(root / "share0", home)
                else:
                    swarmshare(home, "share", str(src))
                lab.start(int(address.rsplit(".", 1)[1]), home=home, wait=False)
            lab.wait_ready()
            get = transfer = tar = 1e9
            for attempt in range(rounds):
                tar = min(tar, tar_pipe(src, root / f"tar{attempt}"))
                out = root / f"out{attempt}"
                out.mkdir()
                start = time.perf_counter()
                summary = swarmshare(
                    root / f"dl{attempt}",
                    "get",
                    "tree",
                    "-o",
                    str(out),
                    "--json",
                    "--broadcast",
                    "127.255.255.255",
                    "--discovery-port",
                    str(lab.discovery_port),
                    "--bind",
                    DOWNLOADER,
                    "--wait",
                    "10",
                )
                wall = time.perf_counter() - start
                if wall < get:
                    get, transfer = wall, float(json.loads(summary.stdout)["seconds"])
                check = subprocess.run(
                    ["diff", "-r", "-q", str(src), str(out / "tree")], capture_output=True
                )
                if check.returncode != 0:
                    raise SystemExit(f"the fetched tree differs: {check.stdout[:300]!r}")
    return {
        "sha256sum": sha,
        "share": share,
        "share_again": again,
        "tar": tar,
        "get": get,
        "transfer": transfer,
    }


def show(files: int, size: int, t: dict[str, float]) -> None:
    mb = files * size / 1e6
    print(f"{files:,} files x {size:,} B in {FOLDERS} folders ({mb:.0f} MB), page cache warm:")
    print(f"  sha256sum:              {t['sha256sum']:.2f} s")
    print(f"  swarmshare share:       {t['share']:.2f} s   ratio {t['share'] / t['sha256sum']:.2f}")
    print(f"  share again, unchanged: {t['share_again']:.2f} s")
    print(f"  tar | tcp | untar, sync:{t['tar']:.2f} s")
    print(
        f"  swarmshare get:         {t['get']:.2f} s   ratio {t['get'] / t['tar']:.2f}"
        f"   ({files / t['get']:.0f} files/s; transfer alone {t['transfer']:.2f} s)"
    )


def main() -> None:
    ensure_bytecode()
    uptime = os.getloadavg()
    print(f"load average before: {uptime[0]:.2f} {uptime[1]:.2f} {uptime[2]:.2f}")
    if sys.argv[1:2] == ["--scale"]:
        rows = {n: one(n, 1024, rounds=1 if n >= 100_000 else 2) for n in (1000, 10_000, 100_000)}
        for n, t in rows.items():
            show(n, 1024, t)
        for key in ("share", "get"):
            print(
                f"growth of {key}: 10x files -> {rows[10_000][key] / rows[1000][key]:.1f}x time,"
                f" 100x files -> {rows[100_000][key] / rows[1000][key]:.1f}x;"
                f" 10,000 -> 100,000: {rows[100_000][key] / rows[10_000][key]:.1f}x (goal <= 12)"
            )
    else:
        files = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
        size = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
        t = one(files, size)
        show(files, size, t)
        print("goals: get <= 3x the tar pipe, share <= 2x sha256sum")
    uptime = os.getloadavg()
    print(f"load average after: {uptime[0]:.2f} {uptime[1]:.2f} {uptime[2]:.2f}")


if __name__ == "__main__":
    main()
