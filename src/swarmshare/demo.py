"""`swarmshare demo`: a real swarm of peer processes on loopback, sharing and fetching a file.

Loopback only, by construction: the peers are started by the loopback launcher (127.0.0.N,
announcing to 127.255.255.255 on a free port), so nothing reaches the network. Every process it
starts is stopped at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmshare.app.loopback import LOOPBACK_BROADCAST, LoopbackPeer, LoopbackSwarm
from swarmshare.errors import DaemonError
from swarmshare.ui import add_row, fmt_rate, fmt_size, out, table

if TYPE_CHECKING:
    from rich.table import Table

DEMO_INTERVAL_SECONDS = 5.0


def run_demo(size_mib: int, peers: int, keep: bool, show_progress: Callable[[], Any]) -> None:
    """Run the whole demo, printing what happens."""
    root = Path(tempfile.mkdtemp(prefix="swarmshare-demo-"))
    lab = LoopbackSwarm(root)
    swarm = lab.peers
    try:
        step(
            f"Starting {peers} peers on loopback (127.0.0.2-{peers + 1}), discovery on UDP"
            f" {lab.discovery_port} -> {LOOPBACK_BROADCAST}"
        )
        for i in range(1, peers + 1):
            name = f"peer-{i}"
            lab.start(
                i + 1, name=name, home=root / name, interval=DEMO_INTERVAL_SECONDS, wait=False
            )
        lab.wait_ready()
        _wait(
            lambda: all(len(p.control().get("peers")) == peers - 1 for p in swarm),
            15,
            "peers did not find each other",
        )
        for peer in swarm:
            out.print(f"  {peer.name} at {peer.address}  (home {peer.home})", markup=False)
        out.print(f"  every peer found the other {peers - 1} by UDP broadcast")

        seeders, downloader = swarm[:-1], swarm[-1]
        files = root / "files"
        files.mkdir()
        video = files / "demo-video.bin"
        png = files / "cat.png"
        step(f"Making a {size_mib} MiB file and a small PNG (the seed's file type)")
        _write_file(video, size_mib * 1024 * 1024)
        png.write_bytes(make_png(320, 200))
        for peer in seeders:
            peer.control().post("share", {"paths": [str(video)]})
        seeders[0].control().post("share", {"paths": [str(png)]})
        names = ", ".join(p.name for p in seeders)
        out.print(
            f"  {names} share demo-video.bin ({fmt_size(video.stat().st_size)});"
            f" {seeders[0].name} also shares cat.png"
        )

        step(f"What {downloader.name} sees on the network (swarmshare ls)")
        _wait(
            lambda: (
                len(downloader.control().get("network")) == 2
                and max(i["peers"] for i in downloader.control().get("network")) == len(seeders)
            ),
            15,
            "the shares did not reach the downloader",
        )
        out.print(_network_table(downloader.control().get("network"), swarm))

        step(f"{downloader.name} downloads demo-video.bin from all {len(seeders)} seeders at once")
        dest = root / "downloads"
        dest.mkdir()
        started = time.monotonic()
        stats = _download(downloader, "demo-video.bin", dest, show_progress)
        seconds = time.monotonic() - started
        got = dest / "demo-video.bin"
        want_hash, got_hash = _sha256(video), _sha256(got)
        out.print(
            f"  {fmt_size(stats['total_bytes'])} in {seconds:.2f} s"
            f" ({fmt_rate(stats['total_bytes'] / seconds)}), {stats['retried']} retried"
        )
        out.print(f"  SHA-256 of the original: {want_hash}")
        out.print(
            f"  SHA-256 downloaded:      {got_hash}  "
            f"{'[green]identical[/]' if got_hash == want_hash else '[red]DIFFERENT[/]'}",
            markup=True,
        )
        if got_hash != want_hash:
            raise DaemonError("the downloaded file differs: this is a bug")

        step("Who served which chunks (the downloader's transfer log)")
        fetched = sum(stats["by_peer"].values())
        _wait(
            lambda: len(_fetched_rows(downloader.control().get("log?limit=100000"))) >= fetched,
            10,
            "the transfer log did not list the download",
        )
        out.print(_served_table(downloader.control().get("log?limit=100000"), swarm))

        step(f"{downloader.name} fetches cat.png too")
        _download(downloader, "cat.png", dest, lambda: None)
        same = (dest / "cat.png").read_bytes() == png.read_bytes()
        out.print(f"  cat.png: {fmt_size(png.stat().st_size)}, identical: {same}")

        step("Swarming: the downloader now shares what it fetched")
        downloader_id = downloader.control().get("status")["peer_id"]
        _wait(
            lambda: (
                {
                    i["name"]
                    for i in seeders[0].control().get("network")
                    if downloader_id in i["complete_peers"]
                }
                >= {video.name, png.name}
            ),
            10,
            "the new holder was not announced",
        )
        out.print(_network_table(seeders[0].control().get("network"), swarm))
        out.print(
            f"  ({seeders[0].name}'s view, itself not listed: {downloader.name} now holds both"
            " files too)"
        )
    finally:
        step("Stopping every peer")
        lab.close()
        if keep:
            out.print(f"  kept {root} (homes, logs, files)")
        else:
            shutil.rmtree(root, ignore_errors=True)
        out.print("  done: all demo processes stopped")


def make_png(width: int, height: int) -> bytes:
    """A small true-colour PNG: a colour gradient with a circle."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            inside = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 3) ** 2
            rows += bytes((255, 200, 60) if inside else (x * 255 // width, y * 255 // height, 160))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def step(text: str) -> None:
    """A heading for one step of the demo."""
    from rich.markup import escape

    out.print(f"\n[bold cyan]>>[/] [bold]{escape(text)}[/]", markup=True)


def _download(
    peer: LoopbackPeer, name: str, dest: Path, show_progress: Callable[[], Any]
) -> dict[str, Any]:
    stats: dict[str, Any] = peer.control().post(
        "downloads", {"ref": name, "dest_dir": str(dest), "wait": 10}
    )
    with show_progress() or contextlib.nullcontext() as view:
        while stats["state"] not in ("done", "failed", "cancelled"):
            if view is not None:
                view.update(stats)
            time.sleep(0.1)
            stats = peer.control().get(f"downloads/{stats['id']}")
        if view is not None:
            view.update(stats)
    if stats["state"] != "done":
        raise DaemonError(f"download of {name} {stats['state']}: {stats['error']}")
    return stats


def _network_table(items: list[dict[str, Any]], swarm: list[LoopbackPeer]) -> Table:
    """What one peer sees on the network, with the names of the other peers holding each."""
    names = {peer.control().get("status")["peer_id"]: peer.name for peer in swarm}
    grid = table(("ID", "NAME", "SIZE", "PEERS", "HELD BY"))
    for item in items:
        holders = [*item["complete_peers"], *item["partial_peers"]]
        add_row(
            grid,
            str(item["id"])[:12],
            item["name"],
            fmt_size(item["size"]),
            str(item["peers"]),
            ", ".join(sorted(names.get(h, h[:8]) for h in holders)),
        )
    return grid


def _fetched_rows(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transfer-log rows of the demo video's chunks that arrived."""
    return [
        row
        for row in log
        if row["direction"] == "down" and row["result"] == "ok" and row["name"] == "demo-video.bin"
    ]


def _served_table(log: list[dict[str, Any]], swarm: list[LoopbackPeer]) -> Table:
    names = {p.address: p.name for p in swarm}
    counts: dict[str, list[int]] = {}
    for row in _fetched_rows(log):
        entry = counts.setdefault(row["peer"], [0, 0])
        entry[0] += 1
        entry[1] += row["bytes"]
    grid = table(("PEER", "ADDRESS", "CHUNKS", "BYTES"))
    for address, (chunks, nbytes) in sorted(counts.items()):
        add_row(grid, names.get(address, "?"), address, str(chunks), fmt_size(nbytes))
    return grid


def _write_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for offset in range(0, size, len(block)):
            piece = hashlib.sha256(str(offset).encode()).digest() + block[32:]
            handle.write(piece[: min(len(piece), size - offset)])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _wait(predicate: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(DaemonError):
            if predicate():
                return
        time.sleep(0.05)
    raise DaemonError(failure)
