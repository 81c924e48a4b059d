"""Hostile peers for the tests.

`HostilePeer` runs in the test's own process: it serves whatever catalogue and manifests it is
given, counts the requests it gets, and sends any announcement (any peer ID, version, interval,
or raw bytes) from its own loopback address.

`main` runs as its own process. It announces itself like a swarmshare peer and serves a real
catalogue and manifest for one file, but misbehaves on chunks:
  liar     -- every chunk comes back with the right length and wrong bytes
  staller  -- headers and half a chunk, then silence (the connection stays open)

Usage: python evilpeer.py MODE FILE BIND DISCOVERY_PORT
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sys
from collections import Counter
from pathlib import Path

from aiohttp import web

from swarmshare.core.announce import Announcement, decode_announcement
from swarmshare.core.catalog import CatalogItem, make_catalog
from swarmshare.errors import RemoteProtocolError
from swarmshare.store.hashing import hash_content, scan_path


class HostilePeer:
    """An in-process peer that says whatever the test wants; `async with HostilePeer(...)`."""

    def __init__(self, bind: str, discovery_port: int, peer_id: str | None = None) -> None:
        self.bind = bind
        self.discovery_port = discovery_port
        self.peer_id = peer_id or secrets.token_hex(8)
        self.catalog_body = make_catalog(self.peer_id, []).encode()
        self.manifests: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._sender: socket.socket | None = None

    async def __aenter__(self) -> HostilePeer:
        app = web.Application()
        app.router.add_get("/v1/catalog", self._catalog)
        app.router.add_get("/v1/content/{cid}/manifest", self._manifest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.bind, 0).start()
        self.port = int(self._runner.addresses[0][1])
        self._sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self._sender.bind((self.bind, 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sender is not None:
            self._sender.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def serve_catalog(self, items: list[CatalogItem], peer_id: str | None = None) -> str:
        """Serve a catalogue of `items` (under `peer_id`); its version."""
        catalog = make_catalog(peer_id or self.peer_id, items)
        self.catalog_body = catalog.encode()
        return catalog.version

    def announce(
        self,
        *,
        peer_id: str | None = None,
        version: str = "0",
        interval: float = 1.0,
        bye: bool = False,
        port: int | None = None,
        to: str = "127.255.255.255",
    ) -> None:
        """Send one announcement from this peer's address."""
        ann = Announcement(
            peer_id or self.peer_id,
            self.port if port is None else port,
            "hostile",
            version,
            interval,
            False,
            bye,
        )
        self.send_raw(ann.encode(), to)

    def send_raw(self, data: bytes, to: str = "127.255.255.255") -> None:
        """Send any datagram bytes from this peer's address to the discovery port."""
        assert self._sender is not None
        self._sender.sendto(data, (to, self.discovery_port))

    async def _catalog(self, _request: web.Request) -> web.Response:
        self.requests["catalog"] += 1
        return web.Response(body=self.catalog_body, content_type="application/json")

    async def _manifest(self, request: web.Request) -> web.Response:
        self.requests["manifest"] += 1
        body = self.manifests.get(request.match_info["cid"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/json")


async def main(mode: str, path: str, bind: str, discovery_port: int) -> None:
    name, kind, files, _ = scan_path(path)
    manifest = hash_content(name, kind, files)
    cid = manifest.content_id
    peer_id = secrets.token_hex(8)
    catalog = make_catalog(
        peer_id, [CatalogItem(cid, name, kind, manifest.total_size, manifest.chunk_total)]
    )
    data = await asyncio.to_thread(Path(path).read_bytes)

    async def get_catalog(_r: web.Request) -> web.Response:
        return web.Response(body=catalog.encode(), content_type="application/json")

    async def get_manifest(_r: web.Request) -> web.Response:
        return web.Response(body=manifest.encoded, content_type="application/x-bittorrent")

    async def get_chunk(request: web.Request) -> web.StreamResponse:
        ref = manifest.chunk(int(request.match_info["index"]))
        good = data[ref.offset : ref.offset + ref.length]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = ref.length
        await response.prepare(request)
        if mode == "liar":
            await response.write(bytes(b ^ 0x5A for b in good))
        else:
            await response.write(good[: ref.length // 2])
            await asyncio.sleep(3600)
        return response

    app = web.Application()
    app.router.add_get("/v1/catalog", get_catalog)
    app.router.add_get(f"/v1/content/{cid}/manifest", get_manifest)
    app.router.add_get(f"/v1/content/{cid}/chunk/{{index}}", get_chunk)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, bind, 0)
    await site.start()
    port = runner.addresses[0][1]

    def announcement(solicit: bool) -> bytes:
        return Announcement(peer_id, port, f"evil-{mode}", catalog.version, 1.0, solicit).encode()

    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sender.bind((bind, 0))
    sender.setblocking(False)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("", discovery_port))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    def answer_solicits(sock: socket.socket) -> None:
        try:
            datagram, source = sock.recvfrom(2048)
            if decode_announcement(datagram).solicit:
                sender.sendto(announcement(False), source)
        except (OSError, RemoteProtocolError):
            pass

    loop.add_reader(listener.fileno(), answer_solicits, listener)
    loop.add_reader(sender.fileno(), answer_solicits, sender)
    print(json.dumps({"port": port, "id": cid}), flush=True)
    while True:
        sender.sendto(announcement(False), ("127.255.255.255", discovery_port))
        await asyncio.sleep(1.0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
