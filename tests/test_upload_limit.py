"""`run --upload-limit`: one byte bucket paces every chunk and file a peer uploads.

The pure bucket is checked in simulated time; the processes are checked by counting chunks and
bytes, never by timing them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core.ratelimit import ByteBucket

from conftest import Swarm
from helpers import (
    cli,
    control,
    same_file,
    swarmshare_command,
    wait_until,
    write_test_file,
)

MIB = 1 << 20
CHUNK = 64 * 1024  # the chunk size of a file of up to 64 MiB


@given(
    rate=st.integers(1, 10 * MIB),
    burst=st.integers(1, MIB),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 2 * MIB)), max_size=40),
)
@settings(max_examples=200)
def test_bucket_never_lets_more_than_burst_plus_rate_times_time(
    rate: int, burst: int, steps: list[tuple[float, int]]
) -> None:
    bucket = ByteBucket(rate, burst)
    now = start = 1000.0
    sent = 0
    for gap, nbytes in steps:
        now += gap
        send_at = now + bucket.delay(nbytes, now)
        sent += nbytes
        assert sent <= burst + rate * (send_at - start) + 1e-6 * max(1, sent)


def test_bucket_does_not_hold_back_what_stays_under_the_rate() -> None:
    bucket = ByteBucket(1000, 500)
    assert bucket.delay(500, 0.0) == 0.0  # the burst
    assert bucket.delay(250, 0.25) == 0.0  # refilled in time
    assert bucket.delay(500, 0.25) == pytest.approx(0.5)  # 500 bytes of debt at 1000 B/s
    assert bucket.delay(1000, 0.25) == pytest.approx(1.5)  # the next one waits for both


@pytest.mark.parametrize("bad", ["fast", "-1K", "10X", "nan"])
def test_bad_rate_is_one_clear_line(tmp_path: Path, bad: str) -> None:
    proc = cli(tmp_path / "h", "run", "--broadcast", "127.255.255.255", "--upload-limit", bad)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--upload-limit" in proc.stderr


def test_limited_seeder_sends_a_small_share_beside_an_unlimited_one(
    swarm: Swarm, tmp_path: Path
) -> None:
    """Two seeders of one file, one of them limited: the scheduler asks both alike, so the
    limited one's share of the chunks shows the limit holding (counted in chunks, not timed).
    Without the limit both would send about half."""
    src = tmp_path / "film.bin"
    write_test_file(src, 32 * MIB, seed=31)  # 256 chunks of 128 KiB
    limited = swarm.start(2, "--upload-limit", "1M")
    free = swarm.start(3)
    for peer in (limited, free):
        assert peer.cli("share", str(src)).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    proc = cli(
        tmp_path / "h",
        "get",
        "film.bin",
        "-o",
        str(out),
        "--json",
        *swarm.discovery(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert same_file(out / "film.bin", src)
    by_peer = summary["by_peer"]
    assert sum(by_peer.values()) == summary["chunks_total"] == 256
    assert by_peer.get("127.0.0.2", 0) * 4 < by_peer["127.0.0.3"], by_peer


def test_limited_seeder_keeps_a_get_running_past_its_first_chunks(
    swarm: Swarm, tmp_path: Path
) -> None:
    """What other tests rely on: a limited seeder's download is still under way once the
    first chunks are in, so a test can act at a chunk count."""
    src = tmp_path / "film.bin"
    write_test_file(src, 16 * MIB, seed=33)  # 256 chunks: 16 s at 1 MiB/s
    seeder = swarm.start(2, "--upload-limit", "1M")
    assert seeder.cli("share", str(src)).returncode == 0
    downloader = swarm.start(3)

    def listed() -> bool:
        return any(i["name"] == "film.bin" for i in control(downloader.home, "GET", "network"))

    wait_until(listed)
    out = tmp_path / "out"
    out.mkdir()
    get = subprocess.Popen(
        swarmshare_command(downloader.home, "get", "film.bin", "-o", str(out), "--quiet"),
        stdin=subprocess.DEVNULL,
    )
    try:

        def chunks_done() -> int:
            rows = control(downloader.home, "GET", "downloads")
            return sum(int(d["chunks_done"]) for d in rows)

        wait_until(lambda: chunks_done() >= 8, timeout=60)
        (download,) = control(downloader.home, "GET", "downloads")
        assert download["state"] not in ("done", "failed"), download
        assert download["chunks_done"] < download["chunks_total"] == 256
        assert get.poll() is None, "the get ended before the limit could hold it back"
        assert not (out / "film.bin").exists()
    finally:
        get.kill()
        get.wait(10)


def test_limited_plain_file_route_still_serves_ranges_byte_exact(
    swarm: Swarm, tmp_path: Path
) -> None:
    src = tmp_path / "doc.bin"
    write_test_file(src, 300_000, seed=32)
    data = src.read_bytes()
    peer = swarm.start(2, "--upload-limit", "512K")
    cid = json.loads(peer.cli("share", "--json", str(src)).stdout)[0]["id"]
    port = peer.json("status")["port"]
    base = f"http://127.0.0.2:{port}/v1/content/{cid}"

    def curl(*args: str) -> bytes:
        proc = subprocess.run(["curl", "-sf", *args], capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert curl(f"{base}/file") == data
    assert curl("-r", "70000-199999", f"{base}/file") == data[70000:200000]
    assert curl(f"{base}/chunk/2") == data[2 * CHUNK : 3 * CHUNK]
