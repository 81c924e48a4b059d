"""The LAN page: what this peer shares, as a read-only page for a browser without swarmshare.

    GET /                                    the page: a link per file; a folder's files and a
                                             link to the whole folder as one zip
    GET /v1/content/{id}/zip                 a folder as a zip, streamed as it is read

The page is plain HTML with one inline style sheet and no script, sized for a phone. Every
name on it comes from disk or from a manifest and is escaped; links are percent-encoded. A file
link is the peer server's `/v1/content/{id}/file[/{path}]` route (with Range, so a browser can
resume) and carries the `download` attribute with the file's own name. Nothing on the page
changes state.

The zip is *stored* (no compression: the bytes go out as they are on disk, and its length is
known before the first byte, so the browser shows progress). Each member's CRC-32 is computed
while it is sent and written after it in a data descriptor, so no file is read twice nor held
in memory: a member is read a piece at a time. Sizes, offsets or counts past the 32- or 16-bit
fields of a zip use ZIP64 records (APPNOTE 4.3.9, 4.4, 4.5.3, 4.3.14-15).
"""

from __future__ import annotations

import asyncio
import html
import os
import struct
import time
import zlib
from array import array
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol
from urllib.parse import quote

from swarmshare.core.catalog import Catalog
from swarmshare.core.manifest import Manifest
from swarmshare.errors import ServeError

MAX_PAGE_ITEMS = 2000  # contents listed on the page (the rest: a line saying how many more)
MAX_PAGE_FILES_PER_FOLDER = 500  # a folder's files listed (the rest: in its zip)
MAX_PAGE_FILE_LINKS = 5000  # folders' files listed on the whole page
ZIP_PIECE_BYTES = 1024 * 1024  # what is read from a file and sent at a time
ZIP_DIRECTORY_PIECE_BYTES = 256 * 1024
MAX_32 = 0xFFFFFFFF
MAX_16 = 0xFFFF

Write = Callable[[bytes], Awaitable[None]]


class LanProvider(Protocol):
    """What the page and the zip are made from: the peer server's content provider."""

    def catalog(self) -> Catalog:
        """The current catalogue (only its complete contents are on the page)."""

    def manifest(self, content_id: str) -> Manifest:
        """The manifest of a complete shared content; ServeError otherwise."""

    def file_location(self, content_id: str, path: str | None) -> str:
        """The on-disk path of a complete, intact file of a content; ServeError otherwise."""


@dataclass(frozen=True)
class LanPage:
    """What the peer server needs for its LAN page: the shares and the peer's name."""

    provider: LanProvider
    peer_name: str


def render_page(provider: LanProvider, peer_name: str, note: str = "") -> str:
    """The page's HTML."""
    items = sorted(
        (item for item in provider.catalog().items if item.complete),
        key=lambda item: (item.name.lower(), item.id),
    )
    title = html.escape(peer_name or "swarmshare")
    rows: list[str] = []
    links_left = MAX_PAGE_FILE_LINKS
    for item in items[:MAX_PAGE_ITEMS]:
        try:
            manifest = provider.manifest(item.id)
        except ServeError:
            continue  # gone since the catalogue was built
        listed = min(manifest.file_count, MAX_PAGE_FILES_PER_FOLDER, links_left)
        if manifest.kind == "dir":
            links_left -= listed
        rows.append(_content_row(item.id, manifest, listed))
    if len(items) > MAX_PAGE_ITEMS:
        rows.append(f"<li>… and {len(items) - MAX_PAGE_ITEMS:,} more not listed here</li>")
    body = "\n".join(rows) if rows else '<li class="empty">Nothing is shared here yet.</li>'
    footer = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return _PAGE.format(title=title, rows=body, footer=footer)


def content_zip(manifest: Manifest) -> StoredZip:
    """The zip of a folder content: each file under the folder's name."""
    if manifest.kind != "dir":
        raise ServeError(400, "not_a_folder", "only a folder is sent as a zip")
    prefix = manifest.name + "/"
    names = [prefix + manifest.path_of(i) for i in range(manifest.file_count)]
    sizes = [manifest.size_of(i) for i in range(manifest.file_count)]
    return StoredZip(names, sizes)


def zip_disposition(name: str) -> str:
    """The Content-Disposition of a folder's zip: `name.zip` (RFC 6266, with an ASCII
    fallback)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}.zip\"; filename*=UTF-8''{quote(name + '.zip')}"


async def stream_zip(layout: StoredZip, path_of: Callable[[int], str], write: Write) -> None:
    """Send the zip through `write`: each member read from `path_of(index)` a piece at a time.
    ServeError when a file is gone or its size is not the manifest's (the caller has sent
    part of the zip by then and must cut the connection)."""
    for index in range(len(layout.names)):
        path = path_of(index)
        try:
            handle = open(path, "rb")  # noqa: ASYNC230, SIM115 - open is instant; closed below
        except OSError:
            raise ServeError(410, "changed_on_disk", "the file is gone") from None
        with handle:
            stat = os.fstat(handle.fileno())
            if stat.st_size != layout.sizes[index]:
                raise ServeError(410, "changed_on_disk", "the shared file changed on disk")
            layout.set_time(index, stat.st_mtime)
            await write(layout.local_header(index))
            crc = 0
            left = layout.sizes[index]
            while left:
                data, crc = await asyncio.to_thread(_read_piece, handle, left, crc)
                if not data:
                    raise ServeError(410, "changed_on_disk", "the shared file changed on disk")
                left -= len(data)
                await write(data)
            layout.set_crc(index, crc)
            await write(layout.descriptor(index))
    for piece in layout.directory():
        await write(piece)


class StoredZip:
    """The byte layout of a stored zip of known members, written front to back.

    `size_limit` and `count_limit` are where ZIP64 begins (the format's 32- and 16-bit
    maxima; tests lower them to exercise the ZIP64 records with small files).
    """

    def __init__(
        self,
        names: list[str],
        sizes: list[int],
        *,
        size_limit: int = MAX_32,
        count_limit: int = MAX_16,
    ) -> None:
        self.names = [name.encode() for name in names]
        self.sizes = sizes
        self._size_limit = size_limit
        self._count_limit = count_limit
        self._crcs = array("L", bytes(array("L").itemsize * len(names)))
        self._dos = array("L", bytes(array("L").itemsize * len(names)))  # date << 16 | time
        self._offsets: list[int] = []
        offset = 0
        for name, size in zip(self.names, sizes, strict=True):
            self._offsets.append(offset)
            zip64 = size >= size_limit
            offset += 30 + len(name) + (20 if zip64 else 0) + size + (24 if zip64 else 16)
        self.directory_offset = offset
        self.directory_size = sum(self._central_size(i) for i in range(len(self.names)))
        self.zip64_end = (
            len(self.names) >= count_limit
            or self.directory_size >= size_limit
            or self.directory_offset >= size_limit
        )
        self.total_size = (
            self.directory_offset + self.directory_size + (56 + 20 if self.zip64_end else 0) + 22
        )

    def set_time(self, index: int, mtime: float) -> None:
        """Member `index`'s modification time (seconds since the epoch)."""
        self._dos[index] = _dos_time(mtime)

    def set_crc(self, index: int, crc: int) -> None:
        """Member `index`'s CRC-32, once all its bytes went out."""
        self._crcs[index] = crc

    def local_header(self, index: int) -> bytes:
        """The local file header of member `index` (CRC and sizes follow the data)."""
        name, zip64 = self.names[index], self._zip64(index)
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) if zip64 else b""
        size_field = MAX_32 if zip64 else 0
        dos = self._dos[index]
        return (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                45 if zip64 else 20,
                _FLAGS,
                0,  # stored
                dos & 0xFFFF,
                dos >> 16,
                0,
                size_field,
                size_field,
                len(name),
                len(extra),
            )
            + name
            + extra
        )

    def descriptor(self, index: int) -> bytes:
        """The data descriptor after member `index`'s data."""
        size, crc = self.sizes[index], self._crcs[index]
        if self._zip64(index):
            return struct.pack("<IIQQ", 0x08074B50, crc, size, size)
        return struct.pack("<IIII", 0x08074B50, crc, size, size)

    def directory(self) -> Iterator[bytes]:
        """The central directory and the end records, in pieces."""
        piece = bytearray()
        for index in range(len(self.names)):
            piece += self._central(index)
            if len(piece) >= ZIP_DIRECTORY_PIECE_BYTES:
                yield bytes(piece)
                piece.clear()
        count = len(self.names)
        if self.zip64_end:
            end64_offset = self.directory_offset + self.directory_size
            piece += struct.pack(
                "<IQHHIIQQQQ",
                0x06064B50,
                44,
                _MADE_BY,
                45,
                0,
                0,
                count,
                count,
                self.directory_size,
                self.directory_offset,
            )
            piece += struct.pack("<IIQI", 0x07064B50, 0, end64_offset, 1)
        piece += struct.pack(
            "<IHHHHIIH",
            0x06054B50,
            0,
            0,
            MAX_16 if count >= self._count_limit else count,
            MAX_16 if count >= self._count_limit else count,
            MAX_32 if self.directory_size >= self._size_limit else self.directory_size,
            MAX_32 if self.directory_offset >= self._size_limit else self.directory_offset,
            0,
        )
        yield bytes(piece)

    def _zip64(self, index: int) -> bool:
        return self.sizes[index] >= self._size_limit

    def _central_extra(self, index: int) -> list[int]:
        values = []
        if self._zip64(index):
            values += [self.sizes[index], self.sizes[index]]
        if self._offsets[index] >= self._size_limit:
            values.append(self._offsets[index])
        return values

    def _central_size(self, index: int) -> int:
        values = self._central_extra(index)
        return 46 + len(self.names[index]) + (4 + 8 * len(values) if values else 0)

    def _central(self, index: int) -> bytes:
        name, size, offset = self.names[index], self.sizes[index], self._offsets[index]
        values = self._central_extra(index)
        extra = struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values) if values else b""
        zip64 = self._zip64(index)
        dos = self._dos[index]
        return (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                _MADE_BY,
                45 if values else 20,
                _FLAGS,
                0,
                dos & 0xFFFF,
                dos >> 16,
                self._crcs[index],
                MAX_32 if zip64 else size,
                MAX_32 if zip64 else size,
                len(name),
                len(extra),
                0,
                0,
                0,
                0o100644 << 16,
                MAX_32 if offset >= self._size_limit else offset,
            )
            + name
            + extra
        )


_FLAGS = 0x0808  # bit 3: sizes and CRC in a data descriptor; bit 11: names are UTF-8
_MADE_BY = (3 << 8) | 45  # Unix (the external attributes are a mode), spec version 4.5


def _dos_time(mtime: float) -> int:
    """DOS date << 16 | DOS time of a modification time (local time; 1980 at the earliest)."""
    t = time.localtime(max(mtime, 315532800 + 86400))
    if t.tm_year > 2107:
        return (127 << 25) | (12 << 21) | (31 << 16)
    date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    clock = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    return (date << 16) | clock


def _read_piece(handle: IO[bytes], left: int, crc: int) -> tuple[bytes, int]:
    data = handle.read(min(left, ZIP_PIECE_BYTES))
    return data, zlib.crc32(data, crc)


def _content_row(content_id: str, manifest: Manifest, listed: int) -> str:
    name = html.escape(manifest.name)
    size = _size(manifest.total_size)
    if manifest.kind != "dir":
        href = f"/v1/content/{content_id}/file"
        return (
            f'<li><a href="{href}" download="{name}">{name}</a>'
            f' <span class="size">{size}</span></li>'
        )
    count = manifest.file_count
    links = []
    for index in range(listed):
        path = manifest.path_of(index)
        href = f"/v1/content/{content_id}/file/{quote(path)}"
        base = html.escape(path.rsplit("/", 1)[-1])
        links.append(
            f'<li><a href="{href}" download="{base}">{html.escape(path)}</a>'
            f' <span class="size">{_size(manifest.size_of(index))}</span></li>'
        )
    if count > listed:
        links.append(f"<li>… and {count - listed:,} more files: they are in the zip</li>")
    files = "file" if count == 1 else "files"
    return (
        f'<li class="folder"><span class="name">{name}/</span>'
        f' <span class="size">{count:,} {files}, {size}</span>'
        f'<br><a class="zip" href="/v1/content/{content_id}/zip">Download the folder'
        f" as a zip</a>"
        f"<details><summary>Files one by one</summary><ul>{''.join(links)}</ul></details>"
        "</li>"
    )


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{nbytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{nbytes} bytes"


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · swarmshare</title>
<style>
body {{ font: 17px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 46rem;
  padding: 0.75rem 1rem; color: #111; background: #fff; }}
h1 {{ font-size: 1.35rem; margin: 0.4rem 0; overflow-wrap: anywhere; }}
p {{ margin: 0.3rem 0 0.8rem; color: #444; }}
ul {{ list-style: none; margin: 0; padding: 0; }}
li {{ padding: 0.55rem 0; border-bottom: 1px solid #ddd; overflow-wrap: anywhere; }}
li li {{ border: 0; padding: 0.35rem 0 0.35rem 0.8rem; }}
a {{ color: #0645ad; padding: 0.2rem 0; }}
a.zip {{ display: inline-block; margin: 0.3rem 0; }}
.size, .note {{ color: #555; font-size: 0.9rem; white-space: nowrap; }}
.name {{ font-weight: 600; }}
summary {{ cursor: pointer; padding: 0.3rem 0; }}
</style>
</head>
<body>
<h1>Shared by {title}</h1>
<p>Tap a name to download it. This page only lists; nothing here changes anything.</p>
<ul>
{rows}
</ul>
{footer}
</body>
</html>
"""
