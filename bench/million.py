"""Benchmark: the memory of a peer holding a content of a million files.

A tree of FILES one-byte files in 1,000 folders (hard links to a few files, so it takes inodes
of directory entries only) is shared with `swarmshare share`; then a real `swarmshare run`
process on 127.0.0.2 serves it. A client fetches its manifest and a few chunks of files far
apart, then the peak RSS of each process is read (the run's from /proc/PID/status VmHWM, the
share's from its rusage). With --get, a standalone `swarmshare get` on 127.0.0.3 fetches the
whole tree too (it writes FILES files: minutes).

Usage: python bench/million.py [FILES] [--get]   (default 1000000; loopback only)
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import ensure_bytecode
from swarmshare.app.loopback import LoopbackSwarm

FOLDERS = 1000
LINKS_PER_INODE = 60_000  # under ext4's 65,000 links per inode


def make_tree(root: Path, files: int) -> None:
    """FILES one-byte files, hard links to a few real ones."""
    root.mkdir(parents=True)
    for folder in range(FOLDERS):
        (root / f"d{folder:03d}").mkdir()
    origin = root.parent / "origin"
    origin.mkdir()
    for index in range(files):
        if index % LINKS_PER_INODE == 0:
            target = origin / f"o{index // LINKS_PER_INODE}"
            target.write_bytes(bytes([index // LINKS_PER_INODE % 256]))
        os.link(target, root / f"d{index % FOLDERS:03d}" / f"f{index:07d}")


def timed_rss(args: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stdout of one command (its own rusage, via wait4)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{args[3:5]} failed: {err.read().decode()[-2000:]}")
        return wall, usage.ru_maxrss, out.read().decode()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def fetch(address: str, port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection(address, port, timeout=600)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise SystemExit(f"GET {path}: {reply.status} {body[:200]!r}")
        return body
    finally:
        conn.close()


def main() -> None:
    ensure_bytecode()
    files = next((int(a) for a in sys.argv[1:] if a.isdigit()), 1_000_000)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="swarmshare-million-", dir="/var/tmp") as tmp:
        root = Path(tmp)
        tree = root / "tree"
        start = time.perf_counter()
        make_tree(tree, files)
        print(f"{files:,} files made in {time.perf_counter() - start:.1f} s")
        py = [sys.executable, "-m", "swarmshare", "--home"]
        home = root / "seed"
        wall, rss, _ = timed_rss([*py, str(home), "share", str(tree)])
        print(f"share:        {wall:6.1f} s, peak RSS {rss / 1024:7.0f} MiB")
        wall, rss, _ = timed_rss([*py, str(home), "share", str(tree)])
        print(f"share again:  {wall:6.1f} s, peak RSS {rss / 1024:7.0f} MiB")
        with LoopbackSwarm(root) as lab:
            start = time.perf_counter()
            peer = lab.start(2, home=home)
            assert peer.proc is not None
            print(
                f"run, ready:   {time.perf_counter() - start:6.1f} s,"
                f" peak RSS {peak_rss_kib(peer.proc.pid) / 1024:7.0f} MiB"
            )
            status = peer.control().get("status")
            port = int(status["port"])
            catalog = json.loads(fetch(peer.address, port, "/v1/catalog"))
            item = catalog["items"][0]
            cid = item["id"]
            start = time.perf_counter()
            manifest = fetch(peer.address, port, f"/v1/content/{cid}/manifest")
            print(
                f"manifest:     {time.perf_counter() - start:6.1f} s, {len(manifest) / 1e6:.0f} MB"
            )
            chunks = item["chunks"]
            for index in (0, chunks // 3, chunks // 2, chunks - 1):
                fetch(peer.address, port, f"/v1/content/{cid}/chunk/{index}")
            print(f"run, served:  peak RSS {peak_rss_kib(peer.proc.pid) / 1024:7.0f} MiB")
            if "--get" in sys.argv:
                out = root / "out"
                out.mkdir()
                args = [*py, str(root / "dl"), "get", cid, "-o", str(out), "--json"]
                args += ["--broadcast", "127.255.255.255", "--bind", "127.0.0.3"]
                args += ["--discovery-port", str(lab.discovery_port), "--wait", "30"]
                wall, rss, _ = timed_rss(args)
                print(f"get:          {wall:6.1f} s, peak RSS {rss / 1024:7.0f} MiB")
                shutil.rmtree(out)
            print(f"run, after:   peak RSS {peak_rss_kib(peer.proc.pid) / 1024:7.0f} MiB")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
