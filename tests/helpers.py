"""Helpers shared by the tests: running the real `swarmshare` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from swarmshare.app.loopback import LoopbackPeer

# The page tests drive Debian's chromium through playwright: launch it with
# `executable_path=CHROMIUM, args=ARGS`, and mark the tests `needs_chromium`.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.async_api import async_playwright as async_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    async_playwright = None  # type: ignore[assignment]

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or async_playwright is None,
    reason="needs Debian's chromium (scripts/check installs it as root) and playwright",
)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


class PeerProcess(LoopbackPeer):
    """A real `swarmshare run` process on 127.0.0.`index`, home ROOT/peer`index`, with the
    tests' conveniences: CLI commands against its home."""

    def __init__(
        self,
        root: Path,
        index: int,
        discovery_port: int,
        *extra: str,
        interval: float = 30.0,
        name: str | None = None,
    ) -> None:
        super().__init__(
            root / f"peer{index}",
            f"127.0.0.{index}",
            discovery_port,
            *extra,
            name=name or f"peer{index}",
            interval=interval,
        )
        self.index = index

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a CLI command against this peer's home."""
        return cli(self.home, *args, timeout=timeout)

    def json(self, *args: str) -> Any:
        """Run a CLI command with --json and parse its output."""
        import json

        proc = self.cli(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def wait_until(
    predicate: Callable[..., object], timeout: float = 15.0, interval: float = 0.05
) -> float:
    """Poll `predicate()` until true; the seconds it took. Fails the test at `timeout`."""
    import time

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


def control(home: Path, method: str, path: str, body: object = None) -> Any:
    """Call a daemon's control API directly (fast polling in tests)."""
    import http.client
    import json

    info = json.loads((home / "control.json").read_text())
    conn = http.client.HTTPConnection("127.0.0.1", info["port"], timeout=30)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {info['token']}"}
        conn.request(method, "/api/" + path, payload, headers)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()  # also when the call fails: a socket left to the collector fails a later test
