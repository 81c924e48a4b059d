"""Test-suite hygiene: the network guard, leftover threads and processes, shared helpers."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

GUARD_DIR = Path(__file__).parent / "netguard"
sys.path.insert(0, str(GUARD_DIR))

from swarmshare.app.loopback import spare_port, stop_all  # noqa: E402

import swarmshare_netguard  # noqa: E402
from helpers import PeerProcess  # noqa: E402

# Timings are measured in bench/, never asserted in tests: no Hypothesis deadlines.
settings.register_profile(
    "swarmshare", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("swarmshare")

swarmshare_netguard.log_to_file = False
swarmshare_netguard.install()

# A suite started in the background by a non-interactive shell inherits SIGINT ignored, and so
# would every command it starts (an ignored signal stays ignored across exec): the Ctrl-C tests
# would then see a `get` that cannot be interrupted. Any handler here is reset to the default in
# the children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _guard_subprocesses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every Python subprocess started by a test loads the guard and logs violations here."""
    log = tmp_path_factory.mktemp("netguard") / "violations.log"
    log.touch()
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", swarmshare_netguard.LOG_ENV)}
    pythonpath = os.pathsep.join(filter(None, [str(GUARD_DIR), old["PYTHONPATH"]]))
    os.environ["PYTHONPATH"] = pythonpath
    os.environ[swarmshare_netguard.LOG_ENV] = str(log)
    yield log
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def network_guard(_guard_subprocesses: Path) -> Iterator[Path]:
    """Fail any test whose process, or a subprocess, sent to an address outside loopback."""
    log = _guard_subprocesses
    start = log.stat().st_size
    swarmshare_netguard.violations.clear()
    yield log
    with open(log, encoding="utf-8") as handle:
        handle.seek(start)
        logged = handle.read().strip()
    found = swarmshare_netguard.violations + ([logged] if logged else [])
    swarmshare_netguard.violations.clear()
    if found:
        pytest.fail("network guard tripped:\n" + "\n".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves threads running behind it."""
    before = set(threading.enumerate())
    yield
    for _ in range(50):
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left:
            return
        threading.Event().wait(0.1)
    pytest.fail(f"threads left running: {[t.name for t in left]}", pytrace=False)


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    """Start real peers on 127.0.0.2, .3, ...; all of them are stopped after the test."""
    lab = Swarm(tmp_path)
    yield lab
    lab.close()


class Swarm:
    """A test's own swarm of real peer processes on loopback (started by the loopback launcher),
    with its own discovery port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.discovery_port = spare_port()
        self.peers: list[PeerProcess] = []

    def start(
        self, index: int, *extra: str, interval: float = 30.0, wait: bool = True
    ) -> PeerProcess:
        peer = PeerProcess(self.root, index, self.discovery_port, *extra, interval=interval)
        self.peers.append(peer)
        return peer.start(wait=wait)

    def discovery(self, bind: str = "127.0.0.20") -> list[str]:
        """Options that put a standalone command (get, ls) on this swarm's loopback
        discovery, sending from `bind`."""
        return [
            "--broadcast",
            "127.255.255.255",
            "--discovery-port",
            str(self.discovery_port),
            "--bind",
            bind,
        ]

    def peak_rss_mib(self) -> dict[str, float]:
        """Each live peer's peak resident memory so far (VmHWM), in MiB."""
        peaks = {}
        for peer in self.peers:
            if peer.proc is not None and peer.proc.poll() is None:
                try:
                    status = Path(f"/proc/{peer.proc.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[peer.name] = int(line.split()[1]) / 1024
        return peaks

    def close(self) -> None:
        if os.environ.get("SWARMSHARE_TEST_RSS"):
            print("peak RSS MiB:", self.peak_rss_mib())
        stop_all(self.peers)


HARDENING: list[str] = []


@pytest.fixture
def report() -> Callable[..., None]:
    """Record one line of the hardening summary printed at the end of the run."""

    def add(category: str, tried: int, refused: int, alive: bool, lost: int = 0) -> None:
        HARDENING.append(
            f"{category}: {tried} inputs tried, {refused} refused, daemon alive: "
            f"{'yes' if alive else 'NO'}, bytes lost: {lost}"
        )

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if HARDENING:
        terminalreporter.section("hardening summary")
        for line in HARDENING:
            terminalreporter.write_line(line)
