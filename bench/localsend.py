"""A LocalSend sender's rate into swarmshare against its rate into another instance of itself.

The sender is localsendd (PyPI, run by tests/localsend_peer.py with its multicast discovery and
subnet scan stubbed out: loopback only). It sends one file (1 GiB by default) over HTTPS, in
turns, to a localsendd receiver on 127.0.0.5 and to a `swarmshare run --localsend --accept all`
peer on 127.0.0.2; each received copy is checked (size and SHA-256, as both receivers verify the
sender's hash) and removed before the next turn (swarmshare's copy once it has been shared).
Printed: each turn's upload time and rate (from the sender's first body byte to the end of the
session) and the CPU time the receiver used for it, the best and the median of each, and their
ratio swarmshare / localsendd (goal: at least 0.9). On a busy machine single turns vary a lot:
take several rounds (the CPU times vary less).

Usage: python bench/localsend.py [SIZE_MIB] [ROUNDS]   (defaults 1024 5; loopback only)

With `--swarm [SIZE_MIB]` (default 64) it measures `swarmshare send` to three swarmshare
receivers at once instead: how many copies the sender uploaded (about one when they swarm).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import ensure_bytecode
from swarmshare.app.loopback import LoopbackPeer, spare_port

TESTS = Path(__file__).resolve().parents[1] / "tests"

DRIVER = TESTS / "localsend_peer.py"
MIB = 1 << 20


def make_file(path: Path, size: int) -> None:
    block = os.urandom(4 * MIB)
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)
            block = block[1:] + block[:1]


def driver_env() -> dict[str, str]:
    if importlib.util.find_spec("localsendd") is None:
        raise SystemExit("localsendd is not installed: pip install -e '.[dev]'")
    return dict(os.environ)


def send(env: dict[str, str], to: str, file: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "send", "--to", to, str(file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"sender failed: {proc.stderr.strip()[-500:]}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result.get("kind") != "sent":
        raise SystemExit(f"sender did not finish: {result}")
    return result


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def library(peer: LoopbackPeer) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = peer.control().get("library")
    return rows


def swarm_send(size_mib: int) -> None:
    """`swarmshare send` to three swarmshare receivers at once, the sender's daemon uploading at
    8 MiB/s: how many copies it uploaded (about one when the receivers swarm)."""
    size = size_mib * MIB
    root = Path(tempfile.mkdtemp(prefix="bench-localsend-swarm-"))
    source = root / "dataset.bin"
    make_file(source, size)
    discovery, port = spare_port(), spare_port()
    sender = LoopbackPeer(root / "sender", "127.0.0.4", discovery, "--upload-limit", "8M")
    peers = [sender.start()]
    try:
        for i in (2, 3, 5):
            receiver = LoopbackPeer(
                root / f"r{i}",
                f"127.0.0.{i}",
                discovery,
                "--localsend",
                "--localsend-port",
                str(port),
                "--localsend-group",
                "127.255.255.255",
                "--accept",
                "all",
                "--download-dir",
                str(root / f"inbox{i}"),
            )
            peers.append(receiver.start())
        targets = [arg for i in (2, 3, 5) for arg in ("--to", f"127.0.0.{i}:{port}")]
        started = time.monotonic()
        proc = subprocess.run(
            sender.command("send", str(source), *targets, "--bind", "127.0.0.4"),
            capture_output=True,
            text=True,
            timeout=3600,
        )
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"send failed: {proc.stderr.strip()[-500:]}")
        served = int(sender.control().get("status")["served_bytes"])
        print(
            f"send of {size_mib} MiB to 3 swarmshare receivers: {seconds:.1f} s, the sender"
            f" uploaded {served / size:.2f} copies (3 without swarming)"
        )
    finally:
        for peer in peers:
            peer.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ensure_bytecode()
    if sys.argv[1:2] == ["--swarm"]:
        swarm_send(int(sys.argv[2]) if len(sys.argv) > 2 else 64)
        return
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    size = size_mib * MIB
    env = driver_env()
    root = Path(tempfile.mkdtemp(prefix="bench-localsend-"))
    source = root / "big.bin"
    make_file(source, size)
    into_lsd, into_ours = root / "lsd", root / "ours"
    into_lsd.mkdir()
    lsd_port, ours_port = spare_port(), spare_port()
    serve = ["serve", "--bind", "127.0.0.5", "--port", str(lsd_port), "--dir", str(into_lsd)]
    lsd = subprocess.Popen(
        [sys.executable, str(DRIVER), *serve],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert lsd.stdout is not None
    if not lsd.stdout.readline().startswith("ready"):
        raise SystemExit("localsendd did not start")
    peer = LoopbackPeer(
        root / "home",
        "127.0.0.2",
        spare_port(),
        "--localsend",
        "--localsend-port",
        str(ours_port),
        "--localsend-group",
        "127.255.255.255",
        "--accept",
        "all",
        "--download-dir",
        str(into_ours),
    ).start()
    times: dict[str, list[float]] = {"localsendd": [], "swarmshare": []}
    cpu: dict[str, list[float]] = {"localsendd": [], "swarmshare": []}
    assert peer.proc is not None
    peer_pid = peer.proc.pid
    try:
        print(f"{size_mib} MiB from localsendd, {rounds} round(s), HTTPS on loopback")
        for n in range(rounds):
            for target, to, folder in (
                ("localsendd", f"127.0.0.5:{lsd_port}", into_lsd),
                ("swarmshare", f"127.0.0.2:{ours_port}", into_ours),
            ):
                pid = lsd.pid if target == "localsendd" else peer_pid
                cpu_before = cpu_seconds(pid)
                result = send(env, to, source)
                cpu[target].append(cpu_seconds(pid) - cpu_before)
                seconds = float(str(result["upload_seconds"]))
                got = folder / source.name
                if got.stat().st_size != size:
                    raise SystemExit(f"{target} holds {got.stat().st_size} bytes, not {size}")
                times[target].append(seconds)
                print(
                    f"  round {n + 1} to {target:10}: {seconds:6.2f} s  "
                    f"{size / MIB / seconds:7.1f} MiB/s  receiver CPU {cpu[target][-1]:5.2f} s"
                )
                if target == "swarmshare":  # wait for it to be shared, then start afresh
                    deadline = time.monotonic() + 600
                    while not library(peer) and time.monotonic() < deadline:
                        time.sleep(0.2)
                    peer.control().post("unshare", {"ref": source.name})
                got.unlink()
        for label, pick in (("best", min), ("median", statistics.median)):
            t = {k: pick(v) for k, v in times.items()}
            print(
                f"{label}: localsendd {size / MIB / t['localsendd']:.1f} MiB/s, swarmshare "
                f"{size / MIB / t['swarmshare']:.1f} MiB/s; ratio swarmshare/localsendd "
                f"{t['localsendd'] / t['swarmshare']:.2f} (goal >= 0.9)"
            )
        c = {k: statistics.median(v) for k, v in cpu.items()}
        print(
            f"receiver CPU per copy (median, less noisy than rates on a busy machine): "
            f"localsendd {c['localsendd']:.2f} s, swarmshare {c['swarmshare']:.2f} s"
        )
    finally:
        peer.stop()
        lsd.terminate()
        lsd.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
