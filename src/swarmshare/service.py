"""`swarmshare run` as a systemd user service: the unit file, and systemctl to install it.

The unit follows Syncthing's `syncthing.service`: restart on failure after a short pause, give
up after a burst of failures in a minute, and start with the user's session (default.target).
A user service stops when the user logs out unless the user "lingers" (loginctl enable-linger),
which is also what starts it at boot without anyone logging in.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

import platformdirs

from swarmshare.errors import UsageError

UNIT_NAME = "swarmshare.service"
SYSTEMCTL_TIMEOUT_SECONDS = 30.0


def unit_path() -> Path:
    """Where a user unit goes: ~/.config/systemd/user/swarmshare.service (XDG_CONFIG_HOME)."""
    return Path(platformdirs.user_config_dir("systemd", appauthor=False)) / "user" / UNIT_NAME


def unit_text(argv: list[str]) -> str:
    """The unit file that runs `argv` (this installation's `swarmshare ... run`)."""
    return "\n".join(
        [
            "# Written by `swarmshare service install`; `swarmshare service uninstall` removes it.",
            "[Unit]",
            "Description=swarmshare peer: file sharing on the local network",
            "StartLimitIntervalSec=60",
            "StartLimitBurst=4",
            "",
            "[Service]",
            "ExecStart=" + " ".join(systemd_quote(arg) for arg in argv),
            "Restart=on-failure",
            "RestartSec=5",
            "# SIGTERM, the default, is an orderly stop: a goodbye, downloads paused.",
            "TimeoutStopSec=20",
            "NoNewPrivileges=true",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def systemd_quote(arg: str) -> str:
    """One command-line word as systemd reads it in ExecStart= (quotes, escapes, and the
    % of specifiers and $ of variables doubled)."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c in text for c in " \t\"'\\;"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_missing() -> str | None:
    """Why the user's systemd cannot be used here, or None when it can."""
    if shutil.which("systemctl") is None:
        return "systemd is not available here (no systemctl)"
    try:
        proc = _systemctl("show-environment")
    except OSError as exc:
        return f"systemd is not available here (systemctl: {exc.strerror})"
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no answer"])[0]
        return f"systemd is not available here: no systemd user manager runs for you ({detail})"
    return None


def install(argv: list[str]) -> list[str]:
    """Write the unit, reload, enable and start it; what was done, one line each."""
    path = unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(argv))
    done = [f"wrote {path}"]
    _check(_systemctl("daemon-reload"))
    _check(_systemctl("enable", "--now", UNIT_NAME))
    done.append(f"enabled and started {UNIT_NAME}: it starts again whenever you log in")
    return done


def uninstall() -> list[str]:
    """Stop and disable the service and remove its unit; what was done, one line each."""
    path = unit_path()
    done = []
    if systemd_missing() is None:
        _systemctl("disable", "--now", UNIT_NAME)  # fails harmlessly when it is not there
    if path.exists():
        path.unlink()
        done.append(f"removed {path}")
        if systemd_missing() is None:
            _check(_systemctl("daemon-reload"))
    else:
        done.append(f"no unit at {path}: nothing to remove")
    return done


def state() -> dict[str, object]:
    """Whether the unit is installed, enabled and running, and whether the user lingers."""
    path = unit_path()
    found: dict[str, object] = {"unit": str(path), "installed": path.exists()}
    missing = systemd_missing()
    found["systemd"] = missing or "available"
    if missing is None:
        found["enabled"] = _systemctl("is-enabled", UNIT_NAME).stdout.strip() or "unknown"
        found["active"] = _systemctl("is-active", UNIT_NAME).stdout.strip() or "unknown"
    found["linger"] = lingers()
    return found


def lingers() -> bool | None:
    """Whether this user's services run without a login (None: cannot tell)."""
    if shutil.which("loginctl") is None:
        return None
    try:
        proc = subprocess.run(
            ["loginctl", "show-user", getpass.getuser(), "--property=Linger", "--value"],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = proc.stdout.strip()
    return {"yes": True, "no": False}.get(value) if proc.returncode == 0 else None


def linger_hint() -> str:
    """How to start the service at boot, without logging in."""
    return (
        "to start it at boot without logging in (and keep it after you log out): "
        f"loginctl enable-linger {getpass.getuser()}"
    )


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["systemctl", "--user", *args],
            capture_output=True,
            text=True,
            timeout=SYSTEMCTL_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(f"systemctl --user {' '.join(args)} did not answer") from None


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[0]
        raise UsageError(f"{' '.join(map(str, proc.args))}: {detail}")
