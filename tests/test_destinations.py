"""Where `get` writes, what it says when the content is already there, and the download commands.

Real peer processes on loopback, real files; each case failed before the rules below existed:
- `-o DIR/` (a trailing slash) is a folder, created if missing; a file path needs its folder;
- a content already complete at its destination, file or folder, is said to be there;
- an existing different file or folder is replaced only with --force, and nothing is left over;
- `downloads`, `pause`, `resume` and `cancel` drive a running peer's downloads.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import Swarm
from helpers import cli, control, swarmshare_command, wait_until, write_test_file


def _get(swarm: Swarm, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(home, "get", *args, *swarm.discovery(), "--wait", "5")


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_trailing_slash_is_a_folder_created_if_missing(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(os.urandom(70_000))
    swarm.start(2).cli("share", str(src))
    home = tmp_path / "h"
    proc = _get(swarm, home, "notes.txt", "-o", f"{tmp_path / 'newdir'}/")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "newdir").is_dir()
    assert (tmp_path / "newdir" / "notes.txt").read_bytes() == src.read_bytes()
    proc = _get(swarm, home, "notes.txt", "-o", f"{tmp_path / 'deep' / 'a' / 'b'}/")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "deep" / "a" / "b" / "notes.txt").read_bytes() == src.read_bytes()
    proc = _get(swarm, home, "notes.txt", "-o", str(tmp_path / "nowhere" / "n.txt"))
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "/" in proc.stderr
    assert not (tmp_path / "nowhere").exists()


def test_already_there_is_said_for_a_file_and_a_folder(swarm: Swarm, tmp_path: Path) -> None:
    album = tmp_path / "album"
    (album / "cd1").mkdir(parents=True)
    write_test_file(album / "cd1" / "01.flac", 300_000, seed=1)
    write_test_file(album / "cover.png", 5_000, seed=2)
    single = tmp_path / "single.bin"
    write_test_file(single, 200_000, seed=3)
    seeder = swarm.start(2)
    seeder.cli("share", str(album), str(single))
    out = tmp_path / "out"
    out.mkdir()
    home = tmp_path / "h"
    for name in ("album", "single.bin"):
        assert _get(swarm, home, name, "-o", str(out)).returncode == 0
        again = _get(swarm, home, name, "-o", str(out), "--json")
        assert again.returncode == 0, again.stderr
        stats = json.loads(again.stdout)
        assert stats["already_there"] and stats["fetched_bytes"] == 0, stats
        said = _get(swarm, home, name, "-o", str(out))
        assert said.returncode == 0 and said.stdout.startswith("already there:"), said.stdout
        assert str(out / name) in said.stdout
    assert _same_tree(out / "album", album)


def test_force_replaces_a_different_file_or_folder_and_leaves_nothing(
    swarm: Swarm, tmp_path: Path
) -> None:
    album = tmp_path / "album"
    (album / "cd1").mkdir(parents=True)
    write_test_file(album / "cd1" / "01.flac", 300_000, seed=4)
    single = tmp_path / "single.bin"
    write_test_file(single, 200_000, seed=5)
    swarm.start(2).cli("share", str(album), str(single))
    out = tmp_path / "out"
    (out / "album").mkdir(parents=True)
    (out / "album" / "mine.txt").write_text("someone else's folder")
    (out / "single.bin").write_text("someone else's file")
    home = tmp_path / "h"
    for name in ("album", "single.bin"):
        proc = _get(swarm, home, name, "-o", str(out))
        assert proc.returncode == 1 and "--force" in proc.stderr, proc.stderr
    assert (out / "album" / "mine.txt").exists() and "else" in (out / "single.bin").read_text()
    for name in ("album", "single.bin"):
        proc = _get(swarm, home, name, "-o", str(out), "--force")
        assert proc.returncode == 0, proc.stderr
    assert _same_tree(out / "album", album)
    assert (out / "single.bin").read_bytes() == single.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["album", "single.bin"], "nothing left over"


def test_download_commands_drive_a_running_peer(swarm: Swarm, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    write_test_file(big, 2 << 20, seed=6)
    swarm.start(2, "--upload-limit", "256K", interval=0.5).cli("share", str(big))
    me = swarm.start(3, interval=0.5)
    out = tmp_path / "out"
    out.mkdir()
    getter = subprocess.Popen(
        swarmshare_command(me.home, "get", "big.bin", "-o", str(out), "--quiet"),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    record = out / "big.bin.part.swarmshare"
    wait_until(lambda: record.exists() or getter.poll() is not None, timeout=60)
    assert getter.poll() is None
    getter.send_signal(signal.SIGINT)
    _, stderr = getter.communicate(timeout=60)
    assert getter.returncode == 130 and "paused" in stderr

    def listed() -> dict[str, object]:
        found = json.loads(me.cli("downloads", "--json").stdout)
        return next(d for d in found if d["name"] == "big.bin")

    entry = listed()
    assert entry["state"] == "paused"
    ref = str(entry["id"])[:12]
    table = me.cli("downloads")
    assert "big.bin" in table.stdout and "paused" in table.stdout
    resumed = me.cli("resume", ref)
    assert resumed.returncode == 0 and listed()["state"] != "paused", resumed.stderr
    paused = me.cli("pause", ref)
    assert paused.returncode == 0 and listed()["state"] == "paused", paused.stderr
    cancelled = me.cli("cancel", ref)
    assert cancelled.returncode == 0, cancelled.stderr
    assert not (out / "big.bin.part").exists() and not record.exists()
    assert all(d["name"] != "big.bin" for d in json.loads(me.cli("downloads", "--json").stdout))
    missing = me.cli("pause", "ffffffff")
    assert missing.returncode == 1 and "no download" in missing.stderr


def test_a_missing_download_folder_is_created_on_first_use(swarm: Swarm, tmp_path: Path) -> None:
    """The page's Download goes to the download folder; one that does not exist (a fresh
    account's ~/Downloads) is created, not an error far from the click."""
    src = tmp_path / "notes.txt"
    src.write_bytes(os.urandom(20_000))
    swarm.start(2, interval=0.5).cli("share", str(src))
    me = swarm.start(3, interval=0.5)
    folder = tmp_path / "fresh" / "Downloads"
    assert control(me.home, "POST", "settings", {"downloads_dir": str(folder)})
    folder.rmdir()  # saved while it existed; gone by the first download
    wait_until(lambda: any(i["name"] == "notes.txt" for i in me.json("ls")), timeout=30)
    started = control(me.home, "POST", "downloads", {"ref": "notes.txt"})
    wait_until(
        lambda: control(me.home, "GET", f"downloads/{started['id']}")["state"] == "done",
        timeout=60,
    )
    assert (folder / "notes.txt").read_bytes() == src.read_bytes()
