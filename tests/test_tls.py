"""Private swarms are TLS: nobody without the secret reads or alters a byte.

A real private peer (A, a process on 127.0.0.2) shares a file with a marker string in it. B is
an in-process peer of the same swarm on 127.0.0.3 whose connections to A are sent through a
relay of the test's own, as an on-path attacker would see them: B believes it talks to A's
address, A sees B's (the relay connects from 127.0.0.3), so the swarm's proofs hold. The
relay records every byte. A plain relay sees no plaintext and the download completes byte-exact
through it; a relay that terminates TLS itself (its own certificate) is refused by B's pin.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from swarmshare.app.node import Node
from swarmshare.core.announce import (
    Announcement,
    AnnouncementError,
    decode_announcement,
    decode_private,
    encode_private,
)
from swarmshare.core.auth import derive_key
from swarmshare.settings import Settings
from swarmshare.store.identity import load_identity

from conftest import Swarm
from helpers import write_test_file

SECRET = "correct horse battery staple"
MARKER = b"MARKER-7f3a-PLAINTEXT-CANARY"
FP = "ab" * 32


# ---- the fingerprint is signed ---------------------------------------------------------------


def test_fingerprint_is_signed_with_the_announcement() -> None:
    key = derive_key(SECRET)
    ann = Announcement("0123456789abcdef", 5001, "a", "00", 30.0, fingerprint=FP)
    data = encode_private(ann, key, 1000.0, "127.0.0.2")
    assert decode_private(data, key, 1000.0, "127.0.0.2").fingerprint == FP
    obj = json.loads(data)
    for forged in ("cd" * 32, ""):
        obj["fp"] = forged
        with pytest.raises(AnnouncementError):
            decode_private(json.dumps(obj).encode(), key, 1000.0, "127.0.0.2")
    del obj["fp"]
    with pytest.raises(AnnouncementError):
        decode_private(json.dumps(obj).encode(), key, 1000.0, "127.0.0.2")


def test_a_malformed_fingerprint_is_refused() -> None:
    for bad in ("AB" * 32, "ab" * 31, 7, ["ab"]):
        obj = json.loads(Announcement("0123456789abcdef", 1, "a", "00", 30.0).encode())
        obj["fp"] = bad
        with pytest.raises(AnnouncementError):
            decode_announcement(json.dumps(obj).encode())


# ---- through a relay -------------------------------------------------------------------------


class Relay:
    """A TCP relay on 127.0.0.9 to A, connecting from B's address; records what passes. With
    `terminate`, it ends TLS itself (its own certificate), opens TLS to A, and records the
    plaintext it could read."""

    def __init__(self, target: tuple[str, int], terminate: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.terminate = terminate
        self.seen = bytearray()
        self.connections = 0
        self.address: tuple[str, int] = ("127.0.0.9", 0)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.9", 0, ssl=self.terminate)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.3", 0))
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, self.target)
            if self.terminate is not None:
                client = ssl.create_default_context()
                client.check_hostname = False
                client.verify_mode = ssl.CERT_NONE
                up_reader, up_writer = await asyncio.open_connection(
                    sock=sock, ssl=client, server_hostname=""
                )
            else:
                up_reader, up_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        except OSError:
            sock.close()
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.seen += data
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


def _settings(home: Path, discovery_port: int) -> Settings:
    return Settings(
        home=home,
        name="b",
        bind="127.0.0.3",
        port=0,
        discovery_port=discovery_port,
        broadcast=("127.255.255.255",),
        secret=SECRET,
        mdns=False,
        ipv6=False,
    )


def _through(
    monkeypatch: pytest.MonkeyPatch, target: tuple[str, int], relay: tuple[str, int]
) -> None:
    """Send the running loop's connections to `target` to `relay` instead (as an on-path
    attacker would take them)."""
    loop = asyncio.get_running_loop()
    real: Callable[..., Awaitable[Any]] = loop.create_connection

    async def redirected(factory: Any, host: Any = None, port: Any = None, **kw: Any) -> Any:
        if (host, port) == target:
            host, port = relay
        return await real(factory, host, port, **kw)

    monkeypatch.setattr(loop, "create_connection", redirected)


async def _download(node: Node, cid: str, out: Path, wait: float) -> dict[str, Any]:
    state = await node.start_download(cid, None, str(out), False, wait)
    version = -1
    while True:
        state = await node.watch(cid, version, 1.0)
        version = int(state["version"])
        if state["state"] not in ("finding peers", "downloading", "waiting for peers", "finishing"):
            return state


def _private_seeder(swarm: Swarm, tmp_path: Path) -> tuple[Any, Path, str, int]:
    src = tmp_path / "canary-payroll.xlsx"
    write_test_file(src, 3 * 1024 * 1024 + 11, seed=51)
    with open(src, "r+b") as handle:  # the marker throughout the file
        for offset in range(0, 3 * 1024 * 1024, 256 * 1024):
            handle.seek(offset + 100)
            handle.write(MARKER)
    a = swarm.start(2, "--secret", SECRET)
    cid = json.loads(a.cli("share", "--json", str(src)).stdout)[0]["id"]
    port = int(a.json("status")["port"])
    return a, src, cid, port


def test_a_relay_sees_no_plaintext_and_the_download_is_byte_exact(
    swarm: Swarm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _a, src, cid, port = _private_seeder(swarm, tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    async def run() -> tuple[dict[str, Any], Relay, dict[str, Any]]:
        async with Relay(("127.0.0.2", port)) as relay:
            _through(monkeypatch, ("127.0.0.2", port), relay.address)
            async with Node(_settings(tmp_path / "b", swarm.discovery_port)) as node:
                state = await _download(node, cid, out, 20)
                return state, relay, node.status()

    state, relay, status = asyncio.run(run())
    assert state["state"] == "done", state
    assert (out / src.name).read_bytes() == src.read_bytes()
    assert relay.connections >= 1 and len(relay.seen) > src.stat().st_size
    seen = bytes(relay.seen)
    assert MARKER not in seen, "the relay read the file"
    for plain in (b"GET /v1", b"HTTP/1.1", src.name.encode(), cid.encode()):
        assert plain not in seen, f"the relay read {plain!r}"
    assert status["tls"] is True and status["refused_certificates"] == 0


def test_a_relay_with_its_own_certificate_is_refused(
    swarm: Swarm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _a, src, cid, port = _private_seeder(swarm, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    impostor = load_identity(tmp_path / "impostor", "peer2").server_context()

    async def run() -> tuple[dict[str, Any], Relay, dict[str, Any]]:
        async with Relay(("127.0.0.2", port), terminate=impostor) as relay:
            _through(monkeypatch, ("127.0.0.2", port), relay.address)
            async with Node(_settings(tmp_path / "b", swarm.discovery_port)) as node:
                state = await _download(node, cid, out, 3)
                return state, relay, node.status()

    state, relay, status = asyncio.run(run())
    assert relay.connections >= 1, "B tried A through the relay"
    assert state["state"] != "done" and not (out / src.name).exists()
    assert status["refused_certificates"] >= 1
    assert bytes(relay.seen) == b"", "B sent the impostor nothing: it stopped at its certificate"


def test_a_peer_without_the_secret_reads_nothing(swarm: Swarm, tmp_path: Path) -> None:
    _a, src, cid, port = _private_seeder(swarm, tmp_path)
    outsider = swarm.start(4)
    assert outsider.cli("get", cid, "--wait", "2").returncode != 0
    for request in (
        f"GET /v1/content/{cid}/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        b"GET /v1/catalog HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.2", port), 10, ("127.0.0.4", 0)) as sock:
            sock.sendall(request)
            sock.settimeout(10)
            data = b""
            try:
                while piece := sock.recv(65536):
                    data += piece
            except (ConnectionResetError, TimeoutError):
                pass
        # Not even an HTTP error: the server speaks TLS only, so plain bytes get no HTTP reply.
        assert b"HTTP/1." not in data and MARKER not in data and src.name.encode() not in data


def test_a_folder_of_many_small_files_comes_through_tls_in_batches(
    swarm: Swarm, tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for index in range(300):
        (folder / f"note{index:03}.txt").write_bytes(MARKER + str(index).encode() * (index + 1))
    a = swarm.start(2, "--secret", SECRET)
    b = swarm.start(3, "--secret", SECRET)
    assert a.cli("share", str(folder)).returncode == 0
    out = tmp_path / "out"
    proc = b.cli("get", "notes", "-o", str(out) + "/", "--wait", "15")
    assert proc.returncode == 0, proc.stderr
    for index in range(300):
        name = f"note{index:03}.txt"
        assert (out / "notes" / name).read_bytes() == (folder / name).read_bytes()
    assert b.json("status")["refused_certificates"] == 0


def test_connections_that_never_shake_hands_hold_little_and_lock_nobody_out(
    swarm: Swarm, tmp_path: Path
) -> None:
    a, src, _cid, port = _private_seeder(swarm, tmp_path)
    b = swarm.start(3, "--secret", SECRET)
    before = swarm.peak_rss_mib()["peer2"]
    held: list[socket.socket] = []
    try:
        # 40 addresses x 15 connections that connect and never say a word (asyncio's own TLS
        # server gave each a 256 KiB buffer for a minute: 150 MiB here).
        for host in range(100, 140):
            for _ in range(15):
                sock = socket.socket()
                sock.bind((f"127.0.0.{host}", 0))
                sock.connect(("127.0.0.2", port))
                held.append(sock)
        out = tmp_path / "out"
        proc = b.cli("get", src.name, "-o", str(out) + "/", "--wait", "15")
        assert proc.returncode == 0, proc.stderr
        assert (out / src.name).read_bytes() == src.read_bytes()
        grew = swarm.peak_rss_mib()["peer2"] - before
        cut = a.json("status")["tls_handshakes_cut"]
    finally:
        for sock in held:
            sock.close()
    assert grew < 64, f"{len(held)} silent connections took {grew:.0f} MiB"
    assert cut >= len(held) - 128, "at most 128 handshakes wait at once"


# ---- a chunk's bytes on their way into TLS ---------------------------------------------------


class _TLSTransport:
    """What _send_file_range asks of a TLS connection's transport."""

    def get_extra_info(self, name: str) -> object:
        return ssl.create_default_context() if name == "sslcontext" else None

    def is_closing(self) -> bool:
        return False


class _Request:
    transport = _TLSTransport()


class _Writer:
    def __init__(self) -> None:
        self.sent = bytearray()

    async def write(self, data: bytes) -> None:
        self.sent += data


@pytest.mark.parametrize("cached", [True, False])
def test_a_range_sent_over_tls_is_exact_from_the_page_cache_or_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    from swarmshare.net import server

    src = tmp_path / "big.bin"
    write_test_file(src, 3 * 1024 * 1024 + 11, seed=52)
    expected = src.read_bytes()
    threads: list[object] = []
    real_to_thread = asyncio.to_thread

    async def counted(func: Any, *args: Any) -> Any:
        threads.append(func)
        return await real_to_thread(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    with open(src, "rb") as handle:
        if not cached:  # out of the page cache: what is not there comes from a worker thread
            os.fsync(handle.fileno())
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        writer = _Writer()
        asyncio.run(
            server._send_file_range(
                _Request(),  # type: ignore[arg-type]
                writer,  # type: ignore[arg-type]
                handle,
                1000,
                len(expected) - 1000,
                None,
            )
        )
    assert bytes(writer.sent) == expected[1000:]
    if cached:  # the page cache's bytes are read on the loop, without a thread's round trip
        assert threads == []
