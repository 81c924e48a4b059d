"""The LocalSend receiver in-process on loopback, with small limits: what a stalled, flooding,
guessing or greedy sender gets, and that an honest one still gets through."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from swarmshare.core.localsend import DeviceInfo
from swarmshare.net.guard import GuardLimits
from swarmshare.net.localsend import Fetch, LocalSendDiscovery, LocalSendReceiver, ReceiverLimits
from swarmshare.store.identity import load_identity

HOST = "127.0.0.2"
API = "/api/localsend/v2"


@contextlib.asynccontextmanager
async def receiver(
    tmp_path: Path, limits: ReceiverLimits, pin: str | None = None, fetch: Fetch | None = None
) -> AsyncIterator[LocalSendReceiver]:
    """A receiver on 127.0.0.2 (port chosen by the system) taking every offer into tmp/inbox."""
    identity = load_identity(tmp_path / "home", "receiver")
    info = DeviceInfo(alias="receiver", fingerprint=identity.fingerprint, port=0)
    discovery = LocalSendDiscovery(info, HOST, "127.255.255.255", 0, listen=False)

    async def accept(_offer: object) -> bool:
        return True

    async with LocalSendReceiver(
        discovery,
        identity.server_context(),
        HOST,
        0,
        lambda: tmp_path / "inbox",
        accept,
        lambda _path: None,
        pin=pin,
        fetch=fetch,
        limits=limits,
    ) as r:
        yield r


def offer_body(files: dict[str, int]) -> dict[str, Any]:
    return {
        "info": {"alias": "sender", "fingerprint": "s"},
        "files": {
            f"f{i}": {"id": f"f{i}", "fileName": name, "size": size}
            for i, (name, size) in enumerate(files.items())
        },
    }


async def prepare(
    port: int, files: dict[str, int], source: str = "127.0.0.9", pin: str | None = None
) -> tuple[int, dict[str, Any] | None]:
    """A prepare-upload from `source`: the status and, for 200, the grant."""
    connector = aiohttp.TCPConnector(ssl=False, local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(
            f"https://{HOST}:{port}{API}/prepare-upload",
            params={"pin": pin} if pin is not None else {},
            json=offer_body(files),
        ) as r,
    ):
        if r.status != 200:
            return r.status, None
        grant: dict[str, Any] = json.loads(await r.read())
        return 200, grant


async def until(predicate: Callable[[], object], seconds: float = 15.0) -> None:
    """Poll until `predicate()` holds; fails after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_a_stalled_upload_ends_its_session_and_frees_the_slot(tmp_path: Path) -> None:
    limits = ReceiverLimits(sessions=1, upload_idle_seconds=0.5)

    async def main() -> None:
        async with receiver(tmp_path, limits) as r:
            status, grant = await prepare(r.port, {"big.bin": 1000})
            assert status == 200 and grant is not None
            # A raw sender that announces 1000 bytes, sends 10, then neither sends nor closes.
            _reader, writer = await asyncio.open_connection(
                HOST, r.port, ssl=client_context(), local_addr=("127.0.0.9", 0)
            )
            query = f"sessionId={grant['sessionId']}&fileId=f0&token={grant['files']['f0']}"
            writer.write(
                f"POST {API}/upload?{query} HTTP/1.1\r\nHost: {HOST}\r\n"
                "Content-Length: 1000\r\n\r\n".encode()
                + b"x" * 10
            )
            await writer.drain()
            inbox = tmp_path / "inbox"
            await until(lambda: any(n.endswith(".part") for n in names(inbox)))
            await until(lambda: not r.sessions and not names(inbox))
            status, _ = await prepare(r.port, {"other.bin": 1}, "127.0.0.10")
            assert status == 200
            writer.close()

    asyncio.run(main())


def test_connections_that_never_shake_hands_do_not_lock_out_a_sender(tmp_path: Path) -> None:
    limits = ReceiverLimits(
        connections=GuardLimits(connections_total=8, connections_per_peer=4),
        handshakes_total=6,
        handshakes_per_peer=3,
        handshake_seconds=60.0,
    )

    async def main() -> None:
        async with receiver(tmp_path, limits) as r:
            # Three addresses open 10 plain TCP connections each and never send a byte.
            flood = []
            for source in ("127.0.0.11", "127.0.0.12", "127.0.0.13"):
                for _ in range(10):
                    reader, writer = await asyncio.open_connection(
                        HOST, r.port, local_addr=(source, 0)
                    )
                    flood.append((reader, writer))
            closed = [asyncio.ensure_future(_closed(reader)) for reader, _ in flood]
            # Over 3 per address are refused, and over 6 in all the oldest are cut.
            await until(lambda: sum(t.done() for t in closed) >= 30 - 6)
            status, _ = await prepare(r.port, {"honest.txt": 1}, "127.0.0.10")
            assert status == 200
            for task in closed:
                task.cancel()
            for _, writer in flood:
                writer.close()

    asyncio.run(main())


async def _closed(reader: asyncio.StreamReader) -> None:
    """Returns once the other side closed the connection."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(1024):
            pass


def test_wrong_pins_lock_that_address_out_for_a_while(tmp_path: Path) -> None:
    limits = ReceiverLimits(pin_failures=3, pin_window_seconds=600.0)

    async def main() -> None:
        async with receiver(tmp_path, limits, pin="4711") as r:
            guesser, other = "127.0.0.9", "127.0.0.10"
            assert (await prepare(r.port, {"a.txt": 1}, guesser))[0] == 401  # no PIN: asked
            for guess in ("0000", "1234", "9999"):
                assert (await prepare(r.port, {"a.txt": 1}, guesser, guess))[0] == 401
            # The right PIN from the guesser now waits out the window; another address is fine.
            assert (await prepare(r.port, {"a.txt": 1}, guesser, "4711"))[0] == 429
            assert (await prepare(r.port, {"a.txt": 1}, other, "4711"))[0] == 200

    asyncio.run(main())


def test_offers_that_cannot_land_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    limits = ReceiverLimits(offer_bytes=4 * free)

    async def main() -> None:
        async with receiver(tmp_path, limits) as r:
            # A file and a folder of one name: refused at once, not halfway through.
            assert (await prepare(r.port, {"a": 1, "a/b": 1}))[0] == 400
            assert (await prepare(r.port, {"x/a/b": 1, "x/a": 1}))[0] == 400
            assert (await prepare(r.port, {"huge.bin": free + 1}))[0] == 507
            assert (await prepare(r.port, {"a.bin": 2 * free, "b.bin": 2 * free + 1}))[0] == 413
            assert not r.sessions
            assert names(tmp_path / "inbox") == []
            assert (await prepare(r.port, {"a": 1, "b/c": 1}))[0] == 200

    asyncio.run(main())


def test_a_swarm_fetch_under_way_holds_a_session_slot(tmp_path: Path) -> None:
    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def fetch(_offer: object, _address: str) -> None:
            started.set()
            await release.wait()

        async with receiver(tmp_path, ReceiverLimits(sessions=1), fetch=fetch) as r:
            body = {
                "info": {"alias": "sender", "fingerprint": "s"},
                "contentId": "a" * 64,
                "name": "x.bin",
                "size": 1,
            }
            connector = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.9", 0))
            async with aiohttp.ClientSession(connector=connector) as http:
                url = f"https://{HOST}:{r.port}{API}/swarmshare-fetch"
                fetching = asyncio.ensure_future(http.post(url, json=body))
                await started.wait()
                assert (await prepare(r.port, {"a.txt": 1}))[0] == 409
                release.set()
                reply = await fetching
                assert reply.status == 200
                reply.release()
            assert (await prepare(r.port, {"a.txt": 1}))[0] == 200

    asyncio.run(main())
