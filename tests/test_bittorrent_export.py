"""Export to BitTorrent: magnet links in every listing, `swarmshare torrent` with web seeds,
and stock clients (aria2c, libtorrent) downloading a swarmshare content from its peers.

Every client here is pinned to loopback: aria2c binds 127.0.0.30 (--interface) with DHT, LPD
and peer exchange off and no tracker; libtorrent (in its own process) listens and connects
from 127.0.0.31 with DHT, LSD, UPnP and NAT-PMP off and no tracker. Both can only reach the
web seeds the .torrent names: swarmshare peers on 127.0.0.x.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from swarmshare.app.loopback import spare_port
from swarmshare.core import bencode
from swarmshare.core.auth import derive_key, web_seed_token
from swarmshare.core.torrent import magnet, read_torrent

from conftest import Swarm
from helpers import assert_one_line_error, wait_until

FILES = {"a.bin": 300_001, "sub/b.txt": 1_000, "sub/empty": 0, "z.bin": 64 * 1024}


def _folder(root: Path) -> Path:
    folder = root / "album"
    for rel, size in FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return folder


def _same_tree(got: Path, want: Path) -> None:
    for rel in FILES:
        assert (got / rel).read_bytes() == (want / rel).read_bytes(), rel


def test_share_library_and_ls_show_magnet_links(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.start(2)
    folder = _folder(tmp_path)
    (shared,) = a.json("share", str(folder))
    link = magnet(shared["id"], "album")
    assert shared["magnet"] == link
    assert [r["magnet"] for r in a.json("library")] == [link]
    plain = a.cli("library")
    assert link in plain.stdout.replace("\n", "")
    b = swarm.start(3)
    wait_until(lambda: any(i.get("magnet") == link for i in b.json("ls")), timeout=30)
    assert link in b.cli("ls").stdout.replace("\n", "")


def test_torrent_names_every_holder_and_reads_back_as_the_content(
    swarm: Swarm, tmp_path: Path
) -> None:
    a, b = swarm.start(2), swarm.start(3)
    folder = _folder(tmp_path)
    (shared,) = a.json("share", str(folder))
    cid = shared["id"]
    wait_until(lambda: any(i["id"] == cid for i in b.json("ls")), timeout=30)
    got = b.cli("get", cid, "-o", str(tmp_path / "copy") + "/")
    assert got.returncode == 0, got.stderr
    out = tmp_path / "album.torrent"
    made = a.json("torrent", "album", "-o", str(out))
    torrent = read_torrent(out.read_bytes())
    assert torrent.manifest.content_id == torrent.infohash_v2 == cid
    assert torrent.infohash_v1 is None
    wait_until(lambda: len(a.json("torrent", cid, "-o", str(out))["web_seeds"]) == 2, timeout=30)
    urls = sorted(read_torrent(out.read_bytes()).url_list)
    assert all(u.endswith(f"/v1/content/{cid}/bt/") for u in urls)
    assert {u.split("/")[2].split(":")[0] for u in urls} == {"127.0.0.2", "127.0.0.3"}
    # BEP 19: the client adds NAME/PATH to a URL ending in a slash.
    with urllib.request.urlopen(urls[0] + "album/sub/b.txt", timeout=10) as reply:
        assert reply.read() == (folder / "sub" / "b.txt").read_bytes()
    assert made["magnet"] == magnet(cid, "album")
    # Made by a standalone command (no daemon here), from what the network says.
    c_home = tmp_path / "standalone"
    made = json.loads(
        _run(
            c_home,
            "torrent",
            cid[:12],
            "-o",
            str(tmp_path / "c.torrent"),
            "--json",
            *swarm.discovery(),
        )
    )
    assert len(made["web_seeds"]) == 2
    assert read_torrent((tmp_path / "c.torrent").read_bytes()).manifest.content_id == cid
    # --hybrid needs the files here.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "swarmshare",
            "--home",
            str(c_home),
            "torrent",
            cid,
            "--hybrid",
            *swarm.discovery(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert_one_line_error(proc, "--hybrid")


def _run(home: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "swarmshare", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_pad_files_are_zeros_with_ranges(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.start(2)
    (shared,) = a.json("share", str(_folder(tmp_path)))
    made = a.json("torrent", "album", "--hybrid", "-o", str(tmp_path / "h.torrent"))
    (url,) = made["web_seeds"]
    info = bencode.decode((tmp_path / "h.torrent").read_bytes())[b"info"]
    pads = [f for f in info[b"files"] if f.get(b"attr") == b"p"]
    assert pads
    for pad in pads:
        length = pad[b"length"]
        with urllib.request.urlopen(url + f"album/.pad/{length}", timeout=10) as reply:
            assert reply.read() == bytes(length)
    request = urllib.request.Request(url + "album/.pad/100", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 206
        assert reply.read() == bytes(10)
    for bad in (f"album/.pad/{64 * 1024}", ".pad/100", "album/.pad/0", "other/a.bin"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url + bad, timeout=10)
        caught.value.close()
        assert caught.value.code == 404, bad
    assert shared["id"] in url


def test_private_swarm_web_seeds_carry_the_token_in_the_path(swarm: Swarm, tmp_path: Path) -> None:
    secret = "correct horse battery staple"
    a = swarm.start(2, "--secret", secret)
    (shared,) = a.json("share", str(_folder(tmp_path)))
    cid = shared["id"]
    made = a.json("torrent", cid, "-o", str(tmp_path / "p.torrent"))
    (url,) = made["web_seeds"]
    token = web_seed_token(derive_key(secret), cid)
    assert url.endswith(f"/v1/content/{cid}/bt/{token}/") and "?" not in url
    # A private swarm speaks only TLS, with the peer's self-signed certificate.
    assert url.startswith("https://")
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(url + "album/a.bin", timeout=10, context=tls) as reply:
        assert len(reply.read()) == FILES["a.bin"]
    base = url.split("/bt/")[0]
    for bad in (
        f"{base}/bt/{'0' * 32}/album/a.bin",
        f"{base}/bt/album/a.bin",
        f"{base}/file/a.bin",
    ):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=10, context=tls)
        caught.value.close()
        assert caught.value.code == 401, bad


def test_a_web_seed_token_that_is_not_hex_is_refused_cleanly(swarm: Swarm, tmp_path: Path) -> None:
    """A token of any other shape (non-ASCII, short, upper case) is one 401, no traceback."""
    a = swarm.start(2, "--secret", "correct horse battery staple")
    (shared,) = a.json("share", str(_folder(tmp_path)))
    (url,) = a.json("torrent", shared["id"], "-o", str(tmp_path / "p.torrent"))["web_seeds"]
    base = url.split("/bt/")[0]
    token = url.rstrip("/").rsplit("/", 1)[1]
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    for bad in ("%C3%A9", "%C3%A9" * 16, "x", token.upper(), token[:-1] + "%C3%A9", "%00" * 32):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}/bt/{bad}/album/a.bin", timeout=10, context=tls)
        caught.value.close()
        assert caught.value.code == 401, bad
    assert "Traceback" not in a.log()
    with urllib.request.urlopen(url + "album/a.bin", timeout=10, context=tls) as reply:
        assert len(reply.read()) == FILES["a.bin"]


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")
def test_aria2c_completes_a_hybrid_export_from_web_seeds(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.start(2)
    folder = _folder(tmp_path)
    a.json("share", str(folder))
    torrent = tmp_path / "album.torrent"
    a.json("torrent", "album", "--hybrid", "-o", str(torrent))
    out = tmp_path / "aria"
    proc = _aria2c(torrent, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _same_tree(out / "album", folder)


@pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed")
def test_aria2c_completes_a_private_swarms_export_over_https(swarm: Swarm, tmp_path: Path) -> None:
    """The web seed is https:// with the peer's self-signed certificate, the token in its path:
    a stock client told not to check certificates takes it as it is."""
    a = swarm.start(2, "--secret", "correct horse battery staple")
    folder = _folder(tmp_path)
    a.json("share", str(folder))
    torrent = tmp_path / "album.torrent"
    (url,) = a.json("torrent", "album", "--hybrid", "-o", str(torrent))["web_seeds"]
    assert url.startswith("https://127.0.0.2:")
    out = tmp_path / "aria"
    proc = _aria2c(torrent, out, "--check-certificate=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _same_tree(out / "album", folder)
    for rel in FILES:
        digest = hashlib.sha256((out / "album" / rel).read_bytes()).hexdigest()
        assert digest == hashlib.sha256((folder / rel).read_bytes()).hexdigest(), rel


def _aria2c(torrent: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """aria2c on 127.0.0.30, DHT, LPD, peer exchange and trackers off: web seeds only."""
    return subprocess.run(
        [
            "aria2c",
            "--no-conf",
            "--interface=127.0.0.30",
            "--disable-ipv6=true",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--bt-exclude-tracker=*",
            f"--listen-port={spare_port()}",
            f"--dht-listen-port={spare_port()}",
            "--seed-time=0",
            "--bt-stop-timeout=60",
            "--console-log-level=warn",
            "--summary-interval=0",
            f"--dir={out}",
            *extra,
            str(torrent),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


_LIBTORRENT_CLIENT = """
import sys, time, warnings
warnings.simplefilter("ignore")
import libtorrent as lt
torrent, save, listen = sys.argv[1], sys.argv[2], sys.argv[3]
session = lt.session({
    "validate_https_trackers": sys.argv[4:] != ["--no-validate"],  # web seeds' too
    "listen_interfaces": listen,
    "outgoing_interfaces": listen.split(":")[0],
    "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "alert_mask": lt.alert_category.error,
})
handle = session.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save})
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    status = handle.status()
    if status.is_seeding:
        print("seeding", status.total_wanted)
        sys.exit(0)
    for alert in session.pop_alerts():
        print("alert:", alert.message(), file=sys.stderr)
    session.wait_for_alert(200)
print("not done:", handle.status().state, handle.status().progress, file=sys.stderr)
sys.exit(1)
"""


def test_libtorrent_downloads_a_content_from_its_web_seeds(swarm: Swarm, tmp_path: Path) -> None:
    pytest.importorskip("libtorrent", reason="libtorrent (swarmshare[bittorrent]) is not installed")
    a, b = swarm.start(2), swarm.start(3)
    folder = _folder(tmp_path)
    a.json("share", str(folder))
    b.json("share", str(folder))
    torrent = tmp_path / "album.torrent"
    made = a.json("torrent", "album", "-o", str(torrent))
    assert made["web_seeds"]
    save = tmp_path / "lt"
    save.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _LIBTORRENT_CLIENT,
            str(torrent),
            str(save),
            f"127.0.0.31:{spare_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _same_tree(save / "album", folder)
    digest = hashlib.sha256((save / "album" / "a.bin").read_bytes()).hexdigest()
    assert digest == hashlib.sha256((folder / "a.bin").read_bytes()).hexdigest()


def test_libtorrent_takes_a_private_swarms_https_web_seed_when_told_to(
    swarm: Swarm, tmp_path: Path
) -> None:
    """libtorrent checks the certificates of https web seeds with its validate_https_trackers
    setting: off, it downloads from a private swarm's peer (self-signed certificate)."""
    pytest.importorskip("libtorrent", reason="libtorrent (swarmshare[bittorrent]) is not installed")
    a = swarm.start(2, "--secret", "correct horse battery staple")
    folder = _folder(tmp_path)
    a.json("share", str(folder))
    torrent = tmp_path / "album.torrent"
    (url,) = a.json("torrent", "album", "-o", str(torrent))["web_seeds"]
    assert url.startswith("https://")
    save = tmp_path / "lt"
    save.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _LIBTORRENT_CLIENT, str(torrent), str(save),
         f"127.0.0.31:{spare_port()}", "--no-validate"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _same_tree(save / "album", folder)
