"""Helpers shared by the tests: running the real `swarmshare` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(
    home: Path,
    *args: str,
    timeout: float = 60,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `swarmshare --home HOME ARGS...` as a real process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "swarmshare", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A failed command: non-zero exit, an error line naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "error:" in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
