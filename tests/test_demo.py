"""`swarmshare demo`, the README's main job, as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_a_loopback_swarm_and_cleans_up(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "swarmshare", "demo", "--size", "8", "--peers", "3"],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "every peer found the other 2" in out
    assert out.count("identical") >= 1 and "DIFFERENT" not in out
    assert "identical: True" in out  # cat.png
    assert "127.0.0.2" in out and "127.0.0.3" in out  # both seeders served chunks
    assert "all demo processes stopped" in out
    # Before: the downloader sees the seeders holding the file; after: a seeder sees the
    # downloader holding both files.
    before, after = out.split("Swarming")

    def held_by(text: str, name: str) -> str:
        return next(line for line in text.splitlines() if f"  {name}  " in line).rstrip()

    assert held_by(before, "demo-video.bin").endswith("peer-1, peer-2")
    swarming = after.split(">>")[0]
    assert held_by(swarming, "demo-video.bin").endswith("peer-2, peer-3")
    assert held_by(swarming, "cat.png").endswith("peer-3")
    leftover = subprocess.run(["pgrep", "-f", "swarmshare-demo-"], capture_output=True)
    assert leftover.stdout == b"", "demo peers left running"
