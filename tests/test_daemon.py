"""The peer daemon as real processes on loopback: discovery, catalogues, serving, shutdown."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from swarmshare.core import bencode

from conftest import Swarm
from helpers import PeerProcess, assert_one_line_error, wait_until


def _names(peer: object) -> set[str]:
    items = peer.json("ls")  # type: ignore[attr-defined]
    return {item["name"] for item in items}


def test_five_peers_discover_a_share_and_a_peer_that_leaves_and_returns(
    swarm: Swarm, tmp_path: Path
) -> None:
    # A long interval: what is seen below can only come from change announcements and
    # solicitations, never from a periodic announcement.
    peers = [swarm.start(i, interval=30.0) for i in range(2, 7)]
    wait_until(lambda: all(len(p.json("peers")) == 4 for p in peers))
    (tmp_path / "cat.png").write_bytes(os.urandom(50_000))
    assert peers[0].cli("share", str(tmp_path / "cat.png")).returncode == 0
    for other in peers[1:]:
        wait_until(lambda other=other: "cat.png" in _names(other), timeout=10)
    item = peers[1].json("ls")[0]
    assert item["peers"] == 1 and item["complete"]

    # SIGKILL: no goodbye, so the others drop the peer only when it expires (3 intervals).
    short = swarm.start(7, interval=0.5)
    wait_until(lambda: any(p["name"] == "peer7" for p in peers[1].json("peers")))
    short.kill()
    wait_until(lambda: all(p["name"] != "peer7" for p in peers[1].json("peers")), timeout=10)

    # A restarted peer solicits answers and knows everyone at once, and they know it.
    peers[4].stop()
    wait_until(lambda: len(peers[1].json("peers")) == 3)
    peers[4].start()
    wait_until(lambda: "cat.png" in _names(peers[4]), timeout=10)
    wait_until(lambda: len(peers[1].json("peers")) == 4)


def test_curl_fetches_chunk_file_and_range(swarm: Swarm, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    (tmp_path / "doc.bin").write_bytes(data)
    peer = swarm.start(2)
    shared = json.loads(peer.cli("share", "--json", str(tmp_path / "doc.bin")).stdout)[0]
    status = peer.json("status")
    base = f"http://127.0.0.2:{status['port']}/v1/content/{shared['id']}"

    def curl(*args: str) -> bytes:
        proc = subprocess.run(["curl", "-sf", *args], capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert curl(f"{base}/chunk/1") == data[65536:131072]
    assert curl(f"{base}/chunk/3") == data[196608:]
    assert curl(f"{base}/file") == data
    assert curl("-r", "1000-1999", f"{base}/file") == data[1000:2000]
    manifest = curl(f"{base}/manifest")
    assert bencode.decode(manifest)[b"info"][b"name"] == b"doc.bin"
    missing = subprocess.run(["curl", "-s", f"{base}/chunk/4"], capture_output=True, timeout=30)
    assert json.loads(missing.stdout)["error"]["code"] == "bad_index"

    def served() -> list[int]:
        log = peer.json("log")
        return [r["chunk"] for r in log if r["result"] == "ok" and r["direction"] == "up"]

    wait_until(lambda: len(served()) >= 2)  # the transfer log is written in batches
    assert sorted(served()) == [1, 3]


def test_changed_file_is_not_served_under_its_old_id(swarm: Swarm, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"v1" * 1000)
    peer = swarm.start(2)
    old = json.loads(peer.cli("share", "--json", str(path)).stdout)[0]["id"]
    port = peer.json("status")["port"]
    path.write_bytes(b"v2" * 1001)
    proc = subprocess.run(
        ["curl", "-s", f"http://127.0.0.2:{port}/v1/content/{old}/chunk/0"],
        capture_output=True,
        timeout=30,
    )
    assert json.loads(proc.stdout)["error"]["code"] == "changed_on_disk"
    wait_until(lambda: [i["id"] for i in peer.json("library")] not in ([], [old]))


def test_garbage_datagrams_never_stop_discovery(swarm: Swarm, tmp_path: Path) -> None:
    a, b = swarm.start(2), swarm.start(3)
    rng = random.Random(7)
    valid = (
        b'{"swarmshare":1,"id":"0123456789abcdef","port":1,"name":"x","cv":"ab","iv":1,'
        b'"sol":false,"bye":false}'
    )
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.9", 0))
    try:
        for i in range(10_000):
            kind = i % 4
            if kind == 0:
                data = rng.randbytes(rng.randint(0, 1500))
            elif kind == 1:
                cut = bytearray(valid)
                cut[rng.randrange(len(cut))] = rng.randrange(256)
                data = bytes(cut)
            elif kind == 2:
                data = b'{"swarmshare":1,' + rng.randbytes(40)
            else:
                data = b'{"chunks":' + rng.randbytes(20) + b"}"
            sender.sendto(data, ("127.0.0.1", swarm.discovery_port))
    finally:
        sender.close()
    (tmp_path / "after.txt").write_text("still here")
    assert a.cli("share", str(tmp_path / "after.txt")).returncode == 0
    wait_until(lambda: "after.txt" in _names(b), timeout=10)
    dropped = b.json("status")["discovery"]
    assert a.proc is not None and a.proc.poll() is None
    assert b.proc is not None and b.proc.poll() is None
    assert dropped["malformed"] + dropped["foreign"] + dropped["oversized"] > 0


def test_clean_shutdown_on_sigint_and_sigterm(swarm: Swarm) -> None:
    for index, sig in ((2, signal.SIGINT), (3, signal.SIGTERM)):
        peer = swarm.start(index)
        assert peer.proc is not None
        peer.proc.send_signal(sig)
        assert peer.proc.wait(15) == 0, peer.log()
        assert not (peer.home / "control.json").exists()
        assert "Traceback" not in peer.log()
        assert "stopping" in peer.log()


def test_second_daemon_and_busy_port_get_one_clear_line(swarm: Swarm) -> None:
    first = swarm.start(2)
    proc = first.cli(*first.args, timeout=30)
    assert_one_line_error(proc, "already running")
    status = first.json("status")
    busy = PeerProcess(swarm.root, 3, swarm.discovery_port)  # not started: run it by hand
    busy.args[busy.args.index("--port") + 1] = str(status["port"])
    busy.args[busy.args.index("--bind") + 1] = "127.0.0.2"
    proc = busy.cli(*busy.args, timeout=30)
    assert_one_line_error(proc, "cannot listen on TCP")
    assert first.proc is not None and first.proc.poll() is None


def test_status_without_daemon_is_one_line(tmp_path: Path) -> None:
    from helpers import cli

    assert_one_line_error(cli(tmp_path / "h", "status"), "no swarmshare daemon")


@pytest.mark.parametrize("bad", ["--peer=host:99999", "--interval=0"])
def test_bad_options(tmp_path: Path, bad: str) -> None:
    from helpers import cli

    proc = cli(tmp_path / "h", "run", "--broadcast", "127.255.255.255", bad)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
