"""The daemon's files in its home: the single-instance lock and the control-port file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from swarmshare.errors import DaemonError

LOCK_FILE = "daemon.lock"
CONTROL_FILE = "control.json"


@dataclass(frozen=True, slots=True)
class ControlInfo:
    """How the CLI reaches a running daemon: its control port, token and pid."""

    port: int
    token: str
    pid: int


class HomeLock:
    """An exclusive lock on a home, so that only one daemon uses it."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise DaemonError naming the daemon that holds it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DaemonError(
                f"a swarmshare daemon (pid {holder}) is already running with home "
                f"{self.path.parent}; stop it first or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def new_token() -> str:
    """A fresh secret for the control API."""
    return secrets.token_urlsafe(32)


def write_control_file(home: Path, port: int, token: str) -> None:
    """Record the control port and token, readable by this user alone."""
    path = home / CONTROL_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"port": port, "token": token, "pid": os.getpid()}, handle)
    os.replace(tmp, path)


def remove_control_file(home: Path) -> None:
    """Forget the control port (at shutdown)."""
    with contextlib.suppress(FileNotFoundError):
        (home / CONTROL_FILE).unlink()


def read_control_file(home: Path) -> ControlInfo | None:
    """The running daemon's control info, or None when no daemon runs for this home."""
    try:
        obj = json.loads((home / CONTROL_FILE).read_text())
        info = ControlInfo(int(obj["port"]), str(obj["token"]), int(obj["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info
