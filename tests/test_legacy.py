"""Legacy mode: swarmshare and the original four scripts exchange chunks both ways."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.app.loopback import spare_port
from swarmshare.demo import make_png
from swarmshare.net.legacy import (
    SeedFormatError,
    decode_seed_announcement,
    decode_seed_request,
    encode_seed_announcements,
    piece_span,
)

from conftest import Swarm
from helpers import cli, wait_until

SEED = Path(__file__).parent / "seed"


# ---- the seed's formats, fed values -------------------------------------------------------


def test_announcements_split_into_complete_datagrams_under_1024_bytes() -> None:
    names = [f"holiday-photo-{i:03d}" for i in range(100)]
    datagrams = encode_seed_announcements(names)
    assert len(datagrams) > 1
    heard = []
    for datagram in datagrams:
        assert len(datagram) <= 1024
        obj = json.loads(datagram)
        assert set(obj) == {"chunks"}
        heard += obj["chunks"]
    assert heard == [f"{n}_{i}" for n in names for i in range(1, 6)]


def test_piece_spans_match_the_seed() -> None:
    assert [piece_span(12, i) for i in range(1, 6)] == [(0, 3), (3, 3), (6, 3), (9, 3), (12, 0)]
    assert [piece_span(100, i)[1] for i in range(1, 6)] == [20] * 5
    assert sum(piece_span(99_999, i)[1] for i in range(1, 6)) == 99_999


@given(st.binary(max_size=1300))
@settings(max_examples=500)
def test_any_datagram_or_request_decodes_or_raises_the_seed_error(data: bytes) -> None:
    for decode in (decode_seed_announcement, decode_seed_request):
        try:
            decode(data)
        except SeedFormatError:
            pass


def test_seed_request_names_are_strict() -> None:
    assert decode_seed_request(b'{"requested_content": "cat_3"}').label == "cat_3"
    for bad in [
        b'{"requested_content": "../../etc/passwd"}',
        b'{"requested_content": "cat_6"}',
        b'{"requested_content": "/etc/passwd_1"}',
        b'{"requested_content": "a\\u0000_1"}',
        b'{"requested_content": "cat_1", "x": 1}',
        b'["cat_1"]',
        b"cat_1",
    ]:
        with pytest.raises(SeedFormatError):
            decode_seed_request(bad)


# ---- against the stand-ins, as separate processes -----------------------------------------


def _script(name: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SEED / f"{name}.py"), *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def scripts() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_seed_downloader_fetches_a_png_from_swarmshare(
    swarm: Swarm, tmp_path: Path, scripts: list[subprocess.Popen[str]]
) -> None:
    legacy_port = spare_port()
    png = make_png(200, 160)
    (tmp_path / "cat.png").write_bytes(png)
    seed_dir = tmp_path / "seedhost"
    seed_dir.mkdir()
    listener = _script("discovery", str(swarm.discovery_port), cwd=seed_dir)
    scripts.append(listener)
    assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
    peer = swarm.start(2, "--legacy", "--legacy-port", str(legacy_port), interval=0.5)
    assert peer.cli("share", str(tmp_path / "cat.png")).returncode == 0

    def recorded() -> bool:
        try:
            book = json.loads((seed_dir / "The_Content_Dictionary.txt").read_text())
        except (OSError, ValueError):
            return False
        return all(book.get(f"cat_{i}") == ["127.0.0.2"] for i in range(1, 6))

    wait_until(recorded, timeout=20)
    assert listener.poll() is None, "the seed's listener died on a swarmshare datagram"

    fetch = subprocess.run(
        [sys.executable, str(SEED / "downloader.py"), "cat", str(legacy_port), "127.0.0.9"],
        cwd=seed_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    assert (seed_dir / "cat.png").read_bytes() == png
    assert len((seed_dir / "Download_Log.txt").read_text().splitlines()) == 5

    def served() -> list[str]:
        log = peer.json("log")
        return sorted(r["name"] for r in log if r["direction"] == "up" and r["legacy"])

    wait_until(lambda: len(served()) >= 5)  # the transfer log is written in batches
    assert served() == [f"cat_{i}" for i in range(1, 6)]


def test_swarmshare_fetches_from_seed_uploaders_one_refusing(
    swarm: Swarm, tmp_path: Path, scripts: list[subprocess.Popen[str]]
) -> None:
    legacy_port = spare_port()
    png = make_png(240, 180)
    hosts = {}
    for address in ("127.0.0.7", "127.0.0.8"):
        host = tmp_path / address
        host.mkdir()
        (host / "cat.png").write_bytes(png)
        hosts[address] = host
        scripts.append(
            _script(
                "announcer",
                "cat",
                address,
                "127.255.255.255",
                str(swarm.discovery_port),
                "0.5",
                cwd=host,
            )
        )
    uploader = _script("uploader", "127.0.0.7", str(legacy_port), cwd=hosts["127.0.0.7"])
    scripts.append(uploader)  # 127.0.0.8 announces but refuses connections: no uploader there
    assert uploader.stdout is not None and uploader.stdout.readline().strip() == "listening"
    peer = swarm.start(2, "--legacy", "--legacy-port", str(legacy_port), interval=0.5)

    def seed_item() -> dict | None:  # type: ignore[type-arg]
        return next((i for i in peer.json("ls") if i["name"] == "cat"), None)

    wait_until(lambda: (seed_item() or {}).get("peers") == 2, timeout=20)
    item = seed_item()
    assert item is not None and item["legacy"] and not item["verified"]
    seeds = [p for p in peer.json("peers") if p.get("legacy")]
    assert sorted(p["address"] for p in seeds) == ["127.0.0.7", "127.0.0.8"]

    out = tmp_path / "out"
    out.mkdir()
    for _attempt in range(3):  # each piece is tried on both addresses, in random order
        (out / "cat.png").unlink(missing_ok=True)  # else the next get finds it already there
        proc = peer.cli("get", "cat", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        assert "UNVERIFIED" in proc.stdout and "no hashes" in proc.stderr
        assert (out / "cat.png").read_bytes() == png

    def legacy_rows() -> list[dict[str, Any]]:
        return [r for r in peer.json("log", "--limit", "1000") if r["legacy"]]

    # Three gets of five pieces: wait until the batched transfer log lists all 15.
    wait_until(lambda: sum(r["result"] == "ok" for r in legacy_rows()) >= 15)
    log = legacy_rows()
    assert {r["peer"] for r in log if r["result"] == "ok"} == {"127.0.0.7"}
    assert any(r["peer"] == "127.0.0.8" and r["result"] == "refused" for r in log)
    seed_logs = tmp_path / "seedlogs"
    proc = peer.cli("log", "--format", "seed", "--dir", str(seed_logs), "--limit", "1000")
    assert proc.returncode == 0, proc.stderr
    lines = (seed_logs / "Download_Log.txt").read_text().splitlines()
    assert len(lines) >= 15
    first = json.loads(lines[0]).split(" | ")
    assert first[1].startswith("cat_") and first[2] == "127.0.0.7"
    assert time.strptime(first[3], "%d-%m-%Y %H:%M:%S")


def test_legacy_port_refuses_traversal_and_garbage(swarm: Swarm, tmp_path: Path) -> None:
    legacy_port = spare_port()
    secret = tmp_path / "secret_1"
    secret.write_text("must never be served")
    (tmp_path / "cat.png").write_bytes(make_png(64, 64))
    peer = swarm.start(2, "--legacy", "--legacy-port", str(legacy_port))
    peer.cli("share", str(tmp_path / "cat.png"))
    attacks = [
        b'{"requested_content": "../../etc/passwd"}',
        b'{"requested_content": "/etc/passwd"}',
        b'{"requested_content": "../../../etc/passwd_1"}',
        f'{{"requested_content": "{secret}"}}'.encode(),
        b'{"requested_content": "secret_1"}',
        b'{"requested_content": "cat_6"}',
        b'{"requested_content": "dog_1"}',
        b'{"requested_content": "..%2f..%2fetc%2fpasswd_1"}',
        b'{"requested_content": "cat_1\\u0000"}',
        b"GET / HTTP/1.1\r\n\r\n",
        b"\xff\xfe garbage",
        b"x" * 100_000,
        b"",
    ]
    for attack in attacks:
        with socket.create_connection(("127.0.0.2", legacy_port), timeout=10) as sock:
            if attack:
                sock.sendall(attack)
            sock.shutdown(socket.SHUT_WR)
            got = b""
            while piece := sock.recv(65536):
                got += piece
        assert got == b"", f"answered {attack[:40]!r} with {got[:40]!r}"
    with socket.create_connection(("127.0.0.2", legacy_port), timeout=10) as sock:
        sock.sendall(b'{"requested_content": "cat_1"}')
        got = b""
        while piece := sock.recv(65536):
            got += piece
    size = (tmp_path / "cat.png").stat().st_size
    assert got == (tmp_path / "cat.png").read_bytes()[: -(-size // 5)]
    status = peer.json("status")
    assert status["legacy"]["refused"] == len(attacks)
    assert peer.proc is not None and peer.proc.poll() is None
    assert "must never" not in peer.log()


def test_legacy_off_by_default(swarm: Swarm) -> None:
    peer = swarm.start(2)
    assert peer.json("status")["legacy"] is None
    assert cli(peer.home, "status").returncode == 0
