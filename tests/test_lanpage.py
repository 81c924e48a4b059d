"""The LAN page: a read-only page of what a peer shares, for browsers without swarmshare.

Pure tier: the stored zip's layout read back by Python's zipfile (ZIP64 too, forced at small
sizes), the page's escaping, the terminal QR code. Process tier: a real peer's page in headless
Chromium at phone size, a file and a folder's zip downloaded from it, byte for byte; the page
off in a private swarm; `status` and `status --qr`.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core.catalog import Catalog, CatalogItem, make_catalog
from swarmshare.core.manifest import Manifest, file_entry
from swarmshare.errors import ServeError
from swarmshare.net.lanpage import MAX_PAGE_FILE_LINKS, StoredZip, render_page, stream_zip
from swarmshare.store.hashing import hash_content, scan_path

from conftest import Swarm
from helpers import ARGS, CHROMIUM, async_playwright, needs_chromium, write_test_file

HOSTILE_NAME = '<script>window.pwned=1 <img src=x onerror="window.pwned=2">.txt'


# ---- the zip, pure ---------------------------------------------------------------------------


def _zip_bytes(files: dict[str, bytes], **limits: int) -> bytes:
    """A zip of `files` made by StoredZip and stream_zip, from real files on disk."""
    names = list(files)
    layout = StoredZip(names, [len(files[n]) for n in names], **limits)
    out = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)

    async def run(folder: Path) -> None:
        paths = []
        for index, name in enumerate(names):
            path = folder / f"{index}.bin"
            path.write_bytes(files[name])
            paths.append(str(path))
        await stream_zip(layout, lambda i: paths[i], write)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))
    assert len(out) == layout.total_size, "the Content-Length sent ahead must be exact"
    return bytes(out)


def _read_back(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None  # every member's CRC checks
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
        return {info.filename: archive.read(info) for info in archive.infolist()}


FILES = {
    "box/a.txt": b"hello\n",
    "box/empty": b"",
    "box/sub/caf\u00e9 \u2603.bin": os.urandom(70_000),
    "box/sub/deeper/x": b"x" * 3,
}


def test_stored_zip_reads_back_equal() -> None:
    assert _read_back(_zip_bytes(FILES)) == FILES


def test_zip64_records_read_back_equal_when_forced_at_small_sizes() -> None:
    # Limits lowered so that every size, offset and the count take the ZIP64 forms that
    # files over 4 GiB and folders over 65,535 files need.
    data = _zip_bytes(FILES, size_limit=1, count_limit=1)
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # ZIP64 end record and locator
    assert _read_back(data) == FILES


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).map(
            lambda s: "d/" + s.replace("/", "_")
        ),
        st.binary(max_size=2000),
        max_size=6,
    ),
    st.sampled_from([(0xFFFFFFFF, 0xFFFF), (1, 1), (500, 3)]),
)
def test_any_files_zip_and_read_back_equal(
    files: dict[str, bytes], limits: tuple[int, int]
) -> None:
    data = _zip_bytes(files, size_limit=limits[0], count_limit=limits[1])
    assert _read_back(data) == files


def test_a_file_that_changed_size_stops_the_zip() -> None:
    layout = StoredZip(["d/a"], [10])

    async def run(path: str) -> None:
        async def write(_data: bytes) -> None:
            return None

        await stream_zip(layout, lambda _i: path, write)

    import tempfile

    with tempfile.NamedTemporaryFile() as handle:
        handle.write(b"short")
        handle.flush()
        with pytest.raises(ServeError):
            asyncio.run(run(handle.name))


# ---- the page, pure --------------------------------------------------------------------------


class _Shares:
    def __init__(self, manifests: list[Manifest]) -> None:
        self.manifests = {m.content_id: m for m in manifests}

    def catalog(self) -> Catalog:
        items = [
            CatalogItem(m.content_id, m.name, m.kind, m.total_size, m.chunk_total)
            for m in self.manifests.values()
        ]
        return make_catalog("0123456789abcdef", items)

    def manifest(self, content_id: str) -> Manifest:
        return self.manifests[content_id]

    def file_location(self, content_id: str, path: str | None) -> str:
        raise AssertionError("the page reads no file")


def _manifest(path: Path) -> Manifest:
    name, kind, files, _ = scan_path(str(path))
    return hash_content(name, kind, files)


def test_names_are_escaped_and_links_encoded(tmp_path: Path) -> None:
    folder = tmp_path / "a&b <folder>"
    folder.mkdir()
    (folder / HOSTILE_NAME).write_text("x")
    (folder / "100% #1?.txt").write_text("y")
    single = tmp_path / '"quoted" <b>bold.txt'
    single.write_text("z")
    page = render_page(_Shares([_manifest(folder), _manifest(single)]), "<i>lab</i> & co")
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "<i>" not in page
    assert "&lt;script&gt;" in page and "&lt;i&gt;lab&lt;/i&gt; &amp; co" in page
    assert "/file/100%25%20%231%3F.txt" in page
    assert 'download="&quot;quoted&quot; &lt;b&gt;bold.txt"' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


def test_a_huge_library_makes_a_page_of_bounded_size() -> None:
    folders = [
        Manifest.build(f"box{n:02}", "dir", [file_entry(f"f{i:04}", 0, []) for i in range(600)])
        for n in range(20)
    ]
    page = render_page(_Shares(folders), "lab")
    assert page.count('download="f') == MAX_PAGE_FILE_LINKS  # 20 x 600 files, 5,000 links
    assert page.count("Download the folder as a zip") == 20  # every folder still has its zip
    assert "… and 100 more files: they are in the zip" in page
    assert "… and 600 more files: they are in the zip" in page


def test_terminal_qr_code_is_the_code_of_the_address() -> None:
    segno = pytest.importorskip("segno")
    from swarmshare.app.qr import qr_text

    url = "http://192.168.1.23:5001/"
    lines = qr_text(url).splitlines()
    # Read the half blocks back into modules: ink is a light module.
    light_top = {" ": False, "▄": False, "▀": True, "█": True}
    light_bottom = {" ": False, "▄": True, "▀": False, "█": True}
    modules = []
    for line in lines:
        modules.append([not light_top[c] for c in line])
        modules.append([not light_bottom[c] for c in line])
    expected = [
        [bool(m) for m in row]
        for row in segno.make(url, error="m", micro=False).matrix_iter(scale=1, border=2)
    ]
    assert modules[: len(expected)] == expected


# ---- a real peer's page ----------------------------------------------------------------------


def _shares(tmp_path: Path) -> tuple[Path, Path]:
    single = tmp_path / "talk slides.pdf"
    write_test_file(single, 3 * 1024 * 1024 + 7, seed=41)
    folder = tmp_path / "holiday photos"
    (folder / "day 1").mkdir(parents=True)
    write_test_file(folder / "day 1" / "beach.jpg", 1024 * 1024 + 3, seed=42)
    write_test_file(folder / "map.png", 200_000, seed=43)
    (folder / "empty.txt").write_bytes(b"")
    (folder / HOSTILE_NAME).write_text("not a script\n")
    return single, folder


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@needs_chromium
def test_phone_downloads_a_file_and_a_folder_zip_from_the_lan_page(
    swarm: Swarm, tmp_path: Path
) -> None:
    single, folder = _shares(tmp_path)
    peer = swarm.start(2)
    for path in (single, folder):
        assert peer.cli("share", str(path)).returncode == 0
    state = peer.json("status")
    url = state["lan_page"]
    assert url == f"http://127.0.0.2:{state['port']}/"
    assert len(state["fingerprint"]) == 64 and len(state["compare_code"]) == 19
    saved = tmp_path / "saved"
    saved.mkdir()

    async def drive() -> tuple[int, object]:
        assert async_playwright is not None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            phone = await browser.new_context(
                viewport={"width": 390, "height": 844},
                device_scale_factor=3,
                is_mobile=True,
                has_touch=True,
                accept_downloads=True,
            )
            page = await phone.new_page()
            await page.goto(url)
            await page.get_by_text("Shared by peer2").wait_for()
            width = await page.evaluate("document.documentElement.scrollWidth")
            async with page.expect_download() as info:
                await page.get_by_role("link", name="talk slides.pdf").click()
            download = await info.value
            assert download.suggested_filename == "talk slides.pdf"
            await download.save_as(saved / "talk slides.pdf")
            async with page.expect_download() as info:
                await page.get_by_role("link", name="Download the folder as a zip").click()
            download = await info.value
            assert download.suggested_filename == "holiday photos.zip"
            await download.save_as(saved / "folder.zip")
            await page.get_by_text("Files one by one").click()
            hostile = page.get_by_text(HOSTILE_NAME, exact=True)
            await hostile.wait_for()
            async with page.expect_download() as info:
                await page.get_by_role("link", name="day 1/beach.jpg").click()
            download = await info.value
            assert download.suggested_filename == "beach.jpg"
            await download.save_as(saved / "beach.jpg")
            pwned = await page.evaluate("window.pwned")
            await page.screenshot(path=str(tmp_path / "lanpage.png"), full_page=True)
            if os.environ.get("SWARMSHARE_SCREENSHOTS"):
                await page.screenshot(path=os.environ["SWARMSHARE_SCREENSHOTS"] + "/lanpage.png")
            await browser.close()
            return width, pwned

    width, pwned = asyncio.run(drive())
    assert width <= 390, f"the page is {width}px wide on a 390px phone"
    assert pwned is None, "a name from disk ran as HTML"
    assert (saved / "talk slides.pdf").read_bytes() == single.read_bytes()
    assert (saved / "beach.jpg").read_bytes() == (folder / "day 1" / "beach.jpg").read_bytes()
    out = tmp_path / "unzipped"
    with zipfile.ZipFile(saved / "folder.zip") as archive:
        assert archive.testzip() is None
        archive.extractall(out)
    expected = {
        p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == expected


def test_page_lists_only_and_changes_nothing(swarm: Swarm, tmp_path: Path) -> None:
    single, folder = _shares(tmp_path)
    peer = swarm.start(2)
    for path in (single, folder):
        assert peer.cli("share", str(path)).returncode == 0
    url = peer.json("status")["lan_page"]
    status, kind, body = _get(url)
    assert status == 200 and kind.startswith("text/html")
    assert b"<script" not in body and b"&lt;script&gt;" in body
    before = peer.json("library")
    for method in ("POST", "PUT", "DELETE"):
        request = urllib.request.Request(url, data=b"x", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        refused.value.close()
        assert refused.value.code == 405
    assert peer.json("library") == before
    status, kind, _ = _get(url + "v1/content/" + "0" * 64 + "/zip")
    assert status == 404
    folder_id = next(c["id"] for c in before if c["name"] == folder.name)
    zip_url = f"{url}v1/content/{folder_id}/zip"
    with urllib.request.urlopen(urllib.request.Request(zip_url, method="HEAD"), timeout=10) as r:
        head_length = int(r.headers["Content-Length"])
        assert r.read() == b""
    with urllib.request.urlopen(zip_url, timeout=10) as reply:
        assert reply.headers["Content-Type"] == "application/zip"
        assert "attachment" in reply.headers["Content-Disposition"]
        body = reply.read()
    assert len(body) == head_length
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None


def test_page_is_off_in_a_private_swarm(swarm: Swarm) -> None:
    peer = swarm.start(2, "--secret", "correct horse battery staple")
    state = peer.json("status")
    assert state["lan_page"] is None and state["tls"] is True
    port = int(state["port"])
    # A browser speaking plain HTTP gets no page (nor anything readable) ...
    with socket.create_connection(("127.0.0.2", port), 10, ("127.0.0.9", 0)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(10)
        data = b""
        try:
            while piece := sock.recv(65536):
                data += piece
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"HTTP/1.1 200" not in data and b"<html" not in data
    # ... and over TLS, one plain line saying it is off.
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.2", port), 10, ("127.0.0.9", 0)) as raw,
        context.wrap_socket(raw) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while piece := sock.recv(65536):
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404") and b"text/plain" in head
    assert (
        body.strip()
        == b"No page here: this peer is in a private swarm, which shows none to browsers."
    )
    qr = peer.cli("status", "--qr")
    assert qr.returncode != 0 and "private swarm has no LAN page" in qr.stderr


def test_status_shows_the_page_the_compare_code_and_a_qr_code(swarm: Swarm) -> None:
    pytest.importorskip("segno")
    from swarmshare.app.qr import qr_text

    peer = swarm.start(2)
    state = peer.json("status")
    text = peer.cli("status")
    assert text.returncode == 0
    assert f"LAN page for browsers: {state['lan_page']}" in text.stdout
    assert f"certificate compare code: {state['compare_code']}" in text.stdout
    qr = peer.cli("status", "--qr")
    assert qr.returncode == 0, qr.stderr
    assert qr_text(state["lan_page"]) in qr.stdout
    assert state["lan_page"] in qr.stdout
    # The certificate is the home's: the same after a restart.
    peer.stop()
    peer.start()
    assert peer.json("status")["fingerprint"] == state["fingerprint"]
    assert json.loads(peer.cli("status", "--json").stdout)["compare_code"] == state["compare_code"]


@needs_chromium
def test_local_page_shows_the_lan_page_its_qr_code_and_the_compare_code(swarm: Swarm) -> None:
    pytest.importorskip("segno")
    peer = swarm.start(2)
    state = peer.json("status")
    login = peer.cli("open", "--print-url").stdout.strip()

    async def drive() -> tuple[str, int, str]:
        assert async_playwright is not None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            await page.goto(login)
            link = page.locator("#lan-page a")
            await link.wait_for(timeout=15000)
            href = await link.get_attribute("href") or ""
            qr = page.locator("#lan-qr")
            await qr.wait_for(state="visible")
            # (polled through evaluate: the page's CSP forbids wait_for_function's eval)
            deadline = time.monotonic() + 30
            while not await qr.evaluate("img => img.complete && img.naturalWidth > 0"):
                assert time.monotonic() < deadline, "the QR code image never loaded"
                await asyncio.sleep(0.05)
            width = int(await qr.evaluate("img => img.naturalWidth"))
            code = await page.locator("#compare-code").text_content() or ""
            await browser.close()
            return href, width, code

    href, width, code = asyncio.run(drive())
    assert href == state["lan_page"]
    assert width >= 100, "the QR code image loaded"
    assert code == state["compare_code"]


def test_a_big_folder_zip_streams_in_bounded_memory(swarm: Swarm, tmp_path: Path) -> None:
    folder = tmp_path / "disk image"
    folder.mkdir()
    big = 384 * 1024 * 1024
    with open(folder / "image.raw", "wb") as handle:  # sparse: quick to make and to hash
        handle.truncate(big)
    (folder / "notes.txt").write_text("the image is empty\n")
    peer = swarm.start(2)
    assert peer.cli("share", str(folder)).returncode == 0
    folder_id = peer.json("library")[0]["id"]
    before = swarm.peak_rss_mib()["peer2"]
    received = 0
    tail = b""
    url = f"{peer.json('status')['lan_page']}v1/content/{folder_id}/zip"
    with urllib.request.urlopen(url, timeout=30) as reply:
        length = int(reply.headers["Content-Length"])
        while piece := reply.read(1 << 20):
            received += len(piece)
            tail = (tail + piece)[-(1 << 16) :]
    grew = swarm.peak_rss_mib()["peer2"] - before
    assert received == length > big
    assert tail.endswith(b"\x00\x00") and b"PK\x05\x06" in tail  # ends with the zip's end record
    assert grew < 64, f"zipping a {big >> 20} MiB file took {grew:.0f} MiB more memory"
