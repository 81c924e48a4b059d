"""The daemon: one process that announces, discovers, serves and downloads.

It is the composition root and nothing else: it takes the home's lock, runs a `Node` that
serves (peer server, discovery, downloads, legacy mode), puts the control API in front of it,
records where the CLI finds that API, and lives until SIGINT/SIGTERM (or `stop()`). Shutdown is
the reverse: stop taking commands, pause the downloads, say bye, stop serving, close the db.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from swarmshare.app.control import ControlServer
from swarmshare.app.home import HomeLock, new_token, remove_control_file, write_control_file
from swarmshare.app.node import Node
from swarmshare.settings import Settings

log = logging.getLogger("swarmshare")


class Daemon:
    """A swarmshare peer. Build with settings, then `await run()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token = new_token()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Serve until stopped; DaemonError (one clear line) if the home or a port is taken."""
        s = self.settings
        lock = HomeLock(s.home)
        lock.acquire()
        try:
            async with (
                Node(s, serve=True) as node,
                ControlServer(node, self.token, s.control_port) as control,
            ):
                self._install_signals()  # before the CLI can find us and send a signal
                write_control_file(s.home, control.port, self.token)
                self.ready.set()
                _say_started(node, control.port)
                node.shelf.refresh()
                await self._stop.wait()
                log.info("stopping")
        finally:
            remove_control_file(s.home)
            lock.release()

    def stop(self) -> None:
        """Ask `run` to shut down."""
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)


def _say_started(node: Node, control_port: int) -> None:
    s = node.settings
    assert node.server is not None and node.swarm is not None
    targets = ", ".join(node.swarm.discovery.targets + [f"{h}:{p}" for h, p in s.peers])
    log.info("peer %r (%s) serving on %s:%d", s.name, node.peer_id, s.bind, node.server.port)
    log.info("discovery on UDP %d, announcing to %s", s.discovery_port, targets)
    log.info("web page: http://127.0.0.1:%d/  (open it with: swarmshare open)", control_port)
    if node.seed_serving is not None:
        log.info(
            "legacy mode: seed-compatible chunk server on TCP %s:%d, seed announcements on UDP %d",
            s.bind,
            node.seed_serving.server.port,
            s.discovery_port,
        )
    if node.bittorrent is not None:
        lsd = " with local service discovery" if node.bittorrent.config.lsd else ""
        log.info("BitTorrent peer on port %d%s", node.bittorrent.port, lsd)
    log.info("sharing %d item(s)", len(node.shelf.shares()))
