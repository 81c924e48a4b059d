"""`swarmshare service`: the systemd user unit it writes, and what it asks systemctl. Never the
machine's own systemd: a fake systemctl on PATH records what it is asked."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swarmshare.service import systemd_quote, unit_text

from helpers import assert_one_line_error

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  *show-environment*) {show} ;;
  *is-enabled*) echo enabled ;;
  *is-active*) echo active ;;
esac
exit 0
"""
FAKE_LOGINCTL = "#!/bin/sh\necho no\n"


def _bin(tmp_path: Path, manager_runs: bool) -> Path:
    """A folder holding only a fake systemctl and loginctl."""
    folder = tmp_path / "bin"
    folder.mkdir()
    show = (
        "echo HOME=/x"
        if manager_runs
        else "echo 'Failed to connect to bus: No medium found' >&2; exit 1"
    )
    for name, text in (
        ("systemctl", FAKE_SYSTEMCTL.format(log=tmp_path / "systemctl.log", show=show)),
        ("loginctl", FAKE_LOGINCTL),
    ):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def swarmshare(
    tmp_path: Path, *args: str, path: str, config_home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSHARE_")}
    env.update(
        PATH=path,
        XDG_CONFIG_HOME=str(config_home or tmp_path / "xdg"),
        COLUMNS="200",
    )
    return subprocess.run(
        [sys.executable, "-m", "swarmshare", "--home", str(tmp_path / "my home"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _exec_words(exec_start: str) -> list[str]:
    """ExecStart= split as systemd splits it (for the quoting unit_text uses)."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(exec_start)]


def test_the_unit_restarts_on_failure_and_runs_these_words() -> None:
    argv = ["/opt/py 3/bin/python", "-m", "swarmshare", "--home", '/srv/50% "shared"$x', "run"]
    unit = _unit(unit_text(argv))
    assert unit.sections() == ["Unit", "Service", "Install"]
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "default.target"
    assert _exec_words(unit["Service"]["ExecStart"]) == argv
    assert systemd_quote("50%") == "50%%" and systemd_quote("a b") == '"a b"'


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    home = tmp_path / "a home with 100% spaces"
    proc = swarmshare(
        tmp_path, "--home", str(home), "service", "install", "--print", path=os.environ["PATH"]
    )
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "swarmshare.service"
    unit.write_text(proc.stdout)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert "swarmshare.service" not in verify.stdout + verify.stderr, verify.stderr
    words = _exec_words(_unit(proc.stdout)["Service"]["ExecStart"])
    assert words == [sys.executable, "-m", "swarmshare", "--home", str(home), "run"]


def test_without_a_user_manager_install_says_so_and_changes_nothing(tmp_path: Path) -> None:
    folder = _bin(tmp_path, manager_runs=False)
    proc = swarmshare(tmp_path, "service", "install", path=str(folder))
    assert_one_line_error(
        proc, "systemd is not available here", "no systemd user manager", "install --print"
    )
    assert not (tmp_path / "xdg").exists()
    status = swarmshare(tmp_path, "service", "status", path=str(folder))
    assert status.returncode == 0, status.stderr
    assert "systemd is not available here" in status.stdout
    assert "loginctl enable-linger" in status.stdout


def test_without_systemctl_install_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = swarmshare(tmp_path, "service", "install", path=str(empty))
    assert_one_line_error(proc, "systemd is not available here (no systemctl)")


def test_install_writes_enables_and_uninstall_removes(tmp_path: Path) -> None:
    folder = _bin(tmp_path, manager_runs=True)
    config = tmp_path / "config.toml"
    config.write_text('name = "desk"\n')
    proc = swarmshare(tmp_path, "--config", str(config), "service", "install", path=str(folder))
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "xdg" / "systemd" / "user" / "swarmshare.service"
    assert f"wrote {unit}" in proc.stdout
    assert "loginctl enable-linger" in proc.stdout  # the fake loginctl says linger is off
    words = _exec_words(_unit(unit.read_text())["Service"]["ExecStart"])
    assert words == [
        sys.executable, "-m", "swarmshare", "--home", str(tmp_path / "my home"),
        "--config", str(config), "run",
    ]  # fmt: skip
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert calls[-2:] == ["--user daemon-reload", "--user enable --now swarmshare.service"]
    status = swarmshare(tmp_path, "service", "status", path=str(folder))
    assert "enabled: enabled, active: active" in status.stdout
    gone = swarmshare(tmp_path, "service", "uninstall", path=str(folder))
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists() and f"removed {unit}" in gone.stdout
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert "--user disable --now swarmshare.service" in calls
    assert calls[-1] == "--user daemon-reload"


def test_a_bad_config_file_is_refused_before_any_unit_is_written(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("prot = 1\n")
    proc = swarmshare(
        tmp_path, "service", "install", "--print", "--config", str(config), path=os.environ["PATH"]
    )
    assert_one_line_error(proc, f"config file {config}, line 1: unknown key 'prot'")
