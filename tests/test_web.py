"""The web page in a real browser: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from conftest import Swarm
from helpers import (
    ARGS,
    CHROMIUM,
    async_playwright,
    cli,
    needs_chromium,
    wait_until,
    write_test_file,
)

pytestmark = needs_chromium


def test_page_shows_the_network_and_downloads_with_a_click(swarm: Swarm, tmp_path: Path) -> None:
    src = tmp_path / "lecture.mp4"
    write_test_file(src, 3 * 1024 * 1024, seed=31)
    seeder = swarm.start(2)
    viewer = swarm.start(3)
    folder = tmp_path / "Downloads"
    folder.mkdir()
    url = cli(viewer.home, "open", "--print-url").stdout.strip()
    assert url.startswith("http://127.0.0.1:") and "/login?token=" in url

    async def drive() -> None:
        assert async_playwright is not None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(url)
            await page.fill("#folder", str(folder))
            await page.get_by_role("button", name="Save").click()
            await page.get_by_text("Download folder saved.").wait_for()
            # Shared after the page is open: it must appear live, with no reload.
            assert seeder.cli("share", str(src)).returncode == 0
            button = page.get_by_role("button", name="Download lecture.mp4")
            await button.wait_for(timeout=15000)
            await page.fill("#filter", "nothing-matches")
            assert await page.locator("#network tbody tr").count() == 0
            await page.fill("#filter", "lect")
            await button.focus()  # keyboard: a real button, activated with Enter
            await page.keyboard.press("Enter")
            await page.locator("#downloads li[data-state=done]").wait_for(timeout=30000)
            await page.wait_for_timeout(800)  # let the log and shares catch up
            assert await page.get_by_text(str(folder / "lecture.mp4")).count() >= 1
            await page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            await phone.goto(url)
            await phone.get_by_role("button", name="Download lecture.mp4").wait_for()
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a 390px phone"
            await phone.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
            if os.environ.get("SWARMSHARE_SCREENSHOTS"):  # refresh the README's pictures
                await page.screenshot(path=os.environ["SWARMSHARE_SCREENSHOTS"] + "/page.png")
                await phone.screenshot(path=os.environ["SWARMSHARE_SCREENSHOTS"] + "/phone.png")
            await browser.close()

    asyncio.run(drive())
    wait_until(lambda: (folder / "lecture.mp4").exists())
    assert (folder / "lecture.mp4").read_bytes() == src.read_bytes()
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_page_refuses_without_the_token(swarm: Swarm) -> None:
    peer = swarm.start(2)
    url = cli(peer.home, "open", "--print-url").stdout.strip()
    base = url.split("/login")[0]

    async def drive() -> tuple[int, int]:
        assert async_playwright is not None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page()
            api = await page.goto(base + "/api/status")
            login = await page.goto(base + "/login?token=wrong")
            await browser.close()
            assert api is not None and login is not None
            return api.status, login.status

    assert asyncio.run(drive()) == (401, 401)


def test_page_without_a_login_says_how_to_log_in(swarm: Swarm) -> None:
    peer = swarm.start(2)
    base = cli(peer.home, "open", "--print-url").stdout.strip().split("/login")[0]

    async def drive() -> str:
        assert async_playwright is not None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page()
            await page.goto(base + "/")  # the address `status` prints, no token
            me = page.locator("#me", has_text="swarmshare open")
            await me.wait_for(timeout=15000)
            text = await me.text_content()
            await browser.close()
            return text or ""

    assert "Not logged in" in asyncio.run(drive())


def test_page_ids_text_names_errors_beside_actions_and_finished_stats(
    swarm: Swarm, tmp_path: Path
) -> None:
    shares = tmp_path / "shares"
    for folder, size in (("a", 3072), ("b", 5120)):
        (shares / folder).mkdir(parents=True)
        (shares / folder / "report.txt").write_bytes(bytes([size % 251]) * size)
    tricky = shares / "rtl\u202etxt.exe"
    tricky.write_bytes(b"x" * 4000)
    seeder = swarm.start(2, "--name", "<b>[/x]</b>")
    viewer = swarm.start(3)
    assert seeder.cli("share", str(shares / "a" / "report.txt")).returncode == 0
    assert seeder.cli("share", str(shares / "b" / "report.txt"), str(tricky)).returncode == 0
    ids = {item["id"][:12] for item in seeder.json("library")}
    gone, typed = tmp_path / "gone", tmp_path / "typed"
    gone.mkdir()
    typed.mkdir()
    url = cli(viewer.home, "open", "--print-url").stdout.strip()

    async def drive() -> tuple[set[str], str, str, str, str]:
        assert async_playwright is not None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(url)
            await page.locator("#network tbody tr").nth(2).wait_for(timeout=15000)
            shown_ids = set(await page.locator("#network tbody td.id").all_text_contents())
            peer_name = await page.locator("#peers tbody td").first.text_content()
            # An error shows in the row whose button was clicked.
            await page.fill("#folder", str(gone))
            await page.get_by_role("button", name="Save").click()
            await page.get_by_text("Download folder saved.").wait_for()
            gone.rmdir()  # a missing folder would be created: a file in its place cannot be
            gone.write_text("not a folder")
            row = page.locator("#network tbody tr", has_text="3.0 KiB")
            await row.get_by_role("button").click()
            await row.locator(".msg", has_text="Download failed").wait_for(timeout=10000)
            await page.wait_for_timeout(600)  # a redraw of the table keeps it
            error = await row.locator(".msg").text_content()
            # A typed folder is used by the next Download, though Save was not clicked.
            await page.fill("#folder", str(typed))
            await page.get_by_role("button", name="Download rtl\\u202etxt.exe").click()
            await page.locator("#downloads li[data-state=done]").wait_for(timeout=30000)
            card = await page.locator("#downloads li[data-state=done] .meta").first.text_content()
            tricky_cell = await page.locator("#network tbody td", has_text="rtl").text_content()
            await browser.close()
            return shown_ids, peer_name or "", error or "", card or "", tricky_cell or ""

    shown_ids, peer_name, error, card, tricky_cell = asyncio.run(drive())
    assert shown_ids == ids
    assert peer_name == "<b>[/x]</b>"
    assert "Download failed" in error and "gone" in error
    assert tricky_cell == "rtl\\u202etxt.exe"
    wait_until(lambda: (typed / tricky.name).exists())
    assert "1 peer(s) served" in card and "0 B/s" not in card, card
