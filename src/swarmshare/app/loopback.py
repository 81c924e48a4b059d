"""Real `swarmshare run` processes on loopback: the one launcher of the demo, the tests and bench/.

Loopback only, by construction: a peer binds 127.0.0.N, announces to 127.255.255.255 on the
discovery port its swarm was given, and listens on TCP ports the system picks (the control port
is read back from the home's control file). A swarm stops every peer it started.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from swarmshare.app.control_client import ControlClient
from swarmshare.app.home import CONTROL_FILE, read_control_file
from swarmshare.errors import DaemonError
from swarmshare.settings import DEFAULT_INTERVAL_SECONDS

LOOPBACK_BROADCAST = "127.255.255.255"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


SPARE_PORTS = range(20000, 32768)
"""Where spare_port looks: below Linux's default ephemeral range (32768-60999), so the kernel
never hands one of these to an outgoing connection (a command's client socket left in FIN_WAIT
on 127.0.0.20:P would make a later listen on that address and port fail)."""


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return SPARE_PORTS.stop


def _free_everywhere(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                return False
    return True


def spare_port() -> int:
    """A port free for TCP and UDP on every address right now, outside the range the kernel
    picks ephemeral ports from: a swarm's discovery port, or a fixed port (the seed scripts')
    that several loopback addresses must listen on in turn."""
    top = min(SPARE_PORTS.stop, _ephemeral_low())
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(SPARE_PORTS.start, top)
        if _free_everywhere(port):
            return port
    raise DaemonError("no spare port below the ephemeral range")


class LoopbackPeer:
    """One `swarmshare run` process bound to a loopback address, logging to `HOME/run.log`."""

    def __init__(
        self,
        home: Path,
        address: str,
        discovery_port: int,
        *extra: str,
        name: str | None = None,
        interval: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        if not address.startswith("127."):
            raise ValueError(f"a loopback peer binds 127.x.x.x, not {address}")
        self.home = home
        self.address = address
        self.discovery_port = discovery_port
        self.name = name or home.name
        self.args = [
            "run",
            "--bind",
            address,
            "--broadcast",
            LOOPBACK_BROADCAST,
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
        """The arguments after `swarmshare --home HOME`."""
        self.log_path = home / "run.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> list[str]:
        """The argv of `swarmshare --home HOME ARGS...` run by this Python."""
        return [sys.executable, "-m", "swarmshare", "--home", str(self.home), *args]

    def start(self, wait: bool = True, timeout: float = START_TIMEOUT_SECONDS) -> Self:
        """Start the process; with `wait`, return once its control API answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / CONTROL_FILE).unlink(missing_ok=True)  # a killed run's leftover
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(*self.args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_ready(time.monotonic() + timeout)
        return self

    def wait_ready(self, deadline: float) -> None:
        """Until the daemon has written its control file and answers on it; DaemonError, with
        the end of its log, when it stops or `deadline` (a time.monotonic() value) passes."""
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise DaemonError(f"{self.name} stopped:\n{self.log()[-2000:]}")
            info = read_control_file(self.home)
            if info is not None and info.pid == self.proc.pid:
                try:
                    ControlClient(info).get("status", timeout=5.0)
                    return
                except DaemonError:
                    pass
            if time.monotonic() > deadline:
                raise DaemonError(f"{self.name} did not start in time:\n{self.log()[-2000:]}")
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def control(self) -> ControlClient:
        """The client of this peer's control API; DaemonError when it does not run."""
        client = ControlClient.find(self.home)
        if client is None:
            raise DaemonError(f"{self.name} is not running")
        return client

    def log(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_SECONDS)

    def terminate(self) -> None:
        """SIGTERM, without waiting (see stop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM and wait, SIGKILL after `timeout`; the exit code (None: never started)."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(STOP_TIMEOUT_SECONDS)


class LoopbackSwarm:
    """Peers on 127.0.0.N sharing one discovery port; `close()` (or leaving `with`) stops them."""

    def __init__(self, root: Path, discovery_port: int | None = None) -> None:
        self.root = root
        self.discovery_port = discovery_port or spare_port()
        self.peers: list[LoopbackPeer] = []

    def add(self, peer: LoopbackPeer) -> LoopbackPeer:
        """Take charge of a peer (not started yet) so that close() stops it."""
        self.peers.append(peer)
        return peer

    def start(
        self,
        index: int,
        *extra: str,
        name: str | None = None,
        home: Path | None = None,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        wait: bool = True,
    ) -> LoopbackPeer:
        """Start a peer on 127.0.0.`index` (home: ROOT/peer`index` unless given)."""
        peer = LoopbackPeer(
            home or self.root / f"peer{index}",
            f"127.0.0.{index}",
            self.discovery_port,
            *extra,
            name=name,
            interval=interval,
        )
        return self.add(peer).start(wait=wait)

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Until every peer started with `wait=False` answers."""
        deadline = time.monotonic() + timeout
        for peer in self.peers:
            peer.wait_ready(deadline)

    def close(self) -> None:
        """Stop every peer (see stop_all)."""
        stop_all(self.peers)

    def __enter__(self) -> LoopbackSwarm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def stop_all(peers: Iterable[LoopbackPeer]) -> None:
    """SIGTERM to every peer at once, then wait for each (SIGKILL if one hangs)."""
    peers = list(peers)
    for peer in peers:
        peer.terminate()
    for peer in peers:
        peer.stop()
