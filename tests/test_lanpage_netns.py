"""The LAN page found by mDNS on real hosts (network namespaces: mDNS runs only there): an open
peer advertises its page as `_http._tcp` (path=/) at its address and peer port, and a private
peer does not. Skipped, with the reason, where namespaces cannot be made (not root)."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import wait_until
from netlab import NetLab, can_build, lab_fixture

REASON = can_build()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

# Run inside host b: browse both service types until both peers' `_swarmshare._tcp` records are
# in (so the page records, registered at the same time, had their chance), then resolve each
# `_http._tcp` record and fetch the page it names.
BROWSE = """
import asyncio, json, sys, urllib.request
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

HTTP, NATIVE = "_http._tcp.local.", "_swarmshare._tcp.local."

async def main(interface):
    loop = asyncio.get_running_loop()
    zc = AsyncZeroconf(interfaces=[interface])
    found = {HTTP: set(), NATIVE: set()}
    def changed(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            found[service_type].add(name)
    browser = AsyncServiceBrowser(zc.zeroconf, [HTTP, NATIVE], handlers=[changed])
    deadline = loop.time() + 40
    while loop.time() < deadline and (len(found[NATIVE]) < 2 or not found[HTTP]):
        await asyncio.sleep(0.1)
    pages = []
    for name in sorted(found[HTTP]):
        info = AsyncServiceInfo(HTTP, name)
        await info.async_request(zc.zeroconf, 5000)
        address = info.parsed_addresses(IPVersion.V4Only)[0]
        url = f"http://{address}:{info.port}/"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        pages.append({"name": name, "address": address, "port": info.port,
                      "path": (info.properties or {}).get(b"path", b"").decode(),
                      "shared_by": body.decode().split("<h1>", 1)[1].split("</h1>", 1)[0]})
    print(json.dumps({"native": len(found[NATIVE]), "pages": pages}))
    await browser.async_cancel()
    await zc.async_close()

asyncio.run(main(sys.argv[1]))
"""


lab = lab_fixture()


def test_the_lan_page_is_advertised_by_mdns_as_http_and_a_private_peer_has_none(
    lab: NetLab,
) -> None:
    lab.build({"a": 1, "b": 1, "c": 1}, mdns=True)
    lab.start("a", "run", "--name", "a")
    lab.start("c", "run", "--name", "c", "--secret", "correct horse battery staple")
    for name in "ac":
        home = lab.hosts[name].home / "home"
        wait_until(lambda h=home: (h / "control.json").exists(), timeout=30)
    status = json.loads(lab.cli("a", "status", "--json").stdout)
    browse = lab.run_in("b", sys.executable, "-c", BROWSE, lab.hosts["b"].address)
    out, _ = browse.communicate(timeout=90)
    assert browse.returncode == 0, out.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["native"] == 2, "both peers' own records were seen"
    assert [(p["address"], p["port"], p["path"], p["shared_by"]) for p in result["pages"]] == [
        (lab.hosts["a"].address, status["port"], "/", "Shared by a")
    ]
    assert status["lan_page"] == f"http://{lab.hosts['a'].address}:{status['port']}/"
