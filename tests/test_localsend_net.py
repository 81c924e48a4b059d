"""LocalSend discovery in-process on loopback: it hears devices and answers them, within bounds."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from swarmshare.app.loopback import spare_port
from swarmshare.core.localsend import DeviceInfo, encode_announcement
from swarmshare.net.localsend import LocalSendDiscovery

ME = DeviceInfo(alias="me", fingerprint="f" * 64, port=1)


def test_an_announcer_is_answered_once_however_often_it_announces() -> None:
    async def run() -> dict[str, int]:
        udp_port, http_port = spare_port(), spare_port()
        registered: dict[str, int] = {}

        async def register(request: web.Request) -> web.Response:
            assert request.remote == "127.0.0.2"  # from the address it is bound to
            host = request.host.rpartition(":")[0]  # which announcer was answered
            registered[host] = registered.get(host, 0) + 1
            return web.json_response(ME.as_json())

        app = web.Application()
        app.router.add_post("/api/localsend/v2/register", register)
        runner = web.AppRunner(app)
        await runner.setup()
        for host in ("127.0.0.9", "127.0.0.10"):
            await web.TCPSite(runner, host, http_port).start()
        try:
            async with LocalSendDiscovery(ME, "127.0.0.2", "127.255.255.255", udp_port) as d:
                loop = asyncio.get_running_loop()
                for source, count in (("127.0.0.9", 20), ("127.0.0.10", 1)):
                    phone = DeviceInfo(source, source, port=http_port, protocol="http")
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.bind((source, 0))
                        for _ in range(count):
                            s.sendto(encode_announcement(phone, True), ("127.0.0.2", udp_port))
                deadline = loop.time() + 15
                while registered.get("127.0.0.10") != 1 or d._tasks:
                    assert loop.time() < deadline, registered
                    await asyncio.sleep(0.01)
                assert {dev.info.alias for dev in d.devices.values()} == {"127.0.0.9", "127.0.0.10"}
        finally:
            await runner.cleanup()
        return registered

    assert asyncio.run(run()) == {"127.0.0.9": 1, "127.0.0.10": 1}


def test_a_discovery_bound_to_one_address_keeps_to_its_network() -> None:
    phone = DeviceInfo(alias="phone", fingerprint="p" * 64, port=1)
    datagram = encode_announcement(phone, False)
    bound = LocalSendDiscovery(ME, "127.0.0.2", "127.255.255.255", 1, listen=False)
    bound._received(datagram, ("192.0.2.7", 53317))  # heard on another interface: not ours
    assert bound.devices == {}
    bound._received(datagram, ("127.0.0.9", 53317))
    assert [d.address for d in bound.devices.values()] == ["127.0.0.9"]
    everywhere = LocalSendDiscovery(ME, "0.0.0.0", "127.255.255.255", 1, listen=False)
    everywhere._received(datagram, ("192.0.2.7", 53317))
    assert [d.address for d in everywhere.devices.values()] == ["192.0.2.7"]
