"""What the commands show and take: remote strings as text, options, logging, ports."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from swarmshare.app.loopback import spare_port

from conftest import Swarm
from helpers import (
    PeerProcess,
    assert_one_line_error,
    cli,
    control,
    wait_until,
)

BIDI = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: 'exe.txt' shown as 'txt.exe'
CSI = "\x9b"  # a C1 control: the terminal's escape sequence introducer
ZWSP = "\u200b"  # ZERO WIDTH SPACE


def swarmshare(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`swarmshare ARGS` with no --home put in front."""
    environ = {k: v for k, v in os.environ.items() if k != "SWARMSHARE_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "swarmshare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_remote_names_are_shown_as_text(swarm: Swarm, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    names = ["[draft] notes.txt", "song [red]x.txt", f"rtl{BIDI}txt.exe", f"z{ZWSP}w{CSI}2J.txt"]
    for index, name in enumerate(names):
        (files / name).write_text(f"content {index}")
    seeder = swarm.start(2, "--name", "[/x]")
    proc = seeder.cli("share", *(str(files / name) for name in names))
    assert proc.returncode == 0, proc.stderr
    shown = ["[draft] notes.txt", "song [red]x.txt", "rtl\\u202etxt.exe", "z\\u200bw\\x9b2J.txt"]
    for name in shown:
        assert name in proc.stdout
    here = tmp_path / "client"

    peers = cli(here, "peers", "--wait", "5", *swarm.discovery())
    assert peers.returncode == 0, peers.stderr
    assert "[/x]" in peers.stdout and "Traceback" not in peers.stderr

    listed = cli(here, "ls", "--wait", "5", *swarm.discovery())
    assert listed.returncode == 0, listed.stderr
    for name in shown:
        assert name in listed.stdout, listed.stdout
    assert BIDI not in listed.stdout and CSI not in listed.stdout and ZWSP not in listed.stdout

    got = cli(here, "get", "[draft] notes.txt", "-o", str(tmp_path / "got.txt"), *swarm.discovery())
    assert got.returncode == 0, got.stderr
    assert "got [draft] notes.txt" in got.stdout
    got = cli(here, "get", names[2], "-o", str(tmp_path / "rtl.txt"), *swarm.discovery())
    assert got.returncode == 0, got.stderr
    assert "got rtl\\u202etxt.exe" in got.stdout and BIDI not in got.stdout

    transfers = cli(here, "log")
    assert "[draft] notes.txt" in transfers.stdout and "rtl\\u202etxt.exe" in transfers.stdout
    status = seeder.cli("status")
    assert "'[/x]'" in status.stdout, status.stdout

    (files / "[draft] notes.txt").unlink()
    library = seeder.cli("library")
    assert "[draft] notes.txt [changed on disk]" in library.stdout, library.stdout
    assert "rtl\\u202etxt.exe" in library.stdout and BIDI not in library.stdout


def test_a_remote_string_in_an_error_is_text(tmp_path: Path) -> None:
    proc = cli(tmp_path / "home", "unshare", "[/x] [bold]no")
    assert_one_line_error(proc, "[/x] [bold]no")


def test_global_options_work_after_the_command(tmp_path: Path) -> None:
    home, other = tmp_path / "home", tmp_path / "other"
    (tmp_path / "a.txt").write_text("a")
    assert cli(home, "share", str(tmp_path / "a.txt")).returncode == 0
    after = swarmshare("library", "--home", str(home), "--json")
    assert after.returncode == 0, after.stderr
    assert [item["name"] for item in json.loads(after.stdout)] == ["a.txt"]
    # After the command beats before it, and both beat the environment.
    both = swarmshare("--home", str(other), "library", "--json", "--home", str(home))
    assert [item["name"] for item in json.loads(both.stdout)] == ["a.txt"]
    env = swarmshare("library", "--json", env={"SWARMSHARE_HOME": str(other)})
    assert json.loads(env.stdout) == []
    for args in (("-v", "library", "--json"), ("library", "-q", "--json"), ("library", "-vv")):
        proc = swarmshare("--home", str(home), *args)
        assert proc.returncode == 0, proc.stderr


def test_each_command_shows_only_its_own_options(tmp_path: Path) -> None:
    helps = {c: cli(tmp_path, c, "--help").stdout for c in ("ls", "peers", "get", "run", "log")}
    for command in ("ls", "peers", "get"):
        assert "--interval" not in helps[command] and "--name" not in helps[command]
        assert "to serve on" not in helps[command], helps[command]
        assert "--home" in helps[command] and "--verbose" in helps[command]
    assert "--chunk-timeout" not in helps["ls"] and "--chunk-timeout" not in helps["peers"]
    assert "--chunk-timeout" in helps["get"]
    for option in ("--interval", "--name", "--chunk-timeout", "--control-port"):
        assert option in helps["run"]
    assert "Local address to serve on" in helps["run"]
    limit_help = helps["log"].split("--limit", 1)[1].split("\n  --", 1)[0]
    assert "newest" in limit_help and "seed" in limit_help
    refused = cli(tmp_path, "ls", "--wait", "-5")
    assert refused.returncode == 2 and "Invalid value for '--wait'" in refused.stderr


def test_log_format_seed_writes_every_entry(tmp_path: Path) -> None:
    from swarmshare.store.db import Database, transfer_row

    home = tmp_path / "home"
    db = Database.open_home(home)
    rows = [
        transfer_row("up", "127.0.0.9", "ab" * 32, "movie.mkv", index, 1024, "ok")
        for index in range(120)
    ]
    db.log_transfers(rows)
    db.close()
    proc = cli(home, "log", "--format", "seed", "--dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "out" / "Upload_log.txt").read_text().splitlines()) == 120
    proc = cli(home, "log", "--format", "seed", "--limit", "7", "--dir", str(tmp_path / "o7"))
    assert len((tmp_path / "o7" / "Upload_log.txt").read_text().splitlines()) == 7
    assert len(json.loads(cli(home, "log", "--json").stdout)) == 50


def test_bind_names_the_real_cause(swarm: Swarm, tmp_path: Path) -> None:
    common = ["--port", "0", "--control-port", "0", *swarm.discovery()[:4]]
    proc = cli(tmp_path / "a", "run", "--bind", "10.99.99.99", *common, timeout=30)
    assert_one_line_error(proc, "10.99.99.99 is not an address of this machine")
    assert "another swarmshare" not in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["run", "--bind", "127.0.0.2", *common, "--port", str(port)]
        proc = cli(tmp_path / "b", *args, timeout=30)
    assert_one_line_error(proc, f"another program uses port {port}")


def without_control_port(peer: PeerProcess) -> PeerProcess:
    at = peer.args.index("--control-port")
    del peer.args[at : at + 2]
    return peer


def test_peers_of_one_host_find_a_free_control_port(tmp_path: Path) -> None:
    port = spare_port()
    first = without_control_port(PeerProcess(tmp_path, 2, port))
    second = without_control_port(PeerProcess(tmp_path, 3, port))
    try:
        first.start()
        second.start()
        ports = {
            json.loads((peer.home / "control.json").read_text())["port"] for peer in (first, second)
        }
        assert len(ports) == 2
        for peer in (first, second):
            status = peer.cli("status", "--json")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["control_port"] in ports
        taken = ports.pop()
        third = PeerProcess(tmp_path, 4, port, "--control-port", str(taken))
        proc = cli(third.home, *third.args, timeout=30)
        assert_one_line_error(proc, f"another program uses port {taken}", "--control-port")
    finally:
        for peer in (first, second):
            if peer.proc is not None:
                peer.stop()


def test_run_logs_with_levels_to_a_private_file_and_keeps_the_token_out(
    swarm: Swarm,
) -> None:
    loud = swarm.start(2, "-v")
    quiet = swarm.start(3, "-q")
    for peer in (loud, quiet):
        token = json.loads((peer.home / "control.json").read_text())["token"]
        log_file = peer.home / "swarmshare.log"
        wait_until(lambda f=log_file: f.exists() and "sharing 0 item(s)" in f.read_text())
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
        text = log_file.read_text()
        assert "web page: http://127.0.0.1:" in text and "swarmshare open" in text
        assert token not in text and token not in peer.log()
    assert "serving on" in loud.log() and "DEBUG" not in loud.log()
    assert "Using selector" in loud.log()  # a debug line: -v after the command works
    assert "serving on" not in quiet.log()  # -q: warnings only on the console


def test_closed_event_streams_end_quietly(swarm: Swarm) -> None:
    import http.client

    peer = swarm.start(2, "-v")
    info = json.loads((peer.home / "control.json").read_text())
    conn = http.client.HTTPConnection("127.0.0.1", info["port"], timeout=10)
    conn.request("GET", "/api/events", headers={"Authorization": f"Bearer {info['token']}"})
    reply = conn.getresponse()
    assert reply.status == 200
    assert reply.read(6) == b"data: "
    conn.close()
    reply.close()

    def ended() -> bool:
        control(peer.home, "POST", "reload", {})  # wakes the stream, which then writes
        return "page closed its event stream" in peer.log()

    wait_until(ended, timeout=20, interval=0.3)
    assert "Traceback" not in peer.log() and "ConnectionResetError" not in peer.log()
