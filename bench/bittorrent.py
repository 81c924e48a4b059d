"""Benchmark: one file on 3 holders fetched by a 4th, three ways, in one run.

1. swarmshare's own LAN path: 3 `swarmshare run` peers (127.0.0.2-4) hold it, a standalone
   `swarmshare get` (127.0.0.5) fetches it by its ID;
2. the BitTorrent wire protocol against swarmshare: the same 3 peers run with --bittorrent, a
   stock libtorrent client (tests/btpeer.py, 127.0.0.6) fetches the magnet link with the 3
   peers as `x.pe`;
3. libtorrent from libtorrent: 3 stock libtorrent seeders (127.0.0.7-9, seed mode, the same
   file in place, the same v2 torrent without web seeds) and the same client (127.0.0.10).

Every libtorrent session listens on its 127.0.0.x only, with DHT, LSD, UPnP and NAT-PMP off and
no tracker. The stock client and seeders speak TCP only: uTP over loopback is CPU-bound (about
35 MB/s here, whoever seeds). Wall times include process start; the ratios are speeds.

Usage: python bench/bittorrent.py [SIZE_MIB]   (default 1024; loopback only)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import ensure_bytecode
from swarmshare.app.loopback import LoopbackSwarm, spare_port
from swarmshare.core.torrent import magnet, read_torrent, torrent_file

BTPEER = Path(__file__).resolve().parent.parent / "tests" / "btpeer.py"
HOLDERS = [2, 3, 4]
GETTER = "127.0.0.5"
BT_CLIENT = "127.0.0.6"
BT_SEEDERS = ["127.0.0.7", "127.0.0.8", "127.0.0.9"]
BT_CLIENT_2 = "127.0.0.10"


def swarmshare(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarmshare", "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=True,
    )


def btpeer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(BTPEER), *args], stdout=subprocess.PIPE, text=True)


def port_of(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if line[:1] != ["port"]:
        raise SystemExit(f"a libtorrent peer did not start: {line}")
    return int(line[1])


def timed_client(what: str, out: Path, listen: str, peers: list[str]) -> float:
    start = time.perf_counter()
    args = ["get", what, str(out), "--listen", listen, "--timeout", "3600"]
    for peer in peers:
        args += ["--peer", peer]
    proc = btpeer(*args)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the libtorrent client failed: {stdout}")
    return time.perf_counter() - start


def main() -> None:
    ensure_bytecode()
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    size = size_mib << 20
    with tempfile.TemporaryDirectory(prefix="swarmshare-bench-") as tmp:
        root = Path(tmp)
        src = root / "src"
        src.mkdir()
        big = src / "big.bin"
        with open(big, "wb") as handle:
            for index in range(size_mib):
                handle.write(hashlib.sha256(str(index).encode()).digest() * 32768)
        with LoopbackSwarm(root) as lab:
            bt_ports = [spare_port() for _ in HOLDERS]
            for index, port in zip(HOLDERS, bt_ports, strict=True):
                home = root / f"holder{index}"
                swarmshare(home, "share", str(big))
                lab.start(
                    index, "--bittorrent", "--bittorrent-port", str(port), home=home, wait=False
                )
            lab.wait_ready()
            cid = lab.peers[0].control().get("library")[0]["id"]
            deadline = time.monotonic() + 60
            while any(
                (p.control().get("status").get("bittorrent") or {}).get("seeding") != 1
                for p in lab.peers
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("the holders did not start seeding")
                time.sleep(0.1)

            # 1. swarmshare's own LAN path
            start = time.perf_counter()
            finding = ["--broadcast", "127.255.255.255", "--bind", GETTER]
            finding += ["--discovery-port", str(lab.discovery_port), "--wait", "10"]
            out1 = str(root / "out1") + "/"
            summary = swarmshare(root / "getter", "get", cid, "-o", out1, "--json", *finding)
            lan = time.perf_counter() - start
            lan_transfer = float(json.loads(summary.stdout)["transfer_seconds"])
            shutil.rmtree(root / "out1")

            # 2. a libtorrent client from the swarmshare peers (wire protocol)
            link = magnet(cid, "big.bin") + "".join(
                f"&x.pe=127.0.0.{i}:{p}" for i, p in zip(HOLDERS, bt_ports, strict=True)
            )
            from_swarmshare = timed_client(link, root / "out2", BT_CLIENT, [])
            same = (root / "out2" / "big.bin").stat().st_size == size
            shutil.rmtree(root / "out2")

        # 3. libtorrent from libtorrent: the same torrent, no web seeds
        exported = root / "big.torrent"
        swarmshare(root / "holder2", "torrent", cid, "-o", str(exported))
        exported.write_bytes(torrent_file(read_torrent(exported.read_bytes()).manifest))
        seeders = [btpeer("seed", str(exported), str(src), "--listen", a) for a in BT_SEEDERS]
        try:
            peers = [f"{a}:{port_of(s)}" for a, s in zip(BT_SEEDERS, seeders, strict=True)]
            from_libtorrent = timed_client(str(exported), root / "out3", BT_CLIENT_2, peers)
        finally:
            for seeder in seeders:
                seeder.kill()
                seeder.communicate()

    print(f"file: {size_mib} MiB on 3 holders, fetched by a 4th, loopback")
    print(
        f"swarmshare get (LAN path):             {lan:7.2f} s  {size / lan / 1e6:6.0f} MB/s"
        f"  (transfer alone {lan_transfer:.2f} s)"
    )
    print(
        f"libtorrent from swarmshare (BT wire):  {from_swarmshare:7.2f} s"
        f"  {size / from_swarmshare / 1e6:6.0f} MB/s  complete: {same}"
    )
    print(
        f"libtorrent from libtorrent:            {from_libtorrent:7.2f} s"
        f"  {size / from_libtorrent / 1e6:6.0f} MB/s"
    )
    print(f"ratio libtorrent-from-swarmshare / swarmshare speed: {lan / from_swarmshare:.2f}")
    print(f"ratio libtorrent-from-libtorrent / swarmshare speed: {lan / from_libtorrent:.2f}")
    print(f"ratio libtorrent-from-swarmshare / libtorrent-from-libtorrent speed:"
          f" {from_libtorrent / from_swarmshare:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
