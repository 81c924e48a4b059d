"""Swarm downloads with real processes on loopback: many seeders, failures, liars, resume."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swarmshare.core.catalog import bitmap_get

from conftest import Swarm
from helpers import (
    PeerProcess,
    cli,
    control,
    same_file,
    swarmshare_command,
    wait_until,
    write_test_file,
)

MIB = 1 << 20
HERE = Path(__file__).parent


def _served_bytes(peers: list[PeerProcess]) -> int:
    return sum(int(control(p.home, "GET", "status")["served_bytes"]) for p in peers)


def _seed(swarm: Swarm, path: Path, indices: list[int], *extra: str) -> list[PeerProcess]:
    seeders = [swarm.start(i, *extra) for i in indices]
    for peer in seeders:
        assert peer.cli("share", str(path)).returncode == 0
    return seeders


def _get_json(
    home: Path,
    swarm: Swarm,
    name: str,
    out: Path,
    *extra: str,
    bind: str = "127.0.0.20",
    max_open_files: int | None = None,
) -> dict[str, Any]:
    proc = cli(
        home,
        "get",
        name,
        "-o",
        str(out),
        "--json",
        *swarm.discovery(bind),
        *extra,
        timeout=300,
        max_open_files=max_open_files,
    )
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def test_three_seeders_one_downloader_through_its_daemon(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "video.bin"
    write_test_file(src, 20 * MIB)
    _seed(swarm, src, [2, 3, 4])
    downloader = swarm.start(5)
    wait_until(lambda: any(i["peers"] == 3 for i in downloader.json("ls")))
    out = tmp_path / "got"
    out.mkdir()
    proc = downloader.cli("get", "video.bin", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr + "\n--- daemon log:\n" + downloader.log()[-4000:]
    summary = json.loads(proc.stdout)
    assert same_file(out / "video.bin", src)
    assert summary["verified"] and summary["bad_chunks"] == 0
    assert set(summary["by_peer"]) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}

    def arrived() -> list[dict[str, Any]]:
        log = downloader.json("log", "--limit", "5000")
        return [row for row in log if row["direction"] == "down" and row["result"] == "ok"]

    # The transfer log is written in batches: wait until it lists every chunk fetched.
    wait_until(lambda: len(arrived()) >= sum(summary["by_peer"].values()))
    assert {row["peer"] for row in arrived()} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    assert "download video.bin: done 100%" in downloader.cli("status").stdout
    # It joined the library at once and is announced: a seeder now sees 3 other holders.
    assert [r["name"] for r in downloader.json("library")] == ["video.bin"]
    wait_until(lambda: any(i["peers"] == 3 for i in swarm.peers[0].json("ls")))


def test_seeder_killed_mid_download(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    write_test_file(src, 64 * MIB, seed=1)
    # Each seeder sends at most 4 MiB/s: the download is still going when one is killed.
    seeders = _seed(swarm, src, [2, 3, 4], "--upload-limit", "4M")
    downloader = swarm.start(5)
    wait_until(lambda: any(i["peers"] == 3 for i in downloader.json("ls")))
    (tmp_path / "out").mkdir()
    started = control(
        downloader.home,
        "POST",
        "downloads",
        {"ref": "big.bin", "dest_dir": str(tmp_path / "out"), "wait": 5},
    )
    cid = started["id"]
    wait_until(
        lambda: control(downloader.home, "GET", f"downloads/{cid}")["done_bytes"] >= 8 * MIB,
        timeout=60,
    )
    seeders[0].kill()
    at_kill = control(downloader.home, "GET", f"downloads/{cid}")
    assert at_kill["state"] != "done", "the download finished before the kill: test proves nothing"
    wait_until(
        lambda: control(downloader.home, "GET", f"downloads/{cid}")["state"] in ("done", "failed"),
        timeout=120,
    )
    final = control(downloader.home, "GET", f"downloads/{cid}")
    assert final["state"] == "done", final
    assert same_file(tmp_path / "out" / "big.bin", src)


def test_liar_and_staller_cannot_spoil_the_file(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "doc.bin"
    write_test_file(src, 6 * MIB, seed=2)
    evil = []
    for mode, address in (("liar", "127.0.0.7"), ("staller", "127.0.0.8")):
        evil.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "evilpeer.py"),
                    mode,
                    str(src),
                    address,
                    str(swarm.discovery_port),
                ],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
        )
    out = tmp_path / "out"
    out.mkdir()
    home = tmp_path / "h"
    getter: subprocess.Popen[str] | None = None
    try:
        for proc in evil:
            assert proc.stdout is not None and json.loads(proc.stdout.readline())["port"]
        # At first only the liar and the staller hold the file.
        getter = subprocess.Popen(
            swarmshare_command(
                home,
                "get",
                "doc.bin",
                "-o",
                str(out),
                "--json",
                "--chunk-timeout",
                "2",
                *swarm.discovery(),
            ),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        wait_until(lambda: _log_has(home, "127.0.0.8", "timeout"), timeout=30, interval=0.2)
        assert _log_has(home, "127.0.0.7", "bad_hash")
        honest = swarm.start(2)  # then an honest peer appears
        honest.cli("share", str(src))
        stdout, _ = getter.communicate(timeout=120)
        assert getter.returncode == 0
    finally:
        if getter is not None and getter.poll() is None:  # the test failed while it ran
            getter.kill()
            getter.communicate(timeout=10)
        for proc in evil:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    summary = json.loads(stdout)
    assert same_file(out / "doc.bin", src)
    assert "127.0.0.7" in summary["dropped_peers"], "two bad chunks: the liar is dropped"
    assert summary["bad_chunks"] >= 2 and summary["retried"] > 0
    assert set(summary["by_peer"]) == {"127.0.0.2"}, "every verified chunk came from the honest"


def _log_has(home: Path, peer: str, result: str) -> bool:
    proc = cli(home, "log", "--json", "--limit", "5000")
    if proc.returncode != 0:
        return False
    return any(r["peer"] == peer and r["result"] == result for r in json.loads(proc.stdout))


def _recorded_chunks(record: Path) -> set[int]:
    """The chunks a resume record lists (empty while there is none)."""
    try:
        obj = json.loads(record.read_text())
        bitmap = base64.b64decode(obj["have"])
    except (OSError, ValueError, KeyError):
        return set()
    return {i for i in range(int(obj["chunks"])) if bitmap_get(bitmap, i)}


def _log_rows(home: Path) -> list[dict[str, Any]]:
    proc = cli(home, "log", "--json", "--limit", "100000")
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def test_downloader_killed_and_restarted_resumes(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "iso.bin"
    size = 64 * MIB  # 1,024 chunks of 64 KiB
    write_test_file(src, size, seed=3)
    # Two seeders at 8 MiB/s each: at least 4 s for the whole file, however fast the machine.
    _seed(swarm, src, [2, 3], "--upload-limit", "8M")
    out = tmp_path / "out"
    out.mkdir()
    home = tmp_path / "h"
    args = swarmshare_command(home, "get", "iso.bin", "-o", str(out), "--quiet", *swarm.discovery())
    first = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    record = out / "iso.bin.part.swarmshare"
    try:
        # Act on an event: the resume record lists 64 chunks (of 1,024).
        wait_until(lambda: len(_recorded_chunks(record)) >= 64, timeout=60, interval=0.005)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    claimed = _recorded_chunks(record)
    assert 64 <= len(claimed) < 1024
    assert not (out / "iso.bin").exists(), "killed before the end: no final file yet"
    assert (out / "iso.bin.part").exists()
    before = max((row["id"] for row in _log_rows(home)), default=0)

    summary = _get_json(home, swarm, "iso.bin", out)
    assert same_file(out / "iso.bin", src)
    assert not record.exists() and not (out / "iso.bin.part").exists()
    # Every chunk the record listed was kept; nothing verified was fetched again; every
    # other chunk was fetched once.
    assert summary["resumed_chunks"] >= len(claimed)
    fetched = [
        row["chunk"]
        for row in _log_rows(home)
        if row["id"] > before and row["direction"] == "down" and row["result"] == "ok"
    ]
    assert not set(fetched) & claimed
    assert sorted(fetched) == sorted(set(fetched))
    assert len(fetched) == summary["chunks_total"] - summary["resumed_chunks"]


def test_flash_crowd_downloaders_feed_each_other(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "game.bin"
    size = 256 * MIB
    write_test_file(src, size, seed=4)
    (seeder,) = _seed(swarm, src, [2])
    crowd = [swarm.start(i) for i in range(3, 9)]
    wait_until(lambda: all(any(i["peers"] == 1 for i in p.json("ls")) for p in crowd))
    ids = []
    for index, peer in enumerate(crowd):
        dest = tmp_path / f"out{index}"
        dest.mkdir()
        ids.append(
            control(peer.home, "POST", "downloads", {"ref": "game.bin", "dest_dir": str(dest)})[
                "id"
            ]
        )
    for peer, cid in zip(crowd, ids, strict=True):
        wait_until(
            lambda p=peer, c=cid: (
                control(p.home, "GET", f"downloads/{c}")["state"] in ("done", "failed")
            ),
            timeout=240,
        )
        assert control(peer.home, "GET", f"downloads/{cid}")["state"] == "done"
    for index in range(len(crowd)):
        assert same_file(tmp_path / f"out{index}" / "game.bin", src)
    uploaded = _served_bytes([seeder])
    print(f"flash crowd: the seeder uploaded {uploaded / size:.2f} x the file for 6 downloaders")
    assert uploaded < 4 * size, f"seeder uploaded {uploaded / size:.2f} x the file"


def test_two_gib_download_in_bounded_memory(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "huge.bin"
    size = 2 * 1024 * MIB
    write_test_file(src, size, seed=5)
    _seed(swarm, src, [2])
    # A fresh parent whose only child is `get`, so the peak RSS is that process's alone.
    wrapper = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]);"
        " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr);"
        " sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            *swarmshare_command(
                tmp_path / "h",
                "get",
                "huge.bin",
                "-o",
                str(tmp_path / "out.bin"),
                "--json",
                *swarm.discovery(),
            ),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    peak_mib = int(proc.stderr.strip().splitlines()[-1]) / 1024
    print(f"2 GiB download: peak RSS of the get process {peak_mib:.0f} MiB")
    assert summary["total_bytes"] == size
    assert same_file(tmp_path / "out.bin", src)
    assert peak_mib < 150


def test_ambiguous_and_missing_names(swarm: Swarm, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same.txt").write_text("one")
    (tmp_path / "b" / "same.txt").write_text("two")
    peer = swarm.start(2)
    peer.cli("share", str(tmp_path / "a" / "same.txt"), str(tmp_path / "b" / "same.txt"))
    common = [*swarm.discovery(), "--wait", "2"]
    proc = cli(tmp_path / "h", "get", "same.txt", *common)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "2 different contents" in proc.stderr and proc.stderr.count("same.txt") >= 3
    proc = cli(tmp_path / "h", "get", "nothing.iso", *common)
    assert proc.returncode != 0 and "nothing called 'nothing.iso'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_destination_is_kept_without_force(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(os.urandom(100_000))
    peer = swarm.start(2)
    peer.cli("share", str(src))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine, do not touch")
    common = ["-o", str(out), *swarm.discovery()]
    proc = cli(tmp_path / "h", "get", "notes.txt", *common)
    assert proc.returncode != 0 and "--force" in proc.stderr
    assert (out / "notes.txt").read_text() == "mine, do not touch"
    proc = cli(tmp_path / "h", "get", "notes.txt", "--force", *common)
    assert proc.returncode == 0, proc.stderr
    assert (out / "notes.txt").read_bytes() == src.read_bytes()
    # An identical file is a finished download: nothing is fetched again.
    again = json.loads(cli(tmp_path / "h", "get", "notes.txt", "--json", *common).stdout)
    assert again["fetched_bytes"] == 0 and again["local_chunks"] == again["chunks_total"]


@pytest.mark.parametrize("kind", ["folder"])
def test_folder_content_arrives_as_a_tree(swarm: Swarm, tmp_path: Path, kind: str) -> None:
    root = tmp_path / "album"
    (root / "cd1").mkdir(parents=True)
    (root / "cd1" / "01 intro.flac").write_bytes(os.urandom(300_000))
    (root / "cover.png").write_bytes(os.urandom(5_000))
    (root / "empty.txt").write_bytes(b"")
    peer = swarm.start(2)
    peer.cli("share", str(root))
    out = tmp_path / "out"
    out.mkdir()
    summary = _get_json(tmp_path / "h", swarm, "album", out)
    assert summary["verified"]
    for rel in ("cd1/01 intro.flac", "cover.png", "empty.txt"):
        assert (out / "album" / rel).read_bytes() == (root / rel).read_bytes()
    assert not (out / "album.part").exists()


def test_folder_of_more_files_than_the_process_may_open(swarm: Swarm, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for index in range(400):
        folder = root / f"day{index // 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{index:03}.jpg").write_bytes(os.urandom(3_000 + index))
    peer = swarm.start(2)
    assert peer.cli("share", str(root)).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    # 400 files, 256 descriptors: the part's files cannot all be open at once.
    summary = _get_json(tmp_path / "h", swarm, "photos", out, max_open_files=256)
    assert summary["verified"] and summary["chunks_done"] == 400
    for path in root.rglob("*.jpg"):
        assert (out / "photos" / path.relative_to(root)).read_bytes() == path.read_bytes()
