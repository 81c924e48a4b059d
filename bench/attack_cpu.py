"""Benchmark: what one host announcing a huge, ever-changing catalogue costs an idle daemon.

Three peers on loopback: an honest seeder (127.0.0.2) sharing a 61 MiB file, a victim daemon
(127.0.0.3), and an attacker in this process (127.0.0.9) that serves a 100,000-item catalogue
and announces it at 200 datagrams/s (the per-source rate limit), each time with a new version
its catalogue never matches (the costliest lie: every announcement asks for a re-fetch). Prints,
in the same run, without the attack, during it, and after it: the victim's CPU while idle (per
cent of one core, over a few seconds) and the wall time of a 61 MiB `get` through the victim
from the seeder; and how many times the attacker's catalogue was fetched.

Usage: python bench/attack_cpu.py [SECONDS_PER_PHASE]   (default 8; loopback only)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

from swarmshare.app.loopback import spare_port
from swarmshare.core.announce import Announcement
from swarmshare.core.catalog import CatalogItem, make_catalog

SEEDER, VICTIM, ATTACKER = "127.0.0.2", "127.0.0.3", "127.0.0.9"
FILE_MIB = 61
ATTACK_ITEMS = 100_000
ANNOUNCEMENTS_PER_SECOND = 200


def swarmshare(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarmshare", "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )


def start_daemon(home: Path, address: str, discovery_port: int) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "swarmshare", "--home", str(home), "run", "--bind", address]
    argv += ["--broadcast", "127.255.255.255", "--discovery-port", str(discovery_port)]
    argv += ["--port", "0", "--control-port", "0", "--interval", "30", "--name", address]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (home / "control.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon at {address} did not start")
        time.sleep(0.05)
    return proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(pid: int, seconds: float) -> float:
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - start)


def timed_get(home: Path, out: Path) -> str:
    """The wall time of one `get` of the payload through the victim (or how it failed)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    start = time.monotonic()
    try:
        swarmshare(home, "get", "payload.bin", "-o", str(out))
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or ["?"]
        return f"FAILED after {time.monotonic() - start:.2f} s: {last[0]}"
    except subprocess.TimeoutExpired:
        return "FAILED: still running after 300 s"
    took = time.monotonic() - start
    assert (out / "payload.bin").stat().st_size == FILE_MIB * 1024 * 1024
    swarmshare(home, "unshare", "payload.bin")  # the victim must fetch it again
    return f"{took:5.2f} s"


class Attacker:
    """Serves a huge catalogue and announces it with a new, wrong version, from ATTACKER."""

    def __init__(self, discovery_port: int) -> None:
        self.discovery_port = discovery_port
        self.fetches = 0
        self.sent = 0
        self.peer_id = os.urandom(8).hex()
        items = [
            CatalogItem(f"{i:064x}", f"decoy-{i:06d}.bin", "file", 1 << 20, 1)
            for i in range(ATTACK_ITEMS)
        ]
        self.body = make_catalog(self.peer_id, items).encode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Attacker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        async def catalog(_request: web.Request) -> web.Response:
            self.fetches += 1
            return web.Response(body=self.body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/v1/catalog", catalog)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, ATTACKER, 0).start()
        port = int(runner.addresses[0][1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind((ATTACKER, 0))
            loop = asyncio.get_running_loop()
            start = loop.time()
            while not self._stop.is_set():
                due = int((loop.time() - start) * ANNOUNCEMENTS_PER_SECOND)
                while self.sent < due:
                    self.sent += 1
                    ann = Announcement(self.peer_id, port, "attacker", f"{self.sent:x}", 30.0)
                    sock.sendto(ann.encode(), ("127.255.255.255", self.discovery_port))
                await asyncio.sleep(0.02)
        await runner.cleanup()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    root = Path(tempfile.mkdtemp(prefix="swarmshare-attack-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = spare_port()
        payload = root / "payload.bin"
        with open(payload, "wb") as handle:
            handle.write(os.urandom(FILE_MIB * 1024 * 1024))
        procs.append(start_daemon(root / "seeder", SEEDER, port))
        swarmshare(root / "seeder", "share", str(payload))
        victim = start_daemon(root / "victim", VICTIM, port)
        procs.append(victim)
        deadline = time.monotonic() + 30
        while "payload.bin" not in swarmshare(root / "victim", "ls", "--json").stdout:
            if time.monotonic() > deadline:
                raise SystemExit("the victim never saw the seeder's file")
            time.sleep(0.2)
        out = root / "out"
        rows = []
        rows.append(
            ("no attack", idle_cpu_percent(victim.pid, seconds), timed_get(root / "victim", out))
        )
        with Attacker(port) as attacker:
            time.sleep(1.0)  # the first fetch of the huge catalogue
            rows.append(
                ("attack", idle_cpu_percent(victim.pid, seconds), timed_get(root / "victim", out))
            )
            sent, fetches = attacker.sent, attacker.fetches
        rows.append(
            ("after", idle_cpu_percent(victim.pid, seconds), timed_get(root / "victim", out))
        )
        listed = json.loads(swarmshare(root / "victim", "peers", "--json").stdout)
        print(
            f"attacker: {ATTACK_ITEMS:,}-item catalogue ({len(attacker.body) / 2**20:.1f} MiB), "
            f"{sent:,} announcements at {ANNOUNCEMENTS_PER_SECOND}/s, each a new wrong version; "
            f"its catalogue was fetched {fetches} times"
        )
        for label, cpu, took in rows:
            print(f"{label:>10}: victim idle CPU {cpu:5.1f} % of a core, {FILE_MIB} MiB get {took}")
        print(f"peers the victim lists after: {len(listed)}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
