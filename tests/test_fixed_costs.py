"""Fixed costs of a command: what it waits for besides the work itself (events, never time)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from swarmshare.app import node as node_module
from swarmshare.app.loopback import LOOPBACK_BROADCAST, spare_port
from swarmshare.app.node import Changes, Node
from swarmshare.core.transfer import State


@dataclass
class _Stats:
    state: State = State.FETCHING

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state.value}


@dataclass
class _Download:
    stats: _Stats = field(default_factory=_Stats)

    @property
    def state(self) -> State:
        return self.stats.state


class _Transfers:
    def __init__(self) -> None:
        self.download = _Download()

    def get(self, _ref: str) -> _Download:
        return self.download


class _Watched:
    """What Node.watch reads: the change counter and the downloads."""

    def __init__(self) -> None:
        self.changes = Changes()
        self.transfers = _Transfers()


def test_a_watcher_hears_of_the_end_of_a_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates during a run are spaced out; the end is not (a get waits for it to exit)."""
    monkeypatch.setattr(node_module, "WATCH_MIN_GAP_SECONDS", 3600.0)

    async def run() -> dict[str, Any]:
        watched = _Watched()
        watch = asyncio.ensure_future(Node.watch(watched, "x", 0, 3600.0))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        watched.changes.bump()  # a chunk came in: the watcher holds its answer back
        for _ in range(5):
            await asyncio.sleep(0)
        assert not watch.done()
        watched.transfers.download.stats.state = State.DONE
        watched.changes.bump()  # the run ended: the answer goes now
        return await asyncio.wait_for(watch, 30)

    assert asyncio.run(run())["state"] == "done"


# What a command started without a daemon must not import when it does not use it (counted with
# `python -X importtime`, never timed): the event loop and TLS (asyncio brings ssl), rich
# (output is no terminal), the daemon's client, the network and download parts, and the
# optional parts (BitTorrent, LocalSend, the LAN page, QR codes, certificates).
NOT_FOR_SHARE = frozenset(
    {
        "asyncio",
        "ssl",
        "rich",
        "http.client",
        "logging.handlers",
        "tomllib",
        "cryptography",
        "segno",
        "libtorrent",
        "swarmshare.app.node",
        "swarmshare.app.download",
        "swarmshare.app.swarm",
        "swarmshare.app.bittorrent",
        "swarmshare.app.localsend",
        "swarmshare.net.discovery",
        "swarmshare.net.bittorrent",
        "swarmshare.net.localsend",
        "swarmshare.net.lanpage",
        "swarmshare.store.identity",
    }
)
NOT_FOR_GET = frozenset(
    {
        "rich",
        "http.client",
        "logging.handlers",
        "tomllib",
        "segno",
        "libtorrent",
        "swarmshare.app.bittorrent",
        "swarmshare.app.localsend",
        "swarmshare.net.bittorrent",
        "swarmshare.net.localsend",
        "swarmshare.net.lanpage",
        "swarmshare.net.server",
    }
)
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.MULTILINE)


def _no_terminal_env() -> dict[str, str]:
    """The environment with nothing that makes rich take a pipe for a terminal."""
    return {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}


def _imports(home: Path, *args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules `swarmshare --home HOME ARGS` imports, its output piped (no terminal)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "swarmshare", "--home", str(home), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=_no_terminal_env(),
        timeout=120,
    )
    return set(_IMPORTED.findall(proc.stderr)), proc


def test_a_standalone_share_loads_no_network_loop_or_rich(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.txt").write_text(f"picture {i}")
    imported, proc = _imports(tmp_path / "home", "share", str(folder))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.match(r"shared  [0-9a-f]{12}  photos  27 B\n        magnet:\?xt=", proc.stdout)
    assert "swarmshare.store.library" in imported  # counting works: the share itself is seen
    assert imported & NOT_FOR_SHARE == set()


def test_version_loads_no_network_loop_or_rich(tmp_path: Path) -> None:
    imported, proc = _imports(tmp_path / "home", "--version")
    assert proc.returncode == 0 and "swarmshare" in proc.stdout
    assert "click" in imported
    assert imported & NOT_FOR_SHARE == set()


def test_a_standalone_get_of_a_name_loads_no_bittorrent_glue_or_daemon_client(
    tmp_path: Path,
) -> None:
    """A get of a plain name (nothing to find on a loopback broadcast) runs the Node, and with
    it asyncio, but none of the optional parts."""
    imported, proc = _imports(
        tmp_path / "home",
        "get",
        "--json",
        "--broadcast",
        LOOPBACK_BROADCAST,
        "--discovery-port",
        str(spare_port()),
        "--bind",
        "127.0.0.5",
        "--wait",
        "0",
        "-o",
        str(tmp_path / "out") + "/",
        "nothing-called-this",
    )
    assert proc.returncode == 1 and "nothing-called-this" in proc.stderr, proc.stderr[-2000:]
    assert {"asyncio", "swarmshare.app.node", "swarmshare.net.discovery"} <= imported
    assert imported & NOT_FOR_GET == set()


def test_a_stream_that_is_no_terminal_is_told_without_rich() -> None:
    """share asks whether stderr is a terminal (to draw a bar); a pipe is not, rich unasked."""
    code = (
        "import sys\n"
        "from swarmshare.ui import err, out\n"
        "print(err.is_terminal, out.is_terminal, 'rich' in sys.modules)\n"
        "out.print('plain text, as rich writes it', markup=False)\n"
        "print('rich' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=_no_terminal_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "False False False\nplain text, as rich writes it\nFalse\n"


def test_a_forced_terminal_is_still_rich_s_to_decide() -> None:
    """FORCE_COLOR makes rich take a pipe for a terminal: the cheap answer must not say no."""
    code = "from swarmshare.ui import err\nprint(err.is_terminal)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=_no_terminal_env() | {"FORCE_COLOR": "1"},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True\n"
