"""Connections from one process to one peer: every download of a daemon shares a bounded number
of them, below what the peer's server admits from one address, so that concurrent downloads
from one seeder never see connections refused (which would count as the peer failing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import Swarm
from helpers import control, wait_until, write_test_file

MIB = 1 << 20
FILES = 4  # downloads at once: their windows together (4 x 16 requests) exceed the server's 32
SWARMS = {"open": (), "private": ("--secret", "correct horse battery staple")}  # private: TLS


@pytest.mark.parametrize("kind", SWARMS)
def test_concurrent_downloads_from_one_seeder_all_complete_without_retries(
    swarm: Swarm, tmp_path: Path, kind: str
) -> None:
    """One daemon downloads several contents at once from one seeder: each completes with no
    request retried and no peer dropped, and the seeder refused no connection."""
    files = tmp_path / "files"
    files.mkdir()
    paths = [files / f"f{k}.bin" for k in range(FILES)]
    for k, path in enumerate(paths):
        write_test_file(path, 32 * MIB, seed=k)
    seeder = swarm.start(2, *SWARMS[kind])
    assert seeder.cli("share", *map(str, paths)).returncode == 0
    downloader = swarm.start(5, *SWARMS[kind])
    wait_until(lambda: _holders(downloader, len(paths)), timeout=30)
    out = tmp_path / "out"
    out.mkdir()
    api = downloader.control()
    for path in paths:
        api.post("downloads", {"ref": path.name, "dest_dir": str(out)})

    def finished() -> bool:
        downloads = control(downloader.home, "GET", "downloads")
        assert all(d["state"] not in ("failed", "paused") for d in downloads), downloads
        return len(downloads) == FILES and all(d["state"] == "done" for d in downloads)

    wait_until(finished, timeout=120, interval=0.2)
    downloads = control(downloader.home, "GET", "downloads")
    assert [(d["name"], d["retried"]) for d in downloads if d["retried"]] == []
    assert [d["dropped_peers"] for d in downloads if d["dropped_peers"]] == []
    assert control(seeder.home, "GET", "status")["connections_refused"] == 0
    for path in paths:
        assert (out / path.name).read_bytes() == path.read_bytes()


def _holders(peer: Any, count: int) -> bool:
    """Whether `peer` sees `count` contents held by others on the network."""
    return len(control(peer.home, "GET", "network")) >= count
