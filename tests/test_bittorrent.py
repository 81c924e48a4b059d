"""swarmshare as a BitTorrent peer (`run --bittorrent`) and torrents as a download origin.

Every libtorrent session here is pinned to loopback, with UPnP, NAT-PMP, DHT and LSD off and no
tracker: the daemons' own sessions listen on their 127.0.0.x bind address (LSD is never on with a
loopback bind), a standalone `get` listens on its --bind address, and the stock libtorrent
peers (tests/btpeer.py, each in its own process) listen and connect from 127.0.0.3x only. They
find each other only through the magnet links' `x.pe` peer addresses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmshare.app.loopback import spare_port
from swarmshare.core import bencode
from swarmshare.core.torrent import magnet, read_torrent, torrent_file

from conftest import Swarm
from helpers import assert_one_line_error, cli, wait_until

pytest.importorskip("libtorrent")

BTPEER = Path(__file__).parent / "btpeer.py"
FILES = {"a.bin": 300_001, "sub/b.txt": 1_000, "sub/empty": 0, "z.bin": 64 * 1024}


def _folder(root: Path, name: str = "album") -> Path:
    folder = root / name
    for rel, size in FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return folder


def _same_tree(got: Path, want: Path) -> None:
    for rel in FILES:
        assert (got / rel).read_bytes() == (want / rel).read_bytes(), rel


class StockPeer:
    """A stock libtorrent peer in its own process (tests/btpeer.py)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BTPEER), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        assert first[:1] == ["port"], (first, self.proc.stderr and self.proc.stderr.read())
        self.port = int(first[1])

    def finish(self, timeout: float) -> tuple[int, str]:
        """Exit code and output of a `get`."""
        out, errors = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out + errors

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def stock() -> Iterator[list[StockPeer]]:
    peers: list[StockPeer] = []
    yield peers
    for peer in peers:
        peer.stop()


def _make_torrent(source: Path, out: Path) -> str:
    made = subprocess.run(
        [sys.executable, str(BTPEER), "make", str(source), str(out), "--piece", "32768"],
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.split()[-1]


def test_a_libtorrent_client_downloads_a_share_by_magnet(
    swarm: Swarm, tmp_path: Path, stock: list[StockPeer]
) -> None:
    """The wire protocol: a stock client given only `x.pe` fetches what the daemon seeds."""
    port = spare_port()
    a = swarm.start(2, "--bittorrent", "--bittorrent-port", str(port))
    folder = _folder(tmp_path)
    (shared,) = a.json("share", str(folder))
    wait_until(lambda: a.json("status")["bittorrent"]["seeding"] == 1, timeout=30)
    link = magnet(shared["id"], "album") + f"&x.pe=127.0.0.2:{port}"
    client = StockPeer("get", link, str(tmp_path / "out"), "--listen", "127.0.0.31")
    stock.append(client)
    code, output = client.finish(timeout=120)
    assert code == 0, output
    _same_tree(tmp_path / "out" / "album", folder)


def test_get_a_magnet_only_a_libtorrent_seeder_has(
    swarm: Swarm, tmp_path: Path, stock: list[StockPeer]
) -> None:
    """Metadata and pieces from BitTorrent alone; the content then joins the library."""
    source = _folder(tmp_path / "src")
    infohash = _make_torrent(source, tmp_path / "album.torrent")
    seeder = StockPeer(
        "seed", str(tmp_path / "album.torrent"), str(tmp_path / "src"), "--listen", "127.0.0.32"
    )
    stock.append(seeder)
    link = magnet(infohash, "album") + f"&x.pe=127.0.0.32:{seeder.port}"
    home = tmp_path / "getter"
    got = cli(home, "get", link, "-o", str(tmp_path / "got") + "/", "--wait", "60",
              *swarm.discovery("127.0.0.20"), "--json")  # fmt: skip
    assert got.returncode == 0, got.stderr
    stats = json.loads(got.stdout)
    assert stats["id"] == infohash and stats["verified"]
    assert stats["by_peer"].get("BitTorrent", 0) > 0
    _same_tree(tmp_path / "got" / "album", source)
    library = json.loads(cli(home, "library", "--json").stdout)
    assert [item["id"] for item in library] == [infohash]
    assert not (home / "bittorrent" / infohash).exists()  # libtorrent's scratch pieces are gone


def test_get_a_torrent_file_from_lan_holders(swarm: Swarm, tmp_path: Path) -> None:
    """A .torrent's content is found on the LAN by its ID and fetched like any other."""
    a = swarm.start(2)
    folder = _folder(tmp_path)
    (shared,) = a.json("share", str(folder))
    exported = tmp_path / "album.torrent"
    a.json("torrent", shared["id"], "-o", str(exported))
    # Without its web seeds (the holder's own HTTP routes, which libtorrent would use too).
    exported.write_bytes(torrent_file(read_torrent(exported.read_bytes()).manifest))
    home = tmp_path / "getter"
    got = cli(home, "get", str(tmp_path / "album.torrent"), "-o", str(tmp_path / "got") + "/",
              *swarm.discovery("127.0.0.20"), "--json")  # fmt: skip
    assert got.returncode == 0, got.stderr
    stats = json.loads(got.stdout)
    assert stats["id"] == shared["id"]
    assert set(stats["by_peer"]) == {"127.0.0.2"}
    _same_tree(tmp_path / "got" / "album", folder)


def test_a_lying_bittorrent_seeder_changes_nothing_on_disk(
    swarm: Swarm, tmp_path: Path, stock: list[StockPeer]
) -> None:
    """A seeder whose file changed after the torrent was made: no byte of it is kept."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(200_000))
    infohash = _make_torrent(source / "big.bin", tmp_path / "big.torrent")
    (source / "big.bin").write_bytes(os.urandom(200_000))  # the lie
    seeder = StockPeer("seed", str(tmp_path / "big.torrent"), str(source), "--listen", "127.0.0.33")
    stock.append(seeder)
    link = magnet(infohash, "big.bin") + f"&x.pe=127.0.0.33:{seeder.port}"
    dest = tmp_path / "got"
    got = cli(tmp_path / "getter", "get", link, "-o", str(dest) + "/", "--wait", "5",
              *swarm.discovery("127.0.0.20"))  # fmt: skip
    assert_one_line_error(got, "big.bin")
    assert not (dest / "big.bin").exists()


def test_without_bittorrent_nothing_listens_for_it(swarm: Swarm) -> None:
    """Off by default: the daemon's sockets are its peer server, control API and discovery."""
    plain = swarm.start(2)
    assert plain.json("status")["bittorrent"] is None
    assert _listening_ports(plain) == {plain.json("status")["port"], _control_port(plain)}
    port = spare_port()
    on = swarm.start(3, "--bittorrent", "--bittorrent-port", str(port))
    assert on.json("status")["bittorrent"]["port"] == port
    assert port in _listening_ports(on)


def _loopback_run(address: str) -> list[str]:
    """Options that keep a `run` on loopback should it start after all (a regression): its
    server, control API, discovery and libtorrent on `address`, nothing on real interfaces."""
    return ["--bind", address, "--port", "0", "--control-port", "0", "--bittorrent-port", "0",
            "--broadcast", "127.255.255.255", "--discovery-port", str(spare_port())]  # fmt: skip


def test_a_private_swarm_refuses_bittorrent(tmp_path: Path) -> None:
    proc = cli(tmp_path / "home", "run", "--bittorrent", "--secret", "a-long-secret",
               *_loopback_run("127.0.0.39"), timeout=30)  # fmt: skip
    assert_one_line_error(proc, "--bittorrent", "secret")
    alone = cli(tmp_path / "home", "run", "--tracker", "http://127.0.0.1:1/announce",
                *_loopback_run("127.0.0.39"), timeout=30)  # fmt: skip
    assert_one_line_error(alone, "need --bittorrent")


def test_config_shows_the_bittorrent_options(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('bittorrent = true\nbittorrent-port = 7000\ntrackers = ["http://t/a"]\n')
    proc = cli(tmp_path / "home", "--config", str(config), "config", "--json")
    assert proc.returncode == 0, proc.stderr
    settings = json.loads(proc.stdout)["settings"]
    assert settings["bittorrent"]["value"] is True
    assert settings["bittorrent-port"]["value"] == 7000
    assert settings["trackers"]["value"] == ["http://t/a"]
    assert settings["dht"]["value"] is False


def _control_port(peer: object) -> int:
    home: Path = peer.home  # type: ignore[attr-defined]
    return int(json.loads((home / "control.json").read_text())["port"])


def _listening_ports(peer: object) -> set[int]:
    """The TCP ports the peer's process listens on (its sockets in /proc/net/tcp*)."""
    proc = peer.proc  # type: ignore[attr-defined]
    inodes = set()
    for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_a_daemon_gets_a_magnet_from_bittorrent_then_serves_it_on_the_lan(
    swarm: Swarm, tmp_path: Path, stock: list[StockPeer]
) -> None:
    """Through the daemon (its one session): the same get, then the content is a share like
    any other: seeded to BitTorrent and fetched by a swarmshare peer from the LAN."""
    source = _folder(tmp_path / "src")
    infohash = _make_torrent(source, tmp_path / "album.torrent")
    seeder = StockPeer(
        "seed", str(tmp_path / "album.torrent"), str(tmp_path / "src"), "--listen", "127.0.0.34"
    )
    stock.append(seeder)
    b = swarm.start(3, "--bittorrent", "--bittorrent-port", str(spare_port()))
    link = magnet(infohash, "album") + f"&x.pe=127.0.0.34:{seeder.port}"
    got = b.cli("get", link, "-o", str(tmp_path / "got") + "/", "--wait", "60")
    assert got.returncode == 0, got.stderr + b.log()
    _same_tree(tmp_path / "got" / "album", source)
    wait_until(lambda: b.json("status")["bittorrent"]["seeding"] == 1, timeout=30)
    again = cli(tmp_path / "c", "get", infohash, "-o", str(tmp_path / "again") + "/",
                *swarm.discovery("127.0.0.21"), "--json")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert set(json.loads(again.stdout)["by_peer"]) == {"127.0.0.3"}
    _same_tree(tmp_path / "again" / "album", source)


def test_get_a_torrent_from_an_http_url(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.start(2)
    folder = _folder(tmp_path)
    (shared,) = a.json("share", str(folder))
    served = tmp_path / "web"
    served.mkdir()
    a.json("torrent", shared["id"], "-o", str(served / "album.torrent"))
    port = spare_port()
    requests = tmp_path / "requests.log"
    with requests.open("wb") as log:  # one line per request, from the client's address
        web = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.35"],
            cwd=served,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        url = f"http://127.0.0.35:{port}/album.torrent"
        wait_until(lambda: _reachable("127.0.0.35", port), timeout=30)
        got = cli(tmp_path / "getter", "get", url, "-o", str(tmp_path / "got") + "/",
                  *swarm.discovery("127.0.0.20"), "--json")  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["id"] == shared["id"]
        _same_tree(tmp_path / "got" / "album", folder)
        asked = [line for line in requests.read_text().splitlines() if "GET /album" in line]
        assert asked and all(line.startswith("127.0.0.20 ") for line in asked)  # from --bind
        missing = cli(tmp_path / "getter", "get", url + ".missing", *swarm.discovery("127.0.0.20"))
        assert_one_line_error(missing, "404")
    finally:
        web.kill()
        web.wait()


def test_a_private_swarm_never_contacts_a_torrents_trackers_peers_or_web_seeds(
    tmp_path: Path,
) -> None:
    """`get` of a magnet link or a .torrent with --secret: no libtorrent session; what no member
    has is one line saying so, and the torrent's peer, tracker and web seed (one listening
    socket here) never hear of the content ID."""
    import socket

    with socket.socket() as outside:
        outside.bind(("127.0.0.37", 0))
        outside.listen(16)
        outside.setblocking(False)
        where = f"127.0.0.37:{outside.getsockname()[1]}"
        source = tmp_path / "src" / "x.bin"
        source.parent.mkdir()
        source.write_bytes(os.urandom(100_000))
        infohash = _make_torrent(source, tmp_path / "x.torrent")
        with_seed = bencode.decode((tmp_path / "x.torrent").read_bytes())
        with_seed[b"url-list"] = [f"http://{where}/".encode()]
        with_seed[b"announce"] = f"http://{where}/announce".encode()
        (tmp_path / "x.torrent").write_bytes(bencode.encode(with_seed))
        link = (
            magnet(infohash, "x.bin")
            + f"&x.pe={where}&tr=http%3A%2F%2F{where}%2Fannounce&ws=http%3A%2F%2F{where}%2F"
        )
        options = ["--secret", "a long enough secret", "--wait", "1",
                   "--broadcast", "127.255.255.255", "--discovery-port", str(spare_port()),
                   "--bind", "127.0.0.20"]  # fmt: skip
        for n, ref in enumerate((link, str(tmp_path / "x.torrent"))):
            got = cli(tmp_path / f"getter{n}", "get", ref, "-o", str(tmp_path / "got") + "/",
                      *options)  # fmt: skip
            assert_one_line_error(got, "private swarm", "members only")
            with pytest.raises(BlockingIOError):
                outside.accept()  # nothing connected
        assert not (tmp_path / f"getter{n}" / "bittorrent").exists()


def _reachable(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def test_lan_holders_come_before_bittorrent_peers(
    swarm: Swarm, tmp_path: Path, stock: list[StockPeer]
) -> None:
    """A magnet whose content a LAN peer holds and a libtorrent seeder seeds: the LAN peer
    sends every chunk while it can."""
    a = swarm.start(2, "--upload-limit", "2M")  # slow: the BitTorrent seeder has time to join
    folder = _folder(tmp_path)
    (folder / "big.bin").write_bytes(os.urandom(6 << 20))
    (shared,) = a.json("share", str(folder))
    exported = tmp_path / "album.torrent"
    a.json("torrent", shared["id"], "-o", str(exported))
    exported.write_bytes(torrent_file(read_torrent(exported.read_bytes()).manifest))  # no web seeds
    seeder = StockPeer("seed", str(exported), str(tmp_path), "--listen", "127.0.0.36")
    stock.append(seeder)
    link = magnet(shared["id"], "album") + f"&x.pe=127.0.0.36:{seeder.port}"
    got = cli(tmp_path / "getter", "get", link, "-o", str(tmp_path / "got") + "/",
              *swarm.discovery("127.0.0.20"), "--json")  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert set(json.loads(got.stdout)["by_peer"]) == {"127.0.0.2"}
    _same_tree(tmp_path / "got" / "album", folder)
    assert (tmp_path / "got" / "album" / "big.bin").read_bytes() == (
        folder / "big.bin"
    ).read_bytes()


def test_a_torrent_download_pauses_and_resumes_like_any_other(
    swarm: Swarm, tmp_path: Path, stock: list[StockPeer]
) -> None:
    """No BitTorrent peer yet: the get pauses after --wait (status says so); resumed once the
    seeder is up, it completes."""
    source = _folder(tmp_path / "src")
    infohash = _make_torrent(source, tmp_path / "album.torrent")
    b = swarm.start(3, "--bittorrent", "--bittorrent-port", str(spare_port()))
    port = spare_port()
    link = magnet(infohash, "album") + f"&x.pe=127.0.0.37:{port}"
    first = b.cli("get", link, "-o", str(tmp_path / "got") + "/", "--wait", "2")
    assert_one_line_error(first, "album")
    (listed,) = b.json("downloads")
    assert listed["id"] == infohash and listed["state"] == "paused"
    seeder = StockPeer("seed", str(tmp_path / "album.torrent"), str(tmp_path / "src"),
                       "--listen", "127.0.0.37", "--port", str(port))  # fmt: skip
    stock.append(seeder)
    resumed = b.cli("resume", infohash[:12])
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: b.json("downloads")[0]["state"] == "done", timeout=60)
    _same_tree(tmp_path / "got" / "album", source)


def test_a_torrent_download_rejoins_its_swarm_after_a_daemon_restart(
    swarm: Swarm, tmp_path: Path, stock: list[StockPeer]
) -> None:
    """The magnet link is remembered with the download: stopped mid-way, the restarted daemon
    resumes it from the libtorrent seeder (the only holder; throttled so that the stop comes
    mid-way)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(1536 * 1024))
    infohash = _make_torrent(source / "big.bin", tmp_path / "big.torrent")  # 48 pieces
    seeder = StockPeer("seed", str(tmp_path / "big.torrent"), str(source),
                       "--listen", "127.0.0.33", "--upload-limit", str(96 * 1024))  # fmt: skip
    stock.append(seeder)
    b = swarm.start(3, "--bittorrent", "--bittorrent-port", str(spare_port()))
    link = magnet(infohash, "big.bin") + f"&x.pe=127.0.0.33:{seeder.port}"
    # What `get` asks the daemon, without staying to watch.
    b.control().post("downloads", {"ref": link, "output": str(tmp_path / "got") + "/"})
    wait_until(lambda: b.json("downloads")[0]["chunks_done"] >= 4, timeout=60)
    assert b.stop() == 0
    b.start()
    wait_until(lambda: b.json("downloads")[0]["state"] == "done", timeout=120)
    (done,) = b.json("downloads")
    assert done["resumed_chunks"] >= 4 and done["by_peer"].get("BitTorrent", 0) > 0
    assert (tmp_path / "got" / "big.bin").read_bytes() == (source / "big.bin").read_bytes()


def test_without_libtorrent_one_clear_line(swarm: Swarm, tmp_path: Path) -> None:
    """The extra not installed: `run --bittorrent` says how to get it; a magnet `get` with no
    LAN holder says it too when it gives up."""
    fake = tmp_path / "nolibtorrent"
    fake.mkdir()
    (fake / "libtorrent.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = cli(tmp_path / "home", "run", "--bittorrent", *_loopback_run("127.0.0.38"), env=env,
              timeout=30)  # fmt: skip
    assert_one_line_error(run, "pip install 'swarmshare[bittorrent]'")
    link = magnet("ab" * 32, "x.bin")
    got = cli(tmp_path / "getter", "get", link, "--wait", "1", *swarm.discovery("127.0.0.20"),
              env=env)  # fmt: skip
    assert_one_line_error(got, "pip install 'swarmshare[bittorrent]'")
