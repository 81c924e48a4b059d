"""Hostile input: traversal in every route, private swarms, floods, slow senders, full disks,
and fuzzed replies. Each category adds a line to the hardening summary at the end of the run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core.auth import AUTH_HEADER, derive_key, request_header
from swarmshare.core.manifest import Manifest, file_entry
from swarmshare.errors import RemoteProtocolError, StoreError
from swarmshare.limits import MAX_CONNECTIONS_PER_PEER
from swarmshare.net.chunkconn import BufferPool, ChunkClient, ChunkFetchError
from swarmshare.store.hashing import hash_content, scan_path
from swarmshare.store.partfile import PartFile

from conftest import Swarm
from helpers import cli, swarmshare_command, wait_until, write_test_file

Report = Callable[..., None]


def _raw_http(
    address: str,
    port: int,
    request: bytes,
    timeout: float = 10,
    source: str = "",
    tls: bool = False,
) -> tuple[int, bytes]:
    """One request on a new connection; `tls`: over TLS, any certificate taken (a private
    swarm's peer speaks nothing else)."""
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((address, port), timeout, (source, 0)))
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = stack.enter_context(context.wrap_socket(sock))
        sock.sendall(request)
        data = b""
        try:
            while piece := sock.recv(65536):
                data += piece
                if b"\r\n\r\n" in data:
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":")[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        None,
                    )
                    if length is not None and len(body) >= length:
                        break
        except (ConnectionResetError, TimeoutError):
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0
    return status, data


def test_traversal_in_every_peer_route_and_encoding(
    swarm: Swarm, tmp_path: Path, report: Report
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-NOT-SHARED")
    shared = tmp_path / "public.txt"
    shared.write_text("public words")
    peer = swarm.start(2)
    cid = json.loads(peer.cli("share", "--json", str(shared)).stdout)[0]["id"]
    port = int(peer.json("status")["port"])
    evil_paths = [
        "/etc/passwd",
        "../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%5c..%5cetc%5cpasswd",
        "....//....//etc/passwd",
        str(secret),
        str(secret).replace("/", "%2f"),
        "%00",
        "public.txt%00.png",
        "%EF%BC%8E%EF%BC%8E/etc/passwd",
        "%E2%80%A5/etc/passwd",
        "a" * 5000,
        "..",
        ".",
        "//etc/passwd",
    ]
    targets = []
    for evil in evil_paths:
        targets += [
            f"/v1/content/{evil}/manifest",
            f"/v1/content/{evil}/chunk/0",
            f"/v1/content/{evil}/file",
            f"/v1/content/{cid}/file/{evil}",
            f"/v1/content/{cid}/chunk/{evil}",
            f"/{evil}",
            f"/v1/{evil}",
        ]
    refused = 0
    for target in targets:
        status, data = _raw_http(
            "127.0.0.2",
            port,
            f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )
        assert b"root:" not in data and b"TOP-SECRET" not in data, target
        assert status >= 400 or status == 0, (target, status)
        refused += 1
    ok_status, ok = _raw_http(
        "127.0.0.2",
        port,
        f"GET /v1/content/{cid}/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    assert ok_status == 200 and ok.endswith(b"public words")
    alive = peer.proc is not None and peer.proc.poll() is None
    report("peer server traversal", len(targets), refused, alive)
    assert alive


def test_control_api_needs_token_loopback_host_and_origin(
    swarm: Swarm, tmp_path: Path, report: Report
) -> None:
    peer = swarm.start(2)
    info_path = peer.home / "control.json"
    assert stat.S_IMODE(info_path.stat().st_mode) == 0o600
    info = json.loads(info_path.read_text())
    port, token = info["port"], info["token"]
    good_host = f"127.0.0.1:{port}"
    cases = [
        ("no token", f"GET /api/status HTTP/1.1\r\nHost: {good_host}\r\n", 401),
        (
            "wrong token",
            f"GET /api/status HTTP/1.1\r\nHost: {good_host}\r\nAuthorization: Bearer nope\r\n",
            401,
        ),
        (
            "rebinding host",
            f"GET /api/status HTTP/1.1\r\nHost: evil.example:{port}\r\n"
            f"Authorization: Bearer {token}\r\n",
            403,
        ),
        (
            "foreign origin",
            f"POST /api/share HTTP/1.1\r\nHost: {good_host}\r\nOrigin: "
            f"http://evil.example\r\nAuthorization: Bearer {token}\r\n"
            "Content-Length: 2\r\n",
            403,
        ),
        (
            "traversal",
            f"GET /api/../../etc/passwd HTTP/1.1\r\nHost: {good_host}\r\n"
            f"Authorization: Bearer {token}\r\n",
            404,
        ),
        (
            "encoded traversal",
            f"GET /api/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: "
            f"{good_host}\r\nAuthorization: Bearer {token}\r\n",
            404,
        ),
    ]
    refused = 0
    for name, head, expected in cases:
        body = "{}" if "Content-Length" in head else ""
        status, data = _raw_http(
            "127.0.0.1", port, f"{head}Connection: close\r\n\r\n{body}".encode()
        )
        assert status == expected, (name, status, data[:200])
        assert b"root:" not in data
        refused += status >= 400
    status, _ = _raw_http(
        "127.0.0.1",
        port,
        f"GET /api/status HTTP/1.1\r\nHost: {good_host}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 200
    alive = peer.proc is not None and peer.proc.poll() is None
    report("control API auth", len(cases), refused, alive)
    assert refused == len(cases) and alive


def test_private_swarm(swarm: Swarm, tmp_path: Path, report: Report) -> None:
    src = tmp_path / "payroll.xlsx"
    write_test_file(src, 2 * 1024 * 1024, seed=21)
    secret = "correct horse battery staple"
    (tmp_path / "secret").write_text(secret + "\n")
    a = swarm.start(2, "--secret-file", str(tmp_path / "secret"))
    b = swarm.start(3, "--secret", secret)
    outsider = swarm.start(4)
    other_swarm = swarm.start(5, "--secret", "another swarm entirely")
    cid = json.loads(a.cli("share", "--json", str(src)).stdout)[0]["id"]
    wait_until(lambda: any(i["name"] == "payroll.xlsx" for i in b.json("ls")), timeout=15)
    out = tmp_path / "out"
    out.mkdir()
    proc = b.cli("get", "payroll.xlsx", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "payroll.xlsx").read_bytes() == src.read_bytes()
    # The strangers have heard the private swarm's announcements, and dropped them.
    for stranger in (outsider, other_swarm):
        wait_until(lambda s=stranger: s.json("status")["discovery"]["foreign"] > 0)
    for stranger in (outsider, other_swarm):
        assert stranger.json("ls") == []
        assert all(p["address"] not in ("127.0.0.2", "127.0.0.3") for p in stranger.json("peers"))
    port = int(a.json("status")["port"])
    key = derive_key(secret)
    path = f"/v1/content/{cid}/manifest"
    tried = refused = 0

    def get(headers: str) -> int:
        status, _ = _raw_http(
            "127.0.0.2",
            port,
            f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode(),
            source="127.0.0.9",
            tls=True,
        )
        return status

    def proof(
        key: bytes = key,
        path: str = path,
        now: float | None = None,
        client: str = "127.0.0.9",
        server: tuple[str, int] = ("127.0.0.2", port),
    ) -> str:
        now = time.time() if now is None else now
        return f"{AUTH_HEADER}: {request_header(key, 'GET', path, now, client, server)}\r\n"

    for headers in (
        "",
        f"{AUTH_HEADER}: 1:2:3\r\n",
        proof(key=derive_key("wrong")),
        proof(now=time.time() - 600),
        proof(path="/v1/catalog"),
        proof(client="127.0.0.7"),  # signed by another host: relayed
        proof(server=("127.0.0.3", port)),  # addressed to another peer
        proof(server=("127.0.0.2", port + 1)),
    ):
        tried += 1
        assert get(headers) == 401
        refused += 1
    valid = proof()
    assert get(valid) == 200
    tried += 1
    assert get(valid) == 401, "a replayed request must be refused"
    refused += 1
    tried += 1
    if outsider.cli("get", cid, "--wait", "2").returncode != 0:
        refused += 1
    alive = all(p.proc is not None and p.proc.poll() is None for p in (a, b))
    report("private swarm", tried, refused, alive)
    assert refused == tried == 10 and alive


def test_floods_slow_senders_and_huge_headers(swarm: Swarm, tmp_path: Path, report: Report) -> None:
    (tmp_path / "f.txt").write_text("still served")
    peer = swarm.start(2)
    cid = json.loads(peer.cli("share", "--json", str(tmp_path / "f.txt")).stdout)[0]["id"]
    port = int(peer.json("status")["port"])
    flood = []
    for _ in range(MAX_CONNECTIONS_PER_PEER + 16):  # more than one address may open
        sock = socket.socket()
        sock.bind(("127.0.0.9", 0))
        sock.connect(("127.0.0.2", port))
        sock.sendall(b"GET /v1/cat")  # a slow loris: never finishes its request line
        flood.append(sock)
    status, data = _raw_http(
        "127.0.0.2",
        port,
        f"GET /v1/content/{cid}/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 200 and data.endswith(b"still served"), "others are still served"
    huge, _ = _raw_http(
        "127.0.0.2",
        port,
        b"GET /v1/catalog HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"a" * 20000
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert huge in (400, 431, 0)
    wait_until(lambda: all(_closed(s) for s in flood), timeout=30, interval=0.5)
    hostile = len(flood) + 1  # the slow lorises and the huge header
    refused = sum(_closed(s) for s in flood) + (huge != 200)
    for sock in flood:
        sock.close()
    state = peer.json("status")
    assert state["connections_refused"] > 0 and state["slow_connections_cut"] > 0
    alive = peer.proc is not None and peer.proc.poll() is None
    report("connection floods and slow loris", hostile + 1, refused, alive)
    assert refused == hostile and alive


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


# ---- full disks -------------------------------------------------------------------------------

NEEDS_MOUNT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mounting a small tmpfs in a private mount namespace needs root and unshare",
)


@NEEDS_MOUNT
def test_disk_filling_up_mid_download_cannot_stop_it_or_is_reported_cleanly(
    tmp_path: Path, report: Report
) -> None:
    src = tmp_path / "src.bin"
    write_test_file(src, 6 * 1024 * 1024, seed=22)
    name, kind, files, _ = scan_path(str(src))
    manifest = hash_content(name, kind, files)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
import os, sys
sys.path[:0] = {sys.path!r}
from pathlib import Path
from swarmshare.core.manifest import decode_manifest
from swarmshare.errors import StoreError
import swarmshare.store.partfile as partfile
from swarmshare.store.partfile import PartFile
manifest = decode_manifest(bytes.fromhex({manifest.encoded.hex()!r}))
data = Path({str(src)!r}).read_bytes()

# Where the space can be reserved, a disk that fills up after the start cannot stop the
# download: the other program gets the error.
reserved = PartFile(Path({str(disk)!r}) / "reserved.bin", manifest)
reserved.open()
try:
    Path({str(disk)!r}, "filler").write_bytes(b"x" * (3 * 1024 * 1024))
    print("filler fitted")
except OSError:
    pass
for ref in manifest.chunks():
    reserved.write(ref, data[ref.offset:ref.offset + ref.length])
reserved.finish(force=False)
assert Path({str(disk)!r}, "reserved.bin").read_bytes() == data
os.remove(Path({str(disk)!r}, "reserved.bin"))
os.remove(Path({str(disk)!r}, "filler"))

# Where it cannot (a file system without fallocate), the write that meets the full disk fails
# with a clear error, and the part and its record stay consistent.
partfile.PREALLOCATE = False
part = PartFile(Path({str(disk)!r}) / "src.bin", manifest)
part.open()
Path({str(disk)!r}, "filler").write_bytes(b"x" * (3 * 1024 * 1024))  # the disk fills up
written = set()
error = ""
for ref in manifest.chunks():
    try:
        part.write(ref, data[ref.offset:ref.offset + ref.length])
        written.add(ref.index)
    except StoreError as exc:
        error = str(exc)
        break
try:
    part.save_record(written)  # may fail too: the disk is full; the old record stays whole
except StoreError:
    pass
part.close()
os.remove(Path({str(disk)!r}, "filler"))  # the user frees space, then resumes
reopened = PartFile(Path({str(disk)!r}) / "src.bin", manifest)
good = reopened.verify(reopened.open())
reopened.close()
lost = sum(manifest.chunk(i).length for i in written - good)
print(len(written), manifest.chunk_total, len(good), error, lost, sep="|")
"""
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount -t tmpfs -o size=8m tmpfs {disk} && {sys.executable} -c "$0"',
            script,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "filler fitted" not in proc.stdout
    written, total, good, error, lost = proc.stdout.strip().split("|")
    assert 0 < int(written) < int(total)
    assert "disk full" in error
    assert int(good) >= int(written) - 1  # what the record claims verifies (a torn last chunk)
    # One write met the full disk and was refused with an error; the process lived on.
    report("disk full mid-write", 1, int("disk full" in error), proc.returncode == 0, int(lost))


@NEEDS_MOUNT
def test_get_on_a_full_disk_says_so_and_resumes_later(
    swarm: Swarm, tmp_path: Path, report: Report
) -> None:
    src = tmp_path / "movie.bin"
    write_test_file(src, 8 * 1024 * 1024, seed=23)
    seeder = swarm.start(2)
    seeder.cli("share", str(src))
    disk = tmp_path / "disk"
    disk.mkdir()
    get = swarmshare_command(
        tmp_path / "h", "get", "movie.bin", "-o", str(disk), *swarm.discovery(), "--quiet"
    )
    command = " ".join(f"'{part}'" for part in get)
    script = (
        f"mount -t tmpfs -o size=4m tmpfs {disk} && ({command}; echo rc=$?) && "
        f"mount -o remount,size=32m {disk} && {command} && echo second=ok && "
        f"cmp {disk}/movie.bin {src} && echo same=yes"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "rc=1" in proc.stdout, proc.stdout + proc.stderr
    assert "not enough disk space" in proc.stderr or "disk full" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "second=ok" in proc.stdout and "same=yes" in proc.stdout, proc.stdout + proc.stderr
    lost = 0 if "same=yes" in proc.stdout else src.stat().st_size
    report("full disk on get", 1, int("rc=1" in proc.stdout), "second=ok" in proc.stdout, lost)


# ---- fuzzed chunk replies -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def chunk_client_against(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[Callable[[], Awaitable[bytearray | mmap.mmap]]]:
    """A real server on loopback answering with `answer`, and a function fetching a 16-byte
    chunk from it through the chunk client."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ChunkClient(local_address=None, idle_timeout=2.0, pool=BufferPool(1 << 20))
    try:
        yield lambda: client.fetch("127.0.0.1", port, "/v1/content/x/chunk/0", 16)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


@given(st.binary(max_size=600), st.sampled_from([0, 1, 2]))
@settings(max_examples=120)
def test_any_chunk_reply_is_taken_or_refused_never_crashes(reply: bytes, shape: int) -> None:
    prefix = [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n", b"HTTP/1.1 200 OK\r\n"][shape]

    async def scenario() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(prefix + reply)
            await writer.drain()
            writer.close()

        async with chunk_client_against(answer) as fetch:
            try:
                assert len(await fetch()) == 16  # taken only when exactly that length arrived
            except (ChunkFetchError, RemoteProtocolError):
                pass

    asyncio.run(scenario())


def test_kept_alive_connection_closed_or_overfed_by_the_peer_is_just_replaced() -> None:
    """A peer that closes an idle kept-alive connection (its keep-alive timeout), or sends bytes
    after a complete reply, costs that connection only: no error reaches the event loop, and
    the next request opens a new connection and succeeds."""
    trailer = [b"", b"unasked-for bytes"]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        served = 0
        replied = asyncio.Event()  # the client has its reply: the connection is idle
        dropped = asyncio.Event()  # the client has closed the connection

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + b"x" * 16)
            await writer.drain()
            await replied.wait()
            replied.clear()
            if trailer[served % 2]:
                writer.write(trailer[served % 2])  # bytes nobody asked for
            else:
                writer.write_eof()  # the peer's keep-alive timeout
            served += 1
            await writer.drain()
            assert await reader.read() == b"", "the client sent more on a spoiled connection"
            writer.close()
            dropped.set()

        async with chunk_client_against(answer) as fetch:
            for _ in range(4):
                assert bytes(await fetch()) == b"x" * 16
                replied.set()
                await asyncio.wait_for(dropped.wait(), 10)  # the client let the connection go
                dropped.clear()
        assert served == 4  # every request after the first needed a new connection
        assert errors == []

    asyncio.run(scenario())


def test_store_errors_name_the_disk(tmp_path: Path) -> None:
    manifest = Manifest.build("a", "file", [file_entry("a", 3, ["0" * 64])])
    part = PartFile(tmp_path / "missing-dir" / "a", manifest)
    with pytest.raises(StoreError, match="cannot write"):
        part.open()
    assert cli(tmp_path, "--version").returncode == 0
