"""The peer server's connection slots against one host holding many kept-alive connections from
many addresses: a real PeerServer on loopback, with small limits, and real client sockets."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from swarmshare.core.catalog import Catalog, make_catalog
from swarmshare.core.location import ChunkLocation
from swarmshare.net.guard import GuardLimits
from swarmshare.net.server import PeerServer, ServeError

HOST = "127.0.0.2"
CATALOG = b"GET /v1/catalog HTTP/1.1\r\nHost: x\r\n\r\n"


class _Provider:
    """Serves an empty catalogue and holds nothing else."""

    def catalog(self) -> Catalog:
        return make_catalog("0123456789abcdef", [])

    def manifest_bytes(self, content_id: str) -> bytes:
        raise ServeError(404, "unknown_content", "not held")

    def chunk_location(self, content_id: str, index: int) -> tuple[str, ChunkLocation]:
        raise ServeError(404, "not_held", "not held")

    def file_location(self, content_id: str, path: str | None) -> str:
        raise ServeError(404, "unknown_content", "not held")

    def web_seed_file(self, content_id: str, path: str) -> str | int:
        raise ServeError(404, "unknown_content", "not held")

    def served(
        self, peer: str, content_id: str, name: str, index: int, nbytes: int, result: str
    ) -> None:
        pass


@asynccontextmanager
async def _server(limits: GuardLimits) -> AsyncIterator[PeerServer]:
    async with PeerServer(_Provider(), HOST, 0, guard_limits=limits) as server:
        yield server


class _Client:
    """One kept-alive HTTP connection from a given loopback address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, source: str, port: int) -> _Client:
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
        return cls(reader, writer)

    async def get_catalog(self) -> int:
        """One request on this connection; its status, or 0 when the server closed it."""
        self.writer.write(CATALOG)
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, ConnectionError):
            return 0
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await asyncio.wait_for(self.reader.readexactly(length), 10)
        return int(head.split(b" ")[1])

    async def closed_by_server(self, within: float) -> bool:
        """Whether the server closes this connection within `within` seconds."""
        try:
            return await asyncio.wait_for(self.reader.read(1), within) == b""
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


async def _wait_for(predicate: Callable[[], bool], within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _no_tracebacks(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    gc.collect()  # "Task exception was never retrieved" is logged when the task is collected
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "AssertionError" not in err, err


def test_kept_alive_connections_from_many_addresses_cannot_lock_out_an_honest_peer(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    limits = GuardLimits(connections_total=12, connections_per_peer=4, request_timeout=60)

    async def scenario() -> None:
        async with _server(limits) as server:
            assert server.guard is not None
            attackers: list[_Client] = []
            for host in range(10, 15):  # 5 addresses x 4 kept-alive connections: 20 > 12 slots
                for _ in range(4):
                    client = await _Client.connect(f"127.0.0.{host}", server.port)
                    attackers.append(client)
                    assert await client.get_catalog() == 200
            assert server.guard.open_connections == 12
            honest = await _Client.connect("127.0.0.50", server.port)
            assert await honest.get_catalog() == 200  # an idle attacker gave up its slot
            assert await honest.get_catalog() == 200  # and the honest connection stays
            assert server.guard.stats.idle_closed >= 9

            for client in [*attackers, honest]:
                client.close()
            await _wait_for(lambda: server.guard is not None and not server.guard.open_connections)

            # One address's share is capped: its fifth connection is refused, quietly.
            mine = [await _Client.connect("127.0.0.60", server.port) for _ in range(5)]
            assert [await c.get_catalog() for c in mine] == [200, 200, 200, 200, 0]
            assert server.guard.stats.refused_per_peer == 1
            for client in mine:
                client.close()

    asyncio.run(scenario())
    _no_tracebacks(caplog, capfd)


def test_every_request_and_idle_kept_alive_time_is_bounded(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    limits = GuardLimits(connections_total=8, connections_per_peer=8, request_timeout=0.3)

    async def scenario() -> None:
        async with _server(limits) as server:
            assert server.guard is not None
            idle = await _Client.connect("127.0.0.10", server.port)
            assert await idle.get_catalog() == 200
            assert await idle.closed_by_server(within=10)  # kept alive, then idle too long

            slow = await _Client.connect("127.0.0.11", server.port)
            assert await slow.get_catalog() == 200
            slow.writer.write(CATALOG[:10])  # the second request never completes
            assert await slow.closed_by_server(within=10)
            assert server.guard.stats.slow_cut == 2
            assert server.guard.open_connections == 0
            for client in (idle, slow):
                client.close()

    asyncio.run(scenario())
    _no_tracebacks(caplog, capfd)
