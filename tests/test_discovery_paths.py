"""Which discovery paths a peer uses: IPv6 multicast only with the wildcard bind, mDNS never on
loopback (so no test, bench or demo peer ever opens mDNS or IPv6 multicast sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmshare.app.swarm import uses_ipv6, uses_mdns
from swarmshare.settings import Settings

from conftest import Swarm


@pytest.mark.parametrize(
    ("bind", "mdns", "ipv6", "want_mdns", "want_ipv6"),
    [
        ("0.0.0.0", True, True, True, True),
        ("::", True, True, True, True),
        ("0.0.0.0", False, False, False, False),
        ("10.1.2.3", True, True, True, False),
        ("127.0.0.2", True, True, False, False),
        ("127.0.0.1", True, False, False, False),
        ("::1", True, True, False, False),
        ("not-an-address", True, True, False, False),
    ],
)
def test_paths_by_bind_address(
    tmp_path: Path, bind: str, mdns: bool, ipv6: bool, want_mdns: bool, want_ipv6: bool
) -> None:
    settings = Settings(home=tmp_path, bind=bind, mdns=mdns, ipv6=ipv6)
    assert (uses_mdns(settings), uses_ipv6(settings)) == (want_mdns, want_ipv6)


def test_a_loopback_peer_uses_neither_mdns_nor_ipv6(swarm: Swarm) -> None:
    peer = swarm.start(2)  # `run` with its defaults (--mdns, --ipv6), bound to 127.0.0.2
    status = peer.json("status")
    assert status["mdns"] == {"on": False, "error": None, "sightings": 0, "refused": 0}
    assert status["ipv6"] == []
    assert "--no-mdns" not in peer.args and "--no-ipv6" not in peer.args
