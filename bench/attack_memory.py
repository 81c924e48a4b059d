"""Benchmark: a daemon's peak memory while fake peers answer its catalogue fetches with a huge
Content-Length and then a byte every few seconds (the memory attack of the hostile-host issue).

One real daemon runs on 127.0.0.2. It first idles for SECONDS (its peak RSS then is the
baseline); then N fake peers, spread over 127.0.0.10-249 (several peer IDs per address), each
with its own HTTP port, announce themselves on the loopback broadcast 127.255.255.255 every
2 s with a catalogue version the daemon does not have. Every catalogue request they get is
answered with `Content-Length: 33554432` (the catalogue limit) and then one byte every
TRICKLE seconds, for SECONDS more. Printed: the daemon's peak RSS (VmHWM) without and with the
attack, how many catalogue requests the fake peers got, and how many the daemon gave up.

The daemon's descriptor limit is raised to its hard limit (1,024 peers need more than the
usual soft limit of 1,024 descriptors); so is this process's.

Usage: python bench/attack_memory.py [--peers N] [--seconds S] [--trickle T]   (loopback only)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from swarmshare.app.loopback import spare_port
from swarmshare.core.announce import Announcement
from swarmshare.limits import MAX_CATALOG_BYTES

DAEMON = "127.0.0.2"
FAKE_ADDRESSES = [f"127.0.0.{i}" for i in range(10, 250)]
BROADCAST = "127.255.255.255"
ANNOUNCE_EVERY_SECONDS = 2.0


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of process `pid`, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


def raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Attack:
    """N fake peers: announcements, and catalogue replies that trickle."""

    def __init__(self, peers: int, discovery_port: int, trickle: float) -> None:
        self.peers = peers
        self.discovery_port = discovery_port
        self.trickle = trickle
        self.requests = 0
        self.cut = 0
        self.trickled_bytes = 0
        self.open = 0
        self.max_open = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MAX_CATALOG_BYTES)
                await writer.drain()
                for _ in range(MAX_CATALOG_BYTES):
                    await asyncio.sleep(self.trickle)
                    writer.write(b"{")
                    await writer.drain()
                    self.trickled_bytes += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            self.cut += 1
        except asyncio.CancelledError:
            pass  # the end of the attack
        finally:
            self.open -= 1
            writer.close()

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        servers = []
        announcements: list[tuple[socket.socket, bytes]] = []
        senders: dict[str, socket.socket] = {}
        for index in range(self.peers):
            address = FAKE_ADDRESSES[index % len(FAKE_ADDRESSES)]
            server = await asyncio.start_server(self.serve, address, 0)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            if address not in senders:
                sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sender.bind((address, 0))
                sender.setblocking(False)
                senders[address] = sender
            datagram = Announcement(
                secrets.token_hex(8), port, f"fake-{index}", secrets.token_hex(16), 10.0
            ).encode()
            announcements.append((senders[address], datagram))
        end = loop.time() + seconds
        try:
            while loop.time() < end:
                for sender, datagram in announcements:
                    try:
                        sender.sendto(datagram, (BROADCAST, self.discovery_port))
                    except BlockingIOError:
                        pass
                await asyncio.sleep(ANNOUNCE_EVERY_SECONDS)
        finally:
            for server in servers:
                server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for sender in senders.values():
                sender.close()


def watch(pid: int, seconds: float) -> dict[str, int]:
    """Sample the daemon's memory for `seconds` (in a thread: the attack owns the loop)."""
    end = time.monotonic() + seconds
    last = memory_kib(pid)
    while time.monotonic() < end:
        time.sleep(0.5)
        last = memory_kib(pid)
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--trickle", type=float, default=4.0)
    args = parser.parse_args()
    raise_file_limit()
    port = spare_port()
    with tempfile.TemporaryDirectory(prefix="swarmshare-attack-") as tmp:
        home = Path(tmp) / "victim"
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swarmshare",
                "--home",
                str(home),
                "run",
                "--bind",
                DAEMON,
                "--broadcast",
                BROADCAST,
                "--discovery-port",
                str(port),
                "--port",
                "0",
                "--control-port",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "daemon.err", "wb"),  # noqa: SIM115 - the child owns it
            preexec_fn=raise_file_limit,
        )
        try:
            while not (home / "control.json").exists():
                if daemon.poll() is not None:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.05)
            idle = watch(daemon.pid, args.seconds)
            attack = Attack(args.peers, port, args.trickle)

            async def attacked() -> dict[str, int]:
                watcher = asyncio.ensure_future(asyncio.to_thread(watch, daemon.pid, args.seconds))
                await attack.run(args.seconds)
                return await watcher

            under = asyncio.run(attacked())
            peers = subprocess.run(
                [sys.executable, "-m", "swarmshare", "--home", str(home), "peers", "--json"],
                capture_output=True,
                text=True,
            )
            known = len(json.loads(peers.stdout)) if peers.returncode == 0 else -1
        finally:
            daemon.terminate()
            daemon.wait(30)
        errors = (Path(tmp) / "daemon.err").read_text(errors="replace")

    print(
        f"{args.peers} fake peers on {min(args.peers, len(FAKE_ADDRESSES))} loopback addresses,"
        f" each announcing a {MAX_CATALOG_BYTES >> 20} MiB catalogue, then 1 byte every"
        f" {args.trickle:g} s; {args.seconds:g} s per phase"
    )
    print(
        f"daemon without attack: peak RSS (VmHWM) {idle['VmHWM'] / 1024:.0f} MiB,"
        f" RSS {idle['VmRSS'] / 1024:.0f} MiB"
    )
    print(
        f"daemon under attack:   peak RSS (VmHWM) {under['VmHWM'] / 1024:.0f} MiB,"
        f" RSS at the end {under['VmRSS'] / 1024:.0f} MiB"
    )
    print(
        f"fake peers known to the daemon at the end: {known}; catalogue requests they got:"
        f" {attack.requests}, at most {attack.max_open} connections open at once;"
        f" {attack.cut} cut by the daemon; {attack.trickled_bytes} bytes trickled"
    )
    print(f"tracebacks in the daemon's stderr: {errors.count('Traceback')}")


if __name__ == "__main__":
    main()
