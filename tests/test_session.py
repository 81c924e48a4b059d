"""One session, two ways: the same scripted CLI sequence with and without a running peer.

Every step is a real `swarmshare` process against real peer processes on loopback. A step's exit
code and the words it says must not depend on whether a daemon runs for the home.
Interrupts are deterministic: the seeders are throttled (--upload-limit) and the SIGINT is sent
once the part file's resume record says chunks are in, never after a fixed time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from swarmshare.app.loopback import spare_port

from conftest import Swarm
from helpers import PeerProcess, cli, swarmshare_command, wait_until, write_test_file

KIB = 1024
SEED = Path(__file__).parent / "seed"
THROTTLE = "256K"  # bytes/s per seeder: a 1 MiB file takes seconds, a chunk a fraction


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _seed_scripts(root: Path, swarm: Swarm, legacy_port: int) -> list[subprocess.Popen[str]]:
    host = root / "seedhost"
    host.mkdir()
    write_test_file(host / "cat.png", 50 * KIB, seed=7)
    procs = []
    for args in (
        ["announcer", "cat", "127.0.0.9", "127.255.255.255", str(swarm.discovery_port), "0.3"],
        ["uploader", "127.0.0.9", str(legacy_port)],
    ):
        procs.append(
            subprocess.Popen(
                [sys.executable, str(SEED / f"{args[0]}.py"), *args[1:]],
                cwd=host,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
    assert procs[1].stdout is not None and procs[1].stdout.readline().strip() == "listening"
    return procs


class Script:
    """Runs the sequence for one way of reaching the app, recording what each step said."""

    def __init__(self, swarm: Swarm, root: Path, daemon: bool, legacy_port: int) -> None:
        self.swarm = swarm
        self.root = root
        self.home = root / "home"
        self.out = root / "out"
        self.out.mkdir(parents=True)
        self.legacy_port = legacy_port
        self.daemon: PeerProcess | None = None
        if daemon:
            self.daemon = swarm.start(
                20, "--legacy", "--legacy-port", str(legacy_port), interval=0.5
            )
            self.home = self.daemon.home
        self.said: list[tuple[str, int, str]] = []

    def args(self, *args: str) -> list[str]:
        """A get-like command line, the same both ways (a daemon ignores discovery options)."""
        return [*args, *self.swarm.discovery(), "--legacy-port", str(self.legacy_port)]

    def run(self, step: str, *args: str, expect: int) -> subprocess.CompletedProcess[str]:
        proc = cli(self.home, *args, timeout=120)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == expect, (step, proc.returncode, proc.stdout, proc.stderr)
        self.said.append((step, proc.returncode, _words(proc.stderr)))
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            swarmshare_command(self.home, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def finish(self, step: str, proc: subprocess.Popen[str], expect: int) -> str:
        stdout, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
        assert proc.returncode == expect, (step, proc.returncode, stdout, stderr)
        self.said.append((step, proc.returncode, _words(stderr)))
        return stdout

    def chunks_in(self, name: str) -> int:
        """Chunks the resume record of out/NAME says are in (0 before it exists)."""
        record = self.out / f"{name}.part.swarmshare"
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return 0
        return sum(bin(byte).count("1") for byte in base64.b64decode(data["have"]))


def _words(stderr: str) -> str:
    """What a step said, without what differs between runs (paths, IDs, numbers, bars)."""
    lines = [line for line in stderr.splitlines() if line.startswith(("error:", "paused", "note"))]
    text = " ".join(lines)
    return " ".join(w for w in text.split() if not any(c.isdigit() or c == "/" for c in w))


def _sequence(swarm: Swarm, root: Path, daemon: bool, legacy_port: int) -> list[tuple]:  # type: ignore[type-arg]
    s = Script(swarm, root, daemon, legacy_port)
    # 1. A name two different contents carry is refused, with the candidates.
    proc = s.run(
        "ambiguous", "get", *s.args("report.pdf", "-o", f"{s.out}/", "--wait", "5"), expect=1
    )
    assert "2 different contents" in proc.stderr and proc.stderr.count("report.pdf") >= 3
    # 2. A name nobody has.
    proc = s.run("missing", "get", *s.args("nothing-here", "--wait", "1"), expect=1)
    assert "nothing called 'nothing-here'" in proc.stderr
    # 3. SIGINT in the middle of a throttled download: paused, acknowledged, part kept.
    getter = s.start("get", *s.args("big.bin", "-o", f"{s.out}/", "--wait", "10"))
    wait_until(lambda: s.chunks_in("big.bin") >= 2 or getter.poll() is not None, timeout=60)
    assert getter.poll() is None, "the throttled download ended before the interrupt"
    getter.send_signal(signal.SIGINT)
    s.finish("interrupt", getter, expect=130)
    part = s.out / "big.bin.part"
    frozen = _sha(part)
    # 4. The paused download is listed, and the part file no longer changes.
    listed = json.loads(s.run("downloads", "downloads", "--json", expect=0).stdout)
    entry = next(d for d in listed if d["name"] == "big.bin")
    assert entry["state"] == "paused", entry
    assert _sha(part) == frozen, "the part file changed after the pause was acknowledged"
    # 5. The same command again resumes, byte-exact, keeping what was verified.
    proc = s.run("resume", "get", *s.args("big.bin", "-o", f"{s.out}/", "--json"), expect=0)
    stats = json.loads(proc.stdout)
    assert stats["resumed_chunks"] >= 2 and stats["state"] == "done", stats
    # What this run fetched, not what an earlier run had: the rate is of this run's bytes.
    assert stats["fetched_bytes"] <= stats["total_bytes"] - stats["resumed_chunks"] * 64 * KIB
    assert _sha(s.out / "big.bin") == _sha(root.parent / "files" / "big.bin")
    # 6. Interrupt another, then cancel it: the part file is gone.
    getter = s.start("get", *s.args("other.bin", "-o", f"{s.out}/", "--wait", "10"))
    wait_until(lambda: s.chunks_in("other.bin") >= 1 or getter.poll() is not None, timeout=60)
    assert getter.poll() is None
    getter.send_signal(signal.SIGINT)
    s.finish("interrupt again", getter, expect=130)
    s.run("cancel", "cancel", str(entry_id(s, "other.bin")), expect=0)
    assert not (s.out / "other.bin.part").exists()
    assert not (s.out / "other.bin.part.swarmshare").exists()
    # 7. --wait bounds every wait for a holder: the only holder leaves mid-download.
    getter = s.start("get", *s.args("solo.bin", "-o", f"{s.out}/", "--wait", "2"))
    wait_until(lambda: s.chunks_in("solo.bin") >= 1 or getter.poll() is not None, timeout=60)
    assert getter.poll() is None
    solo = next(p for p in swarm.peers if p.index == 4)
    solo.stop()
    s.finish("holder left", getter, expect=1)
    assert (s.out / "solo.bin.part").exists(), "a paused download keeps its part file"
    solo.start()
    # 8. A content of the original scripts' peers, unverified and said so.
    proc = s.run("seed", "get", *s.args("cat", "-o", f"{s.out}/", "--wait", "10"), expect=0)
    assert "UNVERIFIED" in proc.stdout and "no hashes" in proc.stderr
    assert _sha(s.out / "cat.png") == _sha(root.parent / "seedhost" / "cat.png")
    if s.daemon is not None:
        s.daemon.stop()
        swarm.peers.remove(s.daemon)
    return s.said


def entry_id(s: Script, name: str) -> str:
    listed = json.loads(cli(s.home, "downloads", "--json").stdout)
    return str(next(d["id"] for d in listed if d["name"] == name))[:12]


@pytest.mark.slow
def test_same_sequence_with_and_without_a_daemon(swarm: Swarm, tmp_path: Path) -> None:
    files = tmp_path / "files"
    for folder in ("a", "b"):
        (files / folder).mkdir(parents=True)
        (files / folder / "report.pdf").write_text(f"report {folder}")
    write_test_file(files / "big.bin", 1024 * KIB, seed=1)
    write_test_file(files / "other.bin", 1024 * KIB, seed=2)
    write_test_file(files / "solo.bin", 1024 * KIB, seed=3)
    legacy_port = spare_port()
    seeds = _seed_scripts(tmp_path, swarm, legacy_port)
    try:
        holder = swarm.start(2, "--upload-limit", THROTTLE, interval=0.5)
        holder.cli("share", str(files / "a" / "report.pdf"), str(files / "b" / "report.pdf"))
        holder.cli("share", str(files / "big.bin"), str(files / "other.bin"))
        solo = swarm.start(4, "--upload-limit", THROTTLE, interval=0.5)
        solo.cli("share", str(files / "solo.bin"))
        without = _sequence(swarm, tmp_path / "without", False, legacy_port)
        with_daemon = _sequence(swarm, tmp_path / "with", True, legacy_port)
    finally:
        for proc in seeds:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    assert [step for step, _, _ in without] == [step for step, _, _ in with_daemon]
    for a, b in zip(without, with_daemon, strict=True):
        assert a == b, f"differs with a daemon: {a} vs {b}"
