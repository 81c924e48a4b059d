"""Benchmark: discovery latency. Share on one peer -> visible in the network list of 10 others.

Eleven real `swarmshare run` processes on 127.0.0.2..12 (loopback broadcast, a free discovery
port, the default 30 s interval, so only change announcements can explain what is measured).
Each trial shares a new file through one peer's control API and polls the other ten's
/api/network until all list it. Prints median and worst of 10 trials (goal: median < 300 ms).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEERS = 11
TRIALS = 10


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def api(home: Path, method: str, path: str, body: object = None) -> object:
    info = json.loads((home / "control.json").read_text())
    conn = http.client.HTTPConnection("127.0.0.1", info["port"], timeout=30)
    payload = None if body is None else json.dumps(body).encode()
    conn.request(method, "/api/" + path, payload, {"Authorization": f"Bearer {info['token']}"})
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="swarmshare-bench-") as tmp:
        root = Path(tmp)
        procs = []
        homes = []
        for i in range(2, 2 + PEERS):
            home = root / f"peer{i}"
            homes.append(home)
            cmd = [
                sys.executable,
                "-m",
                "swarmshare",
                "--home",
                str(home),
                "run",
                "--bind",
                f"127.0.0.{i}",
                "--broadcast",
                "127.255.255.255",
                "--discovery-port",
                str(port),
                "--port",
                "0",
                "--control-port",
                "0",
            ]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        try:
            while not all((h / "control.json").exists() for h in homes):
                time.sleep(0.05)
            while not all(len(api(h, "GET", "peers")) == PEERS - 1 for h in homes):  # type: ignore[arg-type]
                time.sleep(0.05)
            source, others = homes[0], homes[1:]
            worst_per_trial = []
            per_peer = []
            for trial in range(TRIALS):
                path = root / f"trial{trial}.bin"
                path.write_bytes(os.urandom(100_000))
                start = time.perf_counter()
                api(source, "POST", "share", {"paths": [str(path)]})
                pending = set(range(len(others)))
                while pending:
                    for k in list(pending):
                        names = {i["name"] for i in api(others[k], "GET", "network")}  # type: ignore[union-attr,index]
                        if path.name in names:
                            pending.discard(k)
                            per_peer.append(time.perf_counter() - start)
                worst_per_trial.append(time.perf_counter() - start)
            print(f"peers: 1 sharing + {len(others)} watching, {TRIALS} trials, interval 30 s")
            print(
                f"all 10 see it: median {statistics.median(worst_per_trial) * 1000:.0f} ms,"
                f" worst {max(worst_per_trial) * 1000:.0f} ms"
            )
            print(
                f"any one peer:  median {statistics.median(per_peer) * 1000:.0f} ms,"
                f" worst {max(per_peer) * 1000:.0f} ms  (goal: median < 300 ms; seed: up to 60 s)"
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(15)


if __name__ == "__main__":
    main()
