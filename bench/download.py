"""Benchmark: a 1 GiB file on 3 seeders (127.0.0.2-4), downloaded by a 4th peer (127.0.0.5).

Prints, for `swarmshare get` (standalone, so its own CPU and memory are measured): wall time,
MB/s, CPU seconds and peak RSS; for aria2c fetching the same file from the 3 peers' plain
`/file` URLs at once (it verifies nothing): wall time and MB/s, best of a few split settings;
and one core's hashlib SHA-256 rate. Then the ratios against the goals: swarmshare at least as
fast as aria2c, and at least 0.6 x one core's SHA-256 rate. Also: the seeders' CPU during the
swarmshare run (how busy the whole machine was, and the shortest time that CPU work allows on
this machine's cores, where the seeders and the downloader share them), and what writing the
file through the page cache costs here by itself (aria2c may pay it; swarmshare writes by
direct I/O).

With --secret, the same run then restarts the seeders as a private swarm (every transfer TLS,
each peer's certificate pinned) and times the same get there: the ratio private/open is printed
against its goal (at least 0.5).

Usage: python bench/download.py [SIZE_MIB] [--secret]   (default 1024; loopback only)
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import ensure_bytecode
from swarmshare.app.loopback import LoopbackPeer, LoopbackSwarm

SEEDERS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
DOWNLOADER = "127.0.0.5"
ROUNDS = 3
SECRET = "bench private swarm secret"
ARIA_SETTINGS = [["-x", "16", "-s", "16", "-k", "1M"], ["-x", "4", "-s", "12", "-k", "4M"]]


def swarmshare(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarmshare", "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=True,
    )


def sha256_rate() -> float:
    data = os.urandom(1 << 20)
    start = time.perf_counter()
    for _ in range(512):
        hashlib.sha256(data).digest()
    return 512 * (1 << 20) / (time.perf_counter() - start)


def ensure_aria2c() -> str | None:
    found = shutil.which("aria2c")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "aria2"], capture_output=True)
        found = shutil.which("aria2c")
    return found


def seeders_cpu(peers: list[LoopbackPeer]) -> float:
    """CPU seconds (user + system) the seeder processes have used so far (Linux /proc)."""
    total = 0
    for peer in peers:
        proc = peer.proc
        if proc is None:
            continue
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_usage() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ensure_bytecode()
    args = [a for a in sys.argv[1:] if a != "--secret"]
    private = "--secret" in sys.argv[1:]
    size_mib = int(args[0]) if args else 1024
    private_runs: list[tuple[float, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="swarmshare-bench-") as tmp:
        root = Path(tmp)
        src = root / "big.bin"
        with open(src, "wb") as handle:
            for index in range(size_mib):
                handle.write(hashlib.sha256(str(index).encode()).digest() * 32768)
        with LoopbackSwarm(root) as lab:
            port = lab.discovery_port
            for index, address in enumerate(SEEDERS):
                home = root / f"seed{index}"
                swarmshare(home, "share", str(src))
                lab.start(int(address.rsplit(".", 1)[1]), home=home, wait=False)
            lab.wait_ready()
            procs = lab.peers
            ports = [int(peer.control().get("status")["port"]) for peer in procs]
            cid = procs[0].control().get("library")[0]["id"]

            size = size_mib * (1 << 20)
            aria2c = ensure_aria2c()
            urls = [
                f"http://{a}:{p}/v1/content/{cid}/file" for a, p in zip(SEEDERS, ports, strict=True)
            ]
            runs = []
            aria_runs: list[tuple[float, str]] = []

            def run_swarmshare(attempt: int, *extra: str) -> None:
                os.sync()
                out = root / f"out{attempt}"
                out.mkdir()
                cpu0, _ = children_usage()
                seeders0 = seeders_cpu(procs)
                start = time.perf_counter()
                summary = swarmshare(
                    root / f"dl{attempt}{'p' if extra else ''}",
                    "get",
                    "big.bin",
                    "-o",
                    str(out),
                    "--json",
                    "--broadcast",
                    "127.255.255.255",
                    "--discovery-port",
                    str(port),
                    "--bind",
                    DOWNLOADER,
                    "--wait",
                    "3",
                    *extra,
                )
                wall = time.perf_counter() - start
                cpu1, rss = children_usage()
                transfer = float(json.loads(summary.stdout)["seconds"])
                runs.append((wall, cpu1 - cpu0, rss, transfer, seeders_cpu(procs) - seeders0))
                shutil.rmtree(out)

            def run_aria() -> None:
                assert aria2c is not None
                for setting in ARIA_SETTINGS:
                    os.sync()
                    out = root / "aria"
                    out.mkdir()
                    start = time.perf_counter()
                    subprocess.run(
                        [
                            aria2c,
                            "-q",
                            "--file-allocation=none",
                            "-d",
                            str(out),
                            "-o",
                            "big.bin",
                            *setting,
                            *urls,
                        ],
                        check=True,
                    )
                    aria_runs.append((time.perf_counter() - start, " ".join(setting)))
                    shutil.rmtree(out)

            # What writing the file through the page cache costs on this machine by itself: on
            # a VM that hands freed memory back to its host, every new page of cache is a fault
            # in the host too. aria2c pays it; swarmshare writes by direct I/O and does not.
            scratch = root / "scratch.bin"
            os.sync()
            start = time.perf_counter()
            with open(scratch, "wb") as handle:
                block = bytes(1 << 20)
                for _ in range(size_mib):
                    handle.write(block)
            page_cache_write = time.perf_counter() - start
            scratch.unlink()
            for attempt in range(ROUNDS):
                aria_first = aria2c is not None and attempt % 2 == 1
                if aria_first and aria2c:
                    run_aria()
                run_swarmshare(attempt)
                if aria2c and not aria_first:
                    run_aria()
            wall, cpu, rss, transfer, seeders = min(runs)
            aria = min(aria_runs) if aria_runs else None
            if private:
                # The same seeders and file, restarted as a private swarm: TLS everywhere.
                lab.close()
                runs.clear()
                with LoopbackSwarm(root, port) as private_lab:
                    for index, address in enumerate(SEEDERS):
                        private_lab.start(
                            int(address.rsplit(".", 1)[1]),
                            "--secret",
                            SECRET,
                            home=root / f"seed{index}",
                            wait=False,
                        )
                    private_lab.wait_ready()
                    procs = private_lab.peers
                    for attempt in range(ROUNDS):
                        run_swarmshare(attempt, "--secret", SECRET)
                private_runs = [(r[0], r[1], r[3], r[4]) for r in runs]

    mbs = size / wall / 1e6
    sha = sha256_rate()
    print(f"file: {size_mib} MiB on {len(SEEDERS)} seeders, loopback, page cache warm")
    print(
        f"swarmshare transfer alone (from get --json): {transfer:.2f} s"
        f"  {size / transfer / 1e6:.0f} MB/s"
    )
    print(
        f"swarmshare get: {wall:.2f} s  {mbs:.0f} MB/s  CPU {cpu:.2f} s  peak RSS {rss:.0f} MiB"
        f"  (best of {ROUNDS}; includes process start and discovery)"
    )
    cores = os.cpu_count() or 1
    print(
        f"seeders' CPU meanwhile: {seeders:.2f} s; all peers together kept"
        f" {(cpu + seeders) / (wall * cores):.0%} of the {cores} cores busy"
    )
    ceiling = size / ((cpu + seeders) / cores)
    print(
        f"CPU ceiling: with all {cores} cores busy on exactly this work, the get could not take"
        f" less than {(cpu + seeders) / cores:.2f} s ({ceiling / 1e6:.0f} MB/s)"
    )
    if aria is not None:
        print(
            f"aria2c:         {aria[0]:.2f} s  {size / aria[0] / 1e6:.0f} MB/s  ({aria[1]};"
            " verifies nothing)"
        )
        print(f"ratio swarmshare/aria2c speed: {aria[0] / wall:.2f}  (goal >= 1.0)")
    else:
        print("aria2c: not available")
    print(
        f"writing {size_mib} MiB through the page cache alone here: {page_cache_write:.2f} s"
        " (any buffered writer, aria2c too, may pay up to this; swarmshare writes by direct I/O)"
    )
    print(f"one core SHA-256: {sha / 1e6:.0f} MB/s")
    if private_runs:
        p_wall, p_cpu, p_transfer, p_seeders = min(private_runs)
        print(
            f"private swarm (TLS) get: {p_wall:.2f} s  {size / p_wall / 1e6:.0f} MB/s  CPU"
            f" {p_cpu:.2f} s, seeders' CPU {p_seeders:.2f} s; transfer alone {p_transfer:.2f} s"
            f"  {size / p_transfer / 1e6:.0f} MB/s  (best of {ROUNDS})"
        )
        print(
            f"ratio private/open speed: {wall / p_wall:.2f} whole get,"
            f" {transfer / p_transfer:.2f} transfer alone  (goal >= 0.5)"
        )
    print(
        f"ratio swarmshare/SHA-256 core: {mbs * 1e6 / sha:.2f} whole get,"
        f" {size / transfer / sha:.2f} transfer alone, {ceiling / sha:.2f} at the CPU ceiling"
        "  (goal >= 0.6)"
    )


if __name__ == "__main__":
    main()
