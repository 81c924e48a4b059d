"""LocalSend interop on loopback: a swarmshare peer run with --localsend, `swarmshare send`, and a
LocalSend implementation that is not ours (localsendd from PyPI, see localsend_peer.py: its
multicast discovery and subnet scan are stubbed out, every device is named by its loopback
address; the swarmshare side announces to 127.255.255.255, never to a multicast group).

localsendd comes with the `dev` extra; where it is not installed, the tests that need it are
skipped, saying why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from swarmshare.app.loopback import spare_port

from conftest import Swarm
from helpers import PeerProcess, cli, control, wait_until, write_test_file

DRIVER = Path(__file__).parent / "localsend_peer.py"
GROUP = "127.255.255.255"
MIB = 1 << 20


@pytest.fixture(scope="session")
def localsendd_ready() -> None:
    """Skips the test when localsendd (or the openssl it needs) is not here."""
    if importlib.util.find_spec("localsendd") is None:
        pytest.skip(
            "localsendd (the LocalSend implementation tested against) is not installed:"
            " pip install -e '.[dev]'"
        )
    if shutil.which("openssl") is None:
        pytest.skip("localsendd makes its certificate with openssl, which is not on PATH")


class Driver:
    """localsendd processes of one test, all stopped after it."""

    def __init__(self, root: Path) -> None:
        self.env = dict(os.environ)
        self.root = root
        self.procs: list[subprocess.Popen[str]] = []

    def popen(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(DRIVER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.procs.append(proc)
        return proc

    def serve(self, address: str, folder: Path, *extra: str) -> tuple[int, str]:
        """A localsendd receiver on `address`: its port and fingerprint."""
        port = spare_port()
        folder.mkdir(parents=True, exist_ok=True)
        proc = self.popen(
            "serve", "--bind", address, "--port", str(port), "--dir", str(folder), *extra
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["ready"], proc.stderr.read() if proc.stderr else ""
        return port, line[1]

    def send(self, to: str, *args: str) -> subprocess.Popen[str]:
        """A localsendd sender (read its result with `result`)."""
        return self.popen("send", "--to", to, *args)

    @staticmethod
    def result(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
        out, errs = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, errs
        value: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return value

    @staticmethod
    def wait_paused(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "paused"

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@pytest.fixture
def driver(localsendd_ready: None, tmp_path: Path) -> Iterator[Driver]:
    d = Driver(tmp_path)
    yield d
    d.close()


def start_receiver(
    swarm: Swarm,
    index: int,
    inbox: Path,
    *extra: str,
    name: str | None = None,
    port: int | None = None,
) -> tuple[PeerProcess, int]:
    """A swarmshare peer on 127.0.0.`index` receiving LocalSend into `inbox`: it and its port
    (`port`: the one all the test's receivers share, each on its own address)."""
    port = port or spare_port()
    peer = swarm.start(
        index,
        "--localsend",
        "--localsend-port",
        str(port),
        "--localsend-group",
        GROUP,
        "--download-dir",
        str(inbox),
        *(("--name", name) if name else ()),
        *extra,
    )
    return peer, port


def no_trace(folder: Path) -> list[str]:
    """Every name under `folder` (to show that nothing, not even a part file, was left)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def library_names(peer: PeerProcess) -> list[str]:
    return [item["name"] for item in control(peer.home, "GET", "library")]


def test_localsendd_sends_to_swarmshare_and_it_is_shared(
    swarm: Swarm, driver: Driver, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    peer, port = start_receiver(swarm, 2, inbox, "--accept", "all")
    fingerprint = control(peer.home, "GET", "status")["localsend"]["fingerprint"]
    files = [tmp_path / "photo.jpg", tmp_path / "notes.txt"]
    write_test_file(files[0], 3 * MIB + 17, seed=1)
    files[1].write_text("hello from a phone\n")
    # The sender pins the certificate it is shown to the fingerprint swarmshare announces.
    result = driver.result(
        driver.send(f"127.0.0.2:{port}", "--fingerprint", fingerprint, *map(str, files))
    )
    assert result["kind"] == "sent", result
    for f in files:
        assert (inbox / f.name).read_bytes() == f.read_bytes()
    wait_until(lambda: sorted(library_names(peer)) == ["notes.txt", "photo.jpg"], timeout=30)
    assert no_trace(inbox) == ["notes.txt", "photo.jpg"]


def test_swarmshare_send_to_localsendd(swarm: Swarm, driver: Driver, tmp_path: Path) -> None:
    received = tmp_path / "received"
    port, _ = driver.serve("127.0.0.5", received)
    f = tmp_path / "report.pdf"
    write_test_file(f, 2 * MIB + 5, seed=2)
    proc = cli(
        tmp_path / "home", "send", str(f), "--to", f"127.0.0.5:{port}", "--bind", "127.0.0.9"
    )
    assert proc.returncode == 0, proc.stderr
    assert "sent 1 file(s)" in proc.stdout
    assert (received / "report.pdf").read_bytes() == f.read_bytes()


def test_send_by_device_name_between_swarmshare_peers(swarm: Swarm, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _peer, port = start_receiver(swarm, 3, inbox, "--accept", "all", name="office-laptop")
    f = tmp_path / "slides.odp"
    write_test_file(f, MIB, seed=3)
    proc = cli(
        tmp_path / "home",
        "send",
        str(f),
        "--to",
        "Office-Laptop",
        "--bind",
        "127.0.0.9",
        "--localsend-port",
        str(port),
        "--localsend-group",
        GROUP,
        "--wait",
        "20",
    )
    assert proc.returncode == 0, proc.stderr
    assert "office-laptop (127.0.0.3:" in proc.stdout
    assert (inbox / "slides.odp").read_bytes() == f.read_bytes()


def test_wrong_pin_both_ways(swarm: Swarm, driver: Driver, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _peer, port = start_receiver(swarm, 2, inbox, "--accept", "pin", "--pin", "4711")
    f = tmp_path / "a.txt"
    f.write_text("secret\n")
    result = driver.result(driver.send(f"127.0.0.2:{port}", "--pin", "1234", str(f)))
    assert result["kind"] == "pin_required", result
    assert no_trace(inbox) == []
    result = driver.result(driver.send(f"127.0.0.2:{port}", "--pin", "4711", str(f)))
    assert result["kind"] == "sent", result
    assert (inbox / "a.txt").read_text() == "secret\n"

    received = tmp_path / "received"
    lport, _ = driver.serve("127.0.0.5", received, "--pin", "9999")
    proc = cli(tmp_path / "home", "send", str(f), "--to", f"127.0.0.5:{lport}", "--pin", "1")
    assert proc.returncode == 1
    assert "wants a PIN: the PIN given is wrong" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert no_trace(received) == []


def test_offer_waits_in_the_inbox_refused_then_accepted(
    swarm: Swarm, driver: Driver, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    peer, port = start_receiver(swarm, 2, inbox, "--accept", "ask")
    f = tmp_path / "holiday.mp4"
    write_test_file(f, MIB, seed=4)

    sender = driver.send(f"127.0.0.2:{port}", str(f))
    wait_until(lambda: control(peer.home, "GET", "inbox"), timeout=30)
    listed = peer.cli("inbox")
    assert "holiday.mp4" in listed.stdout, listed.stderr
    assert "accept ask, 1 offer(s) waiting" in peer.cli("status").stdout
    offer = control(peer.home, "GET", "inbox")[0]
    refused = peer.cli("inbox", "refuse", offer["id"])
    assert refused.returncode == 0, refused.stderr
    assert driver.result(sender)["kind"] == "declined"
    assert no_trace(inbox) == []

    sender = driver.send(f"127.0.0.2:{port}", str(f))
    wait_until(lambda: control(peer.home, "GET", "inbox"), timeout=30)
    offer = control(peer.home, "GET", "inbox")[0]
    assert peer.cli("inbox", "accept", offer["id"]).returncode == 0
    assert driver.result(sender)["kind"] == "sent"
    assert (inbox / "holiday.mp4").read_bytes() == f.read_bytes()

    # A LocalSend device that refuses: swarmshare send says so in one line.
    lport, _ = driver.serve("127.0.0.5", tmp_path / "refuser", "--refuse")
    proc = cli(tmp_path / "home", "send", str(f), "--to", f"127.0.0.5:{lport}")
    assert proc.returncode == 1
    assert "refused the files" in proc.stderr, proc.stderr


@pytest.mark.parametrize("how", ["cancel", "cut"])
def test_a_transfer_stopped_midway_leaves_nothing(
    swarm: Swarm, driver: Driver, tmp_path: Path, how: str
) -> None:
    inbox = tmp_path / "inbox"
    peer, port = start_receiver(swarm, 2, inbox, "--accept", "all")
    f = tmp_path / "big.iso"
    write_test_file(f, 8 * MIB, seed=5)
    sender = driver.send(f"127.0.0.2:{port}", "--pause-after", str(2 * MIB), str(f))
    driver.wait_paused(sender)
    # The sender stopped after 2 MiB: the receiver holds them in a part file, not under the name.
    wait_until(
        lambda: any(p.name.endswith(".part") for p in inbox.iterdir()) if inbox.exists() else False
    )
    assert not (inbox / "big.iso").exists()
    assert sender.stdin is not None
    if how == "cancel":
        sender.stdin.write("cancel\n")
        sender.stdin.flush()
        assert driver.result(sender)["kind"] == "cancelled"
    else:
        sender.kill()
        sender.communicate()
    wait_until(lambda: no_trace(inbox) == [])
    assert control(peer.home, "GET", "status")["localsend"]["sessions"] == 0
    assert library_names(peer) == []


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "../../etc/passwd",
        "/tmp/abs",
        "a/../../b",
        "bell\x07.txt",
        "line\nfeed",
        "C:evil",
        "..",
        "",
    ],
)
def test_names_that_traverse_are_refused_with_nothing_written(
    swarm: Swarm, tmp_path: Path, name: str
) -> None:
    inbox = tmp_path / "box" / "inbox"
    peer, port = start_receiver(swarm, 2, inbox, "--accept", "all")
    body = {
        "info": {
            "alias": "evil",
            "version": "2.1",
            "fingerprint": "x",
            "port": 1,
            "protocol": "https",
        },
        "files": {"f1": {"id": "f1", "fileName": name, "size": 4, "fileType": "text/plain"}},
    }

    async def offer() -> int:
        connector = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.9", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.post(f"https://127.0.0.2:{port}/api/localsend/v2/prepare-upload", json=body) as r,
        ):
            return r.status

    assert asyncio.run(offer()) == 400
    assert no_trace(tmp_path / "box") == []
    assert control(peer.home, "GET", "status")["localsend"]["sessions"] == 0


def test_upload_longer_than_announced_is_refused(swarm: Swarm, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _peer, port = start_receiver(swarm, 2, inbox, "--accept", "all")
    base = f"https://127.0.0.2:{port}/api/localsend/v2"
    body = {
        "info": {"alias": "liar", "fingerprint": "y"},
        "files": {"f1": {"id": "f1", "fileName": "short.txt", "size": 4, "fileType": "text/plain"}},
    }

    async def run() -> tuple[int, int]:
        connector = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.9", 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.post(f"{base}/prepare-upload", json=body) as r:
                grant = await r.json()
            params = {
                "sessionId": grant["sessionId"],
                "fileId": "f1",
                "token": grant["files"]["f1"],
            }
            async with http.post(f"{base}/upload", params=params, data=b"12345678") as r:
                too_long = r.status
            # Another address with the right token is not the sender.
            other = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.10", 0))
            async with (
                aiohttp.ClientSession(connector=other) as http2,
                http2.post(f"{base}/upload", params=params, data=b"1234") as r,
            ):
                stranger = r.status
            return too_long, stranger

    assert asyncio.run(run()) == (400, 403)
    assert no_trace(inbox) == []


def test_two_senders_at_once(swarm: Swarm, driver: Driver, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _peer, port = start_receiver(swarm, 2, inbox, "--accept", "all")
    files = [tmp_path / "one.bin", tmp_path / "two.bin"]
    for i, f in enumerate(files):
        write_test_file(f, 4 * MIB, seed=10 + i)
    senders = [driver.send(f"127.0.0.2:{port}", "--pause-after", str(MIB), str(f)) for f in files]
    for s in senders:
        driver.wait_paused(s)
    # Both sessions are open and mid-file at the same time (LocalSend's own receiver says 409).
    wait_until(lambda: len([p for p in inbox.iterdir() if p.name.endswith(".part")]) == 2)
    for s in senders:
        assert s.stdin is not None
        s.stdin.write("go\n")
        s.stdin.flush()
    assert [driver.result(s)["kind"] for s in senders] == ["sent", "sent"]
    for f in files:
        assert (inbox / f.name).read_bytes() == f.read_bytes()


def test_config_shows_the_localsend_keys(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('localsend = true\naccept = "pin"\npin = "2468"\n')
    proc = cli(tmp_path / "home", "--config", str(config), "config", "--json")
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout)["settings"]
    assert settings["localsend"]["value"] is True
    assert settings["accept"]["value"] == "pin"
    assert settings["pin"]["value"] == "(set, not shown)"
    assert settings["localsend-port"]["value"] == 53317
    bad = tmp_path / "bad.toml"
    bad.write_text('accept = "maybe"\n')
    proc = cli(tmp_path / "home", "--config", str(bad), "config")
    assert proc.returncode != 0 and "must be ask, pin or all" in proc.stderr
    proc = cli(tmp_path / "home", "run", "--localsend", "--accept", "pin", "--bind", "127.0.0.2")
    assert proc.returncode != 0 and "--accept pin needs a PIN" in proc.stderr


def test_send_to_several_swarmshare_peers_makes_them_swarm(swarm: Swarm, tmp_path: Path) -> None:
    # The sender's daemon uploads at 256 KiB/s, far below loopback speed: three receivers each
    # fetching 4 MiB from it alone would take it 48 s. They fetch through the swarm, and
    # chunks come to them from one another. (How many copies the sender uploads is a figure of
    # bench/localsend.py --swarm, as it depends on the machine's speed.)
    sender = swarm.start(4, "--upload-limit", "256K")
    port = spare_port()
    receivers = [
        start_receiver(swarm, i, tmp_path / f"inbox{i}", "--accept", "all", port=port)[0]
        for i in (2, 3, 5)
    ]
    f = tmp_path / "dataset.bin"
    write_test_file(f, 4 * MIB, seed=20)
    proc = cli(
        sender.home,
        "send",
        str(f),
        *[arg for i in (2, 3, 5) for arg in ("--to", f"127.0.0.{i}:{port}")],
        "--bind",
        "127.0.0.4",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(through the swarm)") == 3, proc.stdout
    for i in (2, 3, 5):
        assert (tmp_path / f"inbox{i}" / "dataset.bin").read_bytes() == f.read_bytes()
    from_others = 0
    for peer in receivers:
        (download,) = control(peer.home, "GET", "downloads")
        assert set(download["by_peer"]) <= {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
        from_others += sum(n for a, n in download["by_peer"].items() if a != "127.0.0.4")
    assert from_others > 0


def test_a_swarm_offer_whose_content_is_not_the_file_offered_is_refused(
    swarm: Swarm, tmp_path: Path
) -> None:
    # A swarm offer names a content ID, a name and a size: the receiver checks the content's
    # manifest against the name and size before fetching anything.
    sender = swarm.start(4)
    inbox = tmp_path / "inbox"
    _peer, port = start_receiver(swarm, 2, inbox, "--accept", "all")
    f = tmp_path / "real.bin"
    size = 64 * 1024
    write_test_file(f, size, seed=30)
    shared = json.loads(sender.cli("share", "--json", str(f)).stdout)[0]

    async def offer(name: str, size: int) -> int:
        body = {
            "info": {"alias": "liar", "fingerprint": "l"},
            "contentId": shared["id"],
            "name": name,
            "size": size,
        }
        connector = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.4", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.post(
                f"https://127.0.0.2:{port}/api/localsend/v2/swarmshare-fetch", json=body
            ) as r,
        ):
            return r.status

    assert asyncio.run(offer("real.bin", size + 1)) == 400
    assert asyncio.run(offer("invoice.pdf", size)) == 400
    assert no_trace(inbox) == []
    assert asyncio.run(offer("real.bin", size)) == 200
    assert (inbox / "real.bin").read_bytes() == f.read_bytes()


def test_send_to_swarmshare_peers_of_another_swarm_uploads_to_them(
    swarm: Swarm, tmp_path: Path
) -> None:
    # The receivers listen on another discovery port: the sender's shared file never shows up
    # in their swarm, so they answer its swarm offer 404 and it uploads to each directly.
    sender = swarm.start(4)
    port, elsewhere = spare_port(), spare_port()
    for i in (2, 3):
        start_receiver(
            swarm,
            i,
            tmp_path / f"inbox{i}",
            "--accept",
            "all",
            "--discovery-port",
            str(elsewhere),
            port=port,
        )
    f = tmp_path / "letter.bin"
    write_test_file(f, 2 * MIB + 3, seed=31)
    targets = [arg for i in (2, 3) for arg in ("--to", f"127.0.0.{i}:{port}")]
    proc = cli(sender.home, "send", str(f), *targets, "--bind", "127.0.0.4", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for i in (2, 3):
        assert (tmp_path / f"inbox{i}" / "letter.bin").read_bytes() == f.read_bytes()


def test_inbox_without_a_localsend_daemon_is_one_clear_line(swarm: Swarm, tmp_path: Path) -> None:
    from helpers import assert_one_line_error

    assert_one_line_error(cli(tmp_path / "home", "inbox"), "swarmshare run --localsend")
    plain = swarm.start(2)
    assert_one_line_error(plain.cli("inbox"), "run it with --localsend")
    offer = start_receiver(swarm, 3, tmp_path / "inbox", "--accept", "ask")[0]
    assert_one_line_error(offer.cli("inbox", "accept", "nope"), "no offer 'nope'")


async def offer_and_upload(port: int, name: str, data: bytes) -> tuple[int, int | None]:
    """A crafted LocalSend sender on 127.0.0.9: the prepare-upload status, then the upload's."""
    base = f"https://127.0.0.2:{port}/api/localsend/v2"
    body = {
        "info": {"alias": "crafted", "fingerprint": "z"},
        "files": {"f1": {"id": "f1", "fileName": name, "size": len(data)}},
    }
    connector = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.9", 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(f"{base}/prepare-upload", json=body) as r:
            if r.status != 200:
                return r.status, None
            grant = await r.json()
        params = {"sessionId": grant["sessionId"], "fileId": "f1", "token": grant["files"]["f1"]}
        async with http.post(f"{base}/upload", params=params, data=data) as r:
            return 200, r.status


def test_a_link_out_of_the_download_folder_is_not_followed(swarm: Swarm, tmp_path: Path) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    elsewhere.mkdir()
    (inbox / "docs").symlink_to(elsewhere)
    _peer, port = start_receiver(swarm, 2, inbox, "--accept", "all")
    assert asyncio.run(offer_and_upload(port, "docs/evil.sh", b"boom")) == (200, 403)
    assert no_trace(elsewhere) == []
    # A name as long as a file system allows (255 bytes) still lands: the part file's name is
    # short whatever the final one.
    long_name = "n" * 251 + ".txt"
    assert asyncio.run(offer_and_upload(port, long_name, b"long")) == (200, 200)
    assert (inbox / long_name).read_bytes() == b"long"
    assert no_trace(inbox) == ["docs", long_name]


def test_a_device_whose_certificate_does_not_match_its_announcement_gets_nothing(
    swarm: Swarm, tmp_path: Path
) -> None:
    # Someone announces "laptop" with a fingerprint of its own choosing, pointing at a real
    # receiver's address and port: send finds it by name, and the certificate there does not
    # hash to what was announced.
    inbox = tmp_path / "inbox"
    _peer, port = start_receiver(swarm, 3, inbox, "--accept", "all")
    forged = {
        "alias": "laptop",
        "fingerprint": "00" * 32,
        "port": port,
        "protocol": "https",
        "announce": False,
    }
    f = tmp_path / "private.txt"
    f.write_text("for the laptop only\n")
    home = tmp_path / "home"
    args = ["send", str(f), "--to", "laptop", "--bind", "127.0.0.9", "--wait", "30"]
    args += ["--localsend-port", str(port), "--localsend-group", GROUP]
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmshare", "--home", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.3", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        while True:  # until the sender has heard it and given up
            s.sendto(json.dumps(forged).encode(), (GROUP, port))
            try:
                out, errs = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
    assert proc.returncode == 1, out
    assert "does not match the fingerprint it announces" in errs, errs
    assert "Traceback" not in errs
    assert no_trace(inbox) == []
