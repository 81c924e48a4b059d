"""A LocalSend implementation that is not ours, pinned to loopback: `localsendd` from PyPI.

localsendd (0.1.1, MIT, standard library only, Python >= 3.11) is a LocalSend v2.2 daemon. Its
discovery multicasts to 224.0.0.167 on the default interface and scans the /24 around the
default route's address; neither can be pointed at loopback, so this driver stubs both out (as
localsendd's own tests do) and names every peer by address instead. What runs is its real
HTTPS server (its own self-signed certificate, made with `openssl`) and its real sender.

    python localsend_peer.py serve --bind 127.0.0.5 --port P --dir D [--pin X] [--refuse]
        serves until SIGTERM; prints `ready FINGERPRINT` once listening
    python localsend_peer.py send --to HOST:PORT [--fingerprint FP] [--pin X]
                                  [--pause-after BYTES] FILE...
        prints the result as JSON (with `upload_seconds`: from the first byte of a body to the
        end); with --pause-after, stops sending a file after that many
        bytes, prints `paused`, and waits for a line on stdin: `cancel` cancels, else goes on

localsendd is a test dependency (the `dev` extra): this driver imports it from the environment.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any


def _loopback_only(bind: str) -> None:
    """No multicast, no subnet scan, no look at the default route."""
    discovery, state = _module("discovery"), _module("state")
    discovery.Discovery.start = lambda self: None
    discovery.Discovery.announce = lambda self: None
    discovery.Discovery.scan_subnet_async = lambda self: None
    state.local_ip = lambda: bind


def _daemon(bind: str, port: int, folder: Path, pin: str | None, unattended: bool) -> Any:
    ssl_context, fingerprint = _module("identity").build_tls(True)
    daemon = _module("state").Daemon(
        port,
        folder,
        device_type="headless",
        alias=f"localsendd-{bind}",
        pin=pin,
        encryption=True,
        fingerprint=fingerprint,
        unattended=unattended,
    )
    return daemon, ssl_context


def serve(args: argparse.Namespace) -> int:
    http_api = _module("http_api")
    _loopback_only(args.bind)
    daemon, ssl_context = _daemon(args.bind, args.port, Path(args.dir), args.pin, not args.refuse)
    httpd = http_api.QuietThreadingHTTPServer((args.bind, args.port), http_api.make_handler(daemon))
    httpd.ssl_context = ssl_context
    daemon.httpd = httpd
    daemon.start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print("ready", daemon.self_info.fingerprint, flush=True)
    try:
        httpd.serve_forever()
    finally:
        daemon.stop()
        httpd.server_close()
    return 0


def send(args: argparse.Namespace) -> int:
    import mimetypes

    outbound, session = _module("outbound"), _module("session")
    host, _, port = args.to.rpartition(":")
    _loopback_only(host)
    daemon, _ = _daemon(host, 53317, Path(tempfile.mkdtemp()), None, False)
    pause_after = args.pause_after
    first_byte: float | None = None

    class Gate(session.ProgressReader):  # type: ignore[misc,name-defined]
        """Stops once after `pause_after` bytes until told to go on or to cancel."""

        def read(self, n: int = -1) -> bytes:
            nonlocal pause_after, first_byte
            if first_byte is None:
                first_byte = time.monotonic()
            if pause_after is not None and self._done >= pause_after:
                pause_after = None
                print("paused", flush=True)
                if sys.stdin.readline().strip() == "cancel":
                    self._cancel.set()
            return super().read(n)  # type: ignore[no-any-return]

    outbound.ProgressReader = Gate
    files_meta: dict[str, dict[str, Any]] = {}
    order = []
    for name in args.files:
        fid = uuid.uuid4().hex
        files_meta[fid] = {
            "id": fid,
            "fileName": os.path.basename(name),
            "size": os.path.getsize(name),
            "fileType": mimetypes.guess_type(name)[0] or "application/octet-stream",
        }
        order.append((fid, name))
    target = {
        "ip": host,
        "port": int(port),
        "alias": host,
        "protocol": "https",
        "deviceType": "desktop",
        "fingerprint": args.fingerprint.upper() if args.fingerprint else None,
    }
    out = {
        "id": "send:1",
        "cancel": threading.Event(),
        "conn": None,
        "session_id": None,
        "remote_cancelled": False,
    }
    total = sum(m["size"] for m in files_meta.values())
    started = time.monotonic()
    outbound.run(daemon, out, target, files_meta, order, total, args.pin or "")
    result = dict(daemon.result or {})
    ended = time.monotonic()
    result["seconds"] = ended - started
    result["upload_seconds"] = ended - (first_byte or ended)  # from the first body byte
    print(json.dumps(result), flush=True)
    return 0


def _module(name: str) -> Any:
    """A module of localsendd (typed Any: it has no type hints)."""
    return importlib.import_module(f"localsendd.{name}")


def main() -> int:
    state = tempfile.mkdtemp(prefix="localsendd-state-")
    os.environ["XDG_STATE_HOME"] = state  # its certificate, fingerprint and favourites
    os.environ["XDG_CONFIG_HOME"] = state
    os.environ.setdefault("XDG_RUNTIME_DIR", state)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--pin")
    p.add_argument("--refuse", action="store_true")
    p = sub.add_parser("send")
    p.add_argument("--to", required=True)
    p.add_argument("--fingerprint")
    p.add_argument("--pin")
    p.add_argument("--pause-after", type=int)
    p.add_argument("files", nargs="+")
    args = parser.parse_args()
    if not args.__dict__.get("bind", args.__dict__.get("to", "127.")).startswith("127."):
        parser.error("loopback addresses only")
    return serve(args) if args.mode == "serve" else send(args)


if __name__ == "__main__":
    sys.exit(main())
