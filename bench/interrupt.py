"""Interrupt a big download at random points, again and again; check every pause holds.

A file (2 GiB by default) on 3 loopback seeders; a 4th peer's `swarmshare get` is sent SIGINT
once the part file's resume record lists a random number of chunks (seeded, so a run can be
repeated), until TIMES interrupts have landed before the end (one that comes after the last
chunk is reported and not counted). Each time: the command must say "paused" and exit 130, and
the part file must not change after that (its SHA-256 is taken when the command has exited and
again half a second later). The next `get` resumes; after the last interrupt one `get` runs to
the end and the result must be byte-exact. Done twice: through a running daemon (which keeps
running and must stop writing) and without one.

Usage: python bench/interrupt.py [SIZE_MIB] [TIMES] [SEED]   (defaults 2048 20 1; loopback only)
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import ensure_bytecode
from swarmshare.app.loopback import LoopbackPeer, LoopbackSwarm

SEEDERS = [2, 3, 4]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def chunks_in(record: Path) -> int:
    try:
        have = json.loads(record.read_text())["have"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(bin(byte).count("1") for byte in base64.b64decode(have))


def get_command(home: Path, out: Path, lab: LoopbackSwarm, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "swarmshare",
        "--home",
        str(home),
        "get",
        "big.bin",
        "-o",
        f"{out}/",
        "--quiet",
        "--broadcast",
        "127.255.255.255",
        "--discovery-port",
        str(lab.discovery_port),
        "--bind",
        "127.0.0.20",
        "--wait",
        "10",
        *extra,
    ]


def interrupts(
    lab: LoopbackSwarm, home: Path, out: Path, total: int, times: int, rng: random.Random
) -> tuple[int, int, int]:
    """(interrupts that paused and held, interrupts that came too late, failures)."""
    record = out / "big.bin.part.swarmshare"
    part = out / "big.bin.part"
    held = late = failed = 0
    attempt = -1
    while held + failed < times and attempt < 3 * times:  # interrupts that came too late
        attempt += 1  # (the download was complete) are not counted, and tried again
        done_before = chunks_in(record)
        target = rng.randint(done_before + 1, max(done_before + 1, total - 8))
        proc = subprocess.Popen(
            get_command(home, out, lab),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        while proc.poll() is None and chunks_in(record) < target:
            time.sleep(0.002)
        if proc.poll() is not None:
            late += 1
            print(f"  {attempt + 1:2}: finished before chunk {target}: too late, not counted")
            (out / "big.bin").unlink(missing_ok=True)
            continue
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        at = chunks_in(record)
        if proc.returncode == 0 and "already complete" in stderr:
            late += 1
            print(f"  {attempt + 1:2}: complete before the pause took effect: not counted")
            (out / "big.bin").unlink(missing_ok=True)
            continue
        if proc.returncode != 130 or "paused" not in stderr:
            failed += 1
            print(f"  {attempt + 1:2}: exit {proc.returncode}: {stderr.strip()[-200:]}")
            continue
        first = sha256(part)
        time.sleep(0.5)  # bench only: give a writer that was not stopped time to show itself
        second = sha256(part)
        if first != second:
            failed += 1
            print(f"  {attempt + 1:2}: the part file changed after 'paused'")
            continue
        held += 1
        print(f"  {attempt + 1:2}: SIGINT at {target} chunks, paused at {at}/{total}: held")
    return held, late, failed


def run(mode: str, root: Path, lab: LoopbackSwarm, src: Path, total: int, args: list[str]) -> bool:
    times, seed = int(args[1]), int(args[2])
    rng = random.Random(seed)
    out = root / f"out-{mode}"
    out.mkdir()
    home = root / f"home-{mode}"
    daemon = None
    if mode == "daemon":
        daemon = lab.add(LoopbackPeer(home, "127.0.0.20", lab.discovery_port)).start()
    print(f"{mode}: {times} interrupts, seed {seed}")
    start = time.perf_counter()
    held, late, failed = interrupts(lab, home, out, total, times, rng)
    final = subprocess.run(get_command(home, out, lab), capture_output=True, text=True)
    exact = final.returncode == 0 and sha256(out / "big.bin") == sha256(src)
    print(
        f"{mode}: held {held}, too late {late}, failed {failed}; resumed to the end:"
        f" {'byte-exact' if exact else 'WRONG: ' + final.stderr.strip()[-200:]}"
        f" ({time.perf_counter() - start:.0f} s)"
    )
    if daemon is not None:
        daemon.stop()
    return failed == 0 and exact


def main() -> None:
    ensure_bytecode()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background: the
        signal.signal(signal.SIGINT, signal.default_int_handler)  # commands must not inherit it
    args = (sys.argv[1:] + ["2048", "20", "1"][len(sys.argv) - 1 :])[:3]
    size_mib = int(args[0])
    with tempfile.TemporaryDirectory(prefix="swarmshare-interrupt-") as tmp:
        root = Path(tmp)
        src = root / "big.bin"
        with open(src, "wb") as handle:
            for index in range(size_mib):
                handle.write(hashlib.sha256(str(index).encode()).digest() * 32768)
        with LoopbackSwarm(root) as lab:
            for index in SEEDERS:
                home = root / f"seed{index}"
                subprocess.run(
                    [sys.executable, "-m", "swarmshare", "--home", str(home), "share", str(src)],
                    check=True,
                    capture_output=True,
                )
                lab.start(index, home=home, wait=False)
            lab.wait_ready()
            total = int(lab.peers[0].control().get("library")[0]["chunks"])
            ok = all(run(mode, root, lab, src, total, args) for mode in ("daemon", "local"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
