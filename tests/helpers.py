"""Helpers shared by the tests: running the real `swarmshare` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def swarmshare_command(home: Path, *args: str) -> list[str]:
    """The argv of `swarmshare --home HOME ARGS...` run by this Python."""
    return [sys.executable, "-m", "swarmshare", "--home", str(home), *args]


def cli(
    home: Path,
    *args: str,
    timeout: float = 60,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    max_open_files: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `swarmshare --home HOME ARGS...` as a real process and capture its output
    (`max_open_files`: the process may open only that many descriptors)."""

    def limit_files() -> None:
        import resource

        if max_open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))

    return subprocess.run(
        swarmshare_command(home, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL,
        preexec_fn=limit_files if max_open_files is not None else None,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A failed command: non-zero exit, an error line naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "error:" in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def free_udp_port() -> int:
    """A UDP port that is free on this host right now (for a test's own discovery port)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


class PeerProcess:
    """A real `swarmshare run` process bound to one loopback address."""

    def __init__(
        self,
        root: Path,
        index: int,
        discovery_port: int,
        *extra: str,
        interval: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.index = index
        self.address = f"127.0.0.{index}"
        self.home = root / f"peer{index}"
        self.home.mkdir(parents=True, exist_ok=True)
        self.name = name or f"peer{index}"
        self.discovery_port = discovery_port
        self.args = [
            "run",
            "--bind",
            self.address,
            "--broadcast",
            "127.255.255.255",
            "--discovery-port",
            str(discovery_port),
            "--port",
            "0",
            "--control-port",
            "0",
            "--interval",
            str(interval),
            "--name",
            self.name,
            *extra,
        ]
        self.log_path = self.home / "run.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> PeerProcess:
        """Start the daemon; with `wait`, return once its control API answers."""
        import time

        (self.home / "control.json").unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child from here on
        self.proc = subprocess.Popen(
            swarmshare_command(self.home, *self.args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        if wait:
            deadline = time.monotonic() + 30
            while not (self.home / "control.json").exists():
                if self.proc.poll() is not None:
                    raise AssertionError(f"peer{self.index} died:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"peer{self.index} did not start:\n{self.log()}")
                time.sleep(0.02)
        return self

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a CLI command against this peer's home."""
        return cli(self.home, *args, timeout=timeout)

    def json(self, *args: str) -> object:
        """Run a CLI command with --json and parse its output."""
        import json

        proc = self.cli(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def log(self) -> str:
        """Everything the daemon printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)


def wait_until(predicate: object, timeout: float = 15.0, interval: float = 0.05) -> float:
    """Poll `predicate()` until true; the seconds it took. Fails the test at `timeout`."""
    import time

    assert callable(predicate)
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def write_test_file(path: Path, size: int, seed: int = 0) -> None:
    """A file of `size` bytes whose every 64 KiB piece differs (fast to make, no dedup)."""
    import hashlib

    block = 1 << 20
    with open(path, "wb") as handle:
        base = hashlib.sha256(f"{seed}".encode()).digest() * (block // 32)
        for index in range(0, size, block):
            piece = bytearray(base[: min(block, size - index)])
            for off in range(0, len(piece), 65536):
                stamp = hashlib.sha256(f"{seed}:{index + off}".encode()).digest()
                piece[off : off + 32] = stamp[: min(32, len(piece) - off)]
            handle.write(piece)


def same_file(a: Path, b: Path) -> bool:
    """Byte-for-byte equality, read in pieces."""
    import filecmp

    return filecmp.cmp(a, b, shallow=False)


def control(home: Path, method: str, path: str, body: object = None) -> object:
    """Call a daemon's control API directly (fast polling in tests)."""
    import http.client
    import json

    info = json.loads((home / "control.json").read_text())
    conn = http.client.HTTPConnection("127.0.0.1", info["port"], timeout=30)
    payload = None if body is None else json.dumps(body).encode()
    conn.request(method, "/api/" + path, payload, {"Authorization": f"Bearer {info['token']}"})
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data
