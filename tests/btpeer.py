"""A stock libtorrent peer in its own process, for the tests and the benchmark.

    python tests/btpeer.py make FOLDER_OR_FILE OUT.torrent [--piece BYTES]
    python tests/btpeer.py seed --listen 127.0.0.N TORRENT SAVE_PATH [--lsd] [--upload-limit B/S]
    python tests/btpeer.py get --listen 127.0.0.N (TORRENT|MAGNET) SAVE_PATH [--peer H:P]... [--lsd]

It listens on the one address given (port printed as `port N` on stdout), with UPnP, NAT-PMP and
the DHT always off, LSD only with --lsd, and no tracker; TCP only (uTP over loopback is slow).
`get` prints `done` and exits 0 once the torrent is complete and checked, or exits 1 after
--timeout seconds. `seed` runs until
killed. Only libtorrent and the standard library: it is what any libtorrent-based client does.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore", DeprecationWarning)  # libtorrent's own deprecations

import libtorrent as lt  # noqa: E402


def session(address: str, lsd: bool, port: int = 0) -> Any:
    """A session on `address` only, internet-facing features off (LSD only when asked)."""
    return lt.session(
        {
            "listen_interfaces": f"{address}:{port}",
            "outgoing_interfaces": address,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_lsd": lsd,
            "enable_dht": False,
            "dht_bootstrap_nodes": "",
            "allow_multiple_connections_per_ip": True,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "local_service_announce_interval": 1,
            "alert_mask": lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification,
        }
    )


def make(source: Path, out: Path, piece: int) -> None:
    """A v2-only .torrent of a file or folder (libtorrent's own hashing)."""
    fs = lt.file_storage()
    lt.add_files(fs, str(source))
    torrent = lt.create_torrent(fs, piece, flags=lt.create_torrent.v2_only)
    lt.set_piece_hashes(torrent, str(source.parent))
    out.write_bytes(lt.bencode(torrent.generate()))
    print(lt.torrent_info(str(out)).info_hashes().v2, flush=True)


def wait_port(ses: Any) -> int:
    deadline = time.monotonic() + 30
    while ses.listen_port() == 0 and time.monotonic() < deadline:
        ses.wait_for_alert(100)
        ses.pop_alerts()
    return int(ses.listen_port())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["make", "seed", "get"])
    parser.add_argument("what")
    parser.add_argument("path")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--lsd", action="store_true")
    parser.add_argument("--piece", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--upload-limit", type=int, default=0, help="bytes/s (0: none)")
    args = parser.parse_args()
    if args.action == "make":
        make(Path(args.what), Path(args.path), args.piece)
        return 0
    ses = session(args.listen, args.lsd, args.port)
    if args.upload_limit:  # loopback is a local network, exempt from limits unless told
        ses.apply_settings(
            {"upload_rate_limit": args.upload_limit, "ignore_limits_on_local_network": False}
        )
    if args.what.startswith("magnet:"):
        params = lt.parse_magnet_uri(args.what)
    else:
        params = lt.load_torrent_buffer(Path(args.what).read_bytes())
    params.save_path = args.path
    if args.action == "seed":
        params.flags |= lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)
    print(f"port {wait_port(ses)}", flush=True)
    for peer in args.peer:
        host, _, port = peer.rpartition(":")
        handle.connect_peer((host, int(port)))
    deadline = time.monotonic() + args.timeout
    while args.action == "seed" or time.monotonic() < deadline:
        ses.wait_for_alert(200)
        for alert in ses.pop_alerts():
            if isinstance(alert, lt.hash_failed_alert):
                print(f"hash failed {alert.piece_index}", flush=True)
        status = handle.status()
        if args.action == "get" and status.is_seeding:
            print("done", flush=True)
            return 0
    print(f"timeout at {handle.status().progress:.3f}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
