"""The `share`, `unshare` and `library` commands as real processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import assert_one_line_error, cli


def test_share_list_unshare(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "cat.png").write_bytes(os.urandom(100_000))
    odd = tmp_path / "my file 'quoted' — ünïcode.txt"
    odd.write_text("odd")
    proc = cli(home, "share", str(tmp_path / "cat.png"), str(odd))
    assert proc.returncode == 0, proc.stderr
    assert "cat.png" in proc.stdout and odd.name in proc.stdout
    listed = json.loads(cli(home, "library", "--json").stdout)
    assert sorted(item["name"] for item in listed) == sorted(["cat.png", odd.name])
    assert all(item["intact"] for item in listed)
    again = cli(home, "share", str(tmp_path / "cat.png"))
    assert "(unchanged)" in again.stdout
    proc = cli(home, "unshare", "cat.png")
    assert proc.returncode == 0 and "unshared" in proc.stdout
    assert [i["name"] for i in json.loads(cli(home, "library", "--json").stdout)] == [odd.name]


def test_bad_input_gets_one_clear_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert_one_line_error(cli(home, "share", str(tmp_path / "missing.iso")), "no such file")
    assert_one_line_error(cli(home, "share", "/dev/null"), "not a regular file")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_one_line_error(cli(home, "share", str(fifo)), "not a regular file")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert_one_line_error(cli(home, "share", str(loop)))
    assert_one_line_error(cli(home, "unshare", "abcdef123"), "nothing called")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("1")
    (tmp_path / "b" / "x.txt").write_text("2")
    assert (
        cli(home, "share", str(tmp_path / "a" / "x.txt"), str(tmp_path / "b" / "x.txt")).returncode
        == 0
    )
    proc = cli(home, "unshare", "x.txt")
    assert_one_line_error(proc, "2 different contents")
    assert proc.stderr.count("x.txt") >= 3  # the candidates are listed
    assert len(json.loads(cli(home, "library", "--json").stdout)) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    secret.chmod(0)
    assert_one_line_error(cli(tmp_path / "home", "share", str(secret)), "permission denied")


def test_version_and_help(tmp_path: Path) -> None:
    assert "swarmshare" in cli(tmp_path, "--version").stdout
    for command in ("share", "unshare", "library"):
        proc = cli(tmp_path, command, "--help")
        assert proc.returncode == 0 and "Usage" in proc.stdout
