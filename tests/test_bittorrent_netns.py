"""BitTorrent local service discovery (BEP 14) between real hosts (network namespaces).

LSD multicasts on the LAN, so it runs only here, in the sealed lab (no route out): `swarmshare
run --bittorrent` in one host (LSD on: its bind address is not loopback; DHT, UPnP and NAT-PMP
off; no tracker), a stock libtorrent client in another (tests/btpeer.py --lsd: LSD on, DHT,
UPnP and NAT-PMP off, no tracker) given a magnet link with no peer address at all. Skipped, with
the reason, where namespaces cannot be made (not root).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from swarmshare.core.torrent import magnet

from helpers import wait_until
from netlab import NetLab, can_build, lab_fixture

pytest.importorskip("libtorrent")

REASON = can_build()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
BTPEER = Path(__file__).parent / "btpeer.py"


lab = lab_fixture()


def test_a_libtorrent_client_finds_a_swarmshare_peer_by_lsd(lab: NetLab, tmp_path: Path) -> None:
    lab.build({"a": 1, "b": 1})
    data = os.urandom(700_001)
    src = tmp_path / "report.bin"
    src.write_bytes(data)
    shared = lab.cli("a", "share", str(src), "--json")
    assert shared.returncode == 0, shared.stderr
    content_id = json.loads(shared.stdout)[0]["id"]
    lab.start("a", "run", "--bittorrent", "--name", "a")

    def seeding() -> bool:
        status = lab.cli("a", "status", "--json")
        if status.returncode != 0:
            return False
        return bool((json.loads(status.stdout).get("bittorrent") or {}).get("seeding") == 1)

    wait_until(seeding, timeout=60)
    out = tmp_path / "out"
    b = lab.hosts["b"]
    client = lab.run_in(
        "b",
        sys.executable, str(BTPEER), "get", magnet(content_id, "report.bin"), str(out),
        "--listen", b.address, "--lsd", "--timeout", "90",
    )  # fmt: skip
    output, _ = client.communicate(timeout=120)
    assert client.returncode == 0, output.decode(errors="replace")
    assert (out / "report.bin").read_bytes() == data
