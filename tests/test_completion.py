"""`swarmshare completion SHELL`: the script, and bash completing commands and options with it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def swarmshare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarmshare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _bash_completes(tmp_path: Path, words: str) -> list[str]:
    """What bash, with the printed script sourced, offers for the last of `words`."""
    script = swarmshare("completion", "bash")
    assert script.returncode == 0, script.stderr
    (tmp_path / "swarmshare.bash").write_text(script.stdout)
    shim = tmp_path / "bin" / "swarmshare"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m swarmshare "$@"\n')
    shim.chmod(0o755)
    program = "\n".join(
        [
            f"source {tmp_path / 'swarmshare.bash'}",
            f"COMP_WORDS=({words})",
            "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))",
            "_swarmshare_completion swarmshare",
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ]
    )
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_bash_completes_commands_subcommands_and_options(tmp_path: Path) -> None:
    assert _bash_completes(tmp_path, "swarmshare se") == ["send", "service"]
    assert _bash_completes(tmp_path, "swarmshare service ''") == ["install", "status", "uninstall"]
    assert _bash_completes(tmp_path, "swarmshare run --disc") == ["--discovery-port"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_a_script_that_parses(shell: str) -> None:
    proc = swarmshare("completion", shell)
    assert proc.returncode == 0, proc.stderr
    assert f"_SWARMSHARE_COMPLETE={shell}_complete" in proc.stdout
    if shutil.which(shell) is not None:
        check = [shell, "-n"] if shell != "fish" else ["fish", "--no-execute"]
        parsed = subprocess.run(
            check, input=proc.stdout, capture_output=True, text=True, timeout=60
        )
        assert parsed.returncode == 0, parsed.stderr


def test_an_unknown_shell_is_refused() -> None:
    proc = swarmshare("completion", "tcsh")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in proc.stderr
