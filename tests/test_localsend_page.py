"""A LocalSend offer on the local page: shown live, accepted with a click (headless Chromium)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from swarmshare.app.loopback import spare_port

from conftest import Swarm
from helpers import ARGS, CHROMIUM, async_playwright, cli, needs_chromium, wait_until

pytestmark = needs_chromium


def test_an_offer_waits_on_the_page_and_is_accepted_with_a_click(
    swarm: Swarm, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    port = spare_port()
    peer = swarm.start(
        2,
        "--localsend",
        "--localsend-port",
        str(port),
        "--localsend-group",
        "127.255.255.255",
        "--download-dir",
        str(inbox),
    )
    url = cli(peer.home, "open", "--print-url").stdout.strip()
    base = f"https://127.0.0.2:{port}/api/localsend/v2"
    body = {
        "info": {"alias": "Nice Orange\u202e", "fingerprint": "z"},
        "files": {"f1": {"id": "f1", "fileName": "poster.png", "size": 5}},
    }

    async def send() -> tuple[int, int]:
        connector = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.9", 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.post(f"{base}/prepare-upload", json=body) as r:
                offered = r.status
                grant = await r.json()
            token = grant["files"]["f1"]
            params = {"sessionId": grant["sessionId"], "fileId": "f1", "token": token}
            async with http.post(f"{base}/upload", params=params, data=b"hello") as r:
                return offered, r.status

    async def drive() -> None:
        assert async_playwright is not None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            await page.goto(url)
            assert await page.locator("#inbox-section").is_hidden()
            sender = asyncio.ensure_future(send())
            # The sender's name as text, without the bidi override it came with.
            accept = page.get_by_role("button", name="Accept Nice Orange", exact=True)
            await accept.wait_for(timeout=15000)
            assert "offers 1 file(s), 5 B: poster.png" in await page.inner_text("#inbox")
            await accept.click()
            assert await sender == (200, 200)
            await page.locator("#inbox-section").wait_for(state="hidden", timeout=15000)
            await browser.close()

    asyncio.run(drive())
    wait_until(lambda: (inbox / "poster.png").exists())
    assert (inbox / "poster.png").read_bytes() == b"hello"
