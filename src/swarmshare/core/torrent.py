"""BitTorrent's view of a content: magnet links and .torrent files, both ways (pure).

A content's manifest is what a v2 .torrent carries (see `core/manifest.py`), so:

- `magnet(content_id, name)` is the content's magnet link (BEP 9 with a v2 `btmh` topic), and
  `parse_magnet(uri)` reads one (any client's: v2, v1 or hybrid topics, peers, web seeds);
- `torrent_file(manifest, url_list, v1_pieces=None)` writes a .torrent: the info dict, the piece
  layers and BEP 19 web seeds. With `v1_pieces` (the SHA-1 of each piece of the BEP 47 layout
  `v1_layout` gives, see `store/hashing.v1_piece_hashes`) it is a **hybrid** torrent: the v1
  keys are added to the info dict, so that v1-only clients (aria2c, Transmission) can use it.
- `read_torrent(data)` reads a .torrent (v2 or hybrid) back into a `Torrent`: the content's
  manifest and the torrent's own infohashes.

The content ID is the infohash of the **v2-only** info dict. A hybrid torrent's info dict holds
the v1 keys too, so its infohashes (v2 and v1) are its own: `read_torrent` gives both the
content's manifest (its ID is the content ID) and those infohashes, to map one to the other.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from swarmshare.core import bencode
from swarmshare.core.manifest import FileEntry, Manifest, ManifestError, path_key, validate_name
from swarmshare.errors import UsageError
from swarmshare.limits import MAX_MANIFEST_BYTES, MAX_PATH_DEPTH

MAGNET_PREFIX = "magnet:?xt=urn:btmh:1220"  # multihash: SHA-256, 32 bytes
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_MAGNET_CHARS = 64 * 1024
PAD_FOLDER = ".pad"  # BEP 47 pad files are named .pad/LENGTH


@dataclass(frozen=True, slots=True)
class Torrent:
    """What a .torrent file says: the content's manifest, the torrent's own infohashes (hex;
    `infohash_v2` equals the content ID unless the torrent is a hybrid) and its web seeds."""

    manifest: Manifest
    infohash_v2: str
    infohash_v1: str | None
    url_list: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class V1Span:
    """One entry of the v1 (BEP 47) layout: a file of the manifest, or a pad of zeros."""

    file_index: int | None  # None for a pad file
    length: int


def is_torrent_ref(ref: str) -> bool:
    """Whether what the user typed names a torrent: a magnet link, a .torrent file or URL."""
    lower = ref.lower()
    return lower.startswith(("magnet:", "http://", "https://")) or lower.endswith(".torrent")


def magnet(content_id: str, name: str) -> str:
    """The magnet link of a content: `magnet:?xt=urn:btmh:1220<id>&dn=<name>`."""
    return f"{MAGNET_PREFIX}{content_id}&dn={quote(name, safe='')}"


@dataclass(frozen=True, slots=True)
class Magnet:
    """What a magnet link says: the v2 infohash (the content ID) if given, the v1 one if
    given (hex), the name, peers (`x.pe`, HOST:PORT), web seeds (`ws`) and trackers (`tr`)."""

    content_id: str | None
    infohash_v1: str | None
    name: str
    peers: tuple[str, ...]
    web_seeds: tuple[str, ...]
    trackers: tuple[str, ...]


def parse_magnet(uri: str) -> Magnet:
    """Read a magnet link (BEP 9, v2 `urn:btmh:1220`, v1 `urn:btih` in hex or base32);
    UsageError if it names no infohash."""
    if not uri.startswith("magnet:?") or len(uri) > MAX_MAGNET_CHARS:
        raise UsageError("not a magnet link (magnet:?xt=...)")
    fields = parse_qsl(uri[len("magnet:?") :], keep_blank_values=True)
    v2 = v1 = None
    for key, value in fields:
        if key != "xt" and not key.startswith("xt."):
            continue
        low = value.lower()
        if low.startswith("urn:btmh:1220") and _HEX64.fullmatch(low[13:]):
            v2 = low[13:]
        elif low.startswith("urn:btih:"):
            digest = value[9:]
            if re.fullmatch(r"[0-9a-fA-F]{40}", digest):
                v1 = digest.lower()
            elif re.fullmatch(r"[A-Za-z2-7]{32}", digest):
                v1 = base64.b32decode(digest.upper()).hex()
    if v2 is None and v1 is None:
        raise UsageError("the magnet link names no BitTorrent infohash (xt=urn:btmh or urn:btih)")

    def every(name: str) -> tuple[str, ...]:
        return tuple(v for k, v in fields if k == name or k.startswith(name + "."))

    names = every("dn")
    return Magnet(v2, v1, names[0] if names else "", every("x.pe"), every("ws"), every("tr"))


def magnet_json(content_id: str, name: str) -> dict[str, object]:
    """`{"magnet": LINK}` for a content with a v2 ID; `{}` for any other (a seed script's)."""
    return {"magnet": magnet(content_id, name)} if _HEX64.fullmatch(content_id) else {}


def v1_layout(manifest: Manifest) -> list[V1Span]:
    """The files in v1 order, each followed by a pad to the next piece boundary (the last
    one too; none after a file ending on a boundary, nor in a one-file content), as
    libtorrent writes hybrid torrents."""
    step = manifest.piece_length
    spans: list[V1Span] = []
    for index in range(manifest.file_count):
        size = manifest.size_of(index)
        spans.append(V1Span(index, size))
        if manifest.kind == "dir" and size % step:
            spans.append(V1Span(None, step - size % step))
    return spans


def pad_path(length: int) -> str:
    """The path of a BEP 47 pad file of `length` bytes, inside the torrent's folder."""
    return f"{PAD_FOLDER}/{length}"


def torrent_file(
    manifest: Manifest, url_list: Sequence[str] = (), v1_pieces: bytes | None = None
) -> bytes:
    """The .torrent of a content: v2, or hybrid when `v1_pieces` (concatenated SHA-1 digests
    of the v1 layout's pieces) is given; `url_list` are BEP 19 web seeds."""
    top: dict[bytes, Any] = {b"piece layers": bencode.decode(manifest.piece_layers)}
    if url_list:
        top[b"url-list"] = [u.encode("utf-8") for u in url_list]
    if v1_pieces is None:
        info_bytes = manifest.info
    else:
        step = manifest.piece_length
        pieces = -(-sum(s.length for s in v1_layout(manifest)) // step)
        if len(v1_pieces) != 20 * pieces:
            raise ValueError(f"a hybrid torrent of this content has {pieces} v1 pieces")
        info = bencode.decode(manifest.info)
        info[b"pieces"] = v1_pieces
        if manifest.kind == "file":
            info[b"length"] = manifest.total_size
        else:
            files: list[dict[bytes, Any]] = []
            for span in v1_layout(manifest):
                if span.file_index is None:
                    path = pad_path(span.length)
                    files.append({b"attr": b"p", b"length": span.length, b"path": _parts(path)})
                else:
                    path = manifest.path_of(span.file_index)
                    files.append({b"length": span.length, b"path": _parts(path)})
            info[b"files"] = files
        info_bytes = bencode.encode(info)
    out = bytearray(b"d4:info")
    out += info_bytes
    rest = bencode.encode(top)
    out += rest[1:]  # the other keys ("piece layers", "url-list") sort after "info"
    return bytes(out)


def read_torrent(data: bytes) -> Torrent:
    """The content a .torrent (v2 or hybrid) describes; ManifestError if it is not one."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"torrent of {len(data)} bytes is over the limit")
    try:
        top = bencode.decode(data, MAX_PATH_DEPTH + 8)
        if not isinstance(top, dict) or not isinstance(top.get(b"info"), dict):
            raise ManifestError("a torrent is a dictionary with an info dictionary")
        start, end = _info_span(data)
    except bencode.BencodeError as exc:
        raise ManifestError(f"not a torrent file: {exc}") from None
    info_bytes = data[start:end]
    layers = top.get(b"piece layers", {})
    if not isinstance(layers, dict):
        raise ManifestError("a torrent's piece layers are not a dictionary")
    urls = top.get(b"url-list", [])
    if not isinstance(urls, list):
        urls = [urls]
    url_list = tuple(u.decode("utf-8", "replace") for u in urls if isinstance(u, bytes))
    v1 = b"pieces" in top[b"info"]
    return Torrent(
        manifest_from_torrent(top[b"info"], layers),
        hashlib.sha256(info_bytes).hexdigest(),
        hashlib.sha1(info_bytes).hexdigest() if v1 else None,
        url_list,
    )


def manifest_from_torrent(info: dict[bytes, Any], piece_layers: dict[bytes, Any]) -> Manifest:
    """The manifest of a decoded v2 (or hybrid) info dict and piece layers: its v2 part only
    (v1 keys and file attributes are left out, see the module's docstring); every path, number
    and hash validated as for any manifest."""
    if info.get(b"meta version") != 2 or not isinstance(info.get(b"file tree"), dict):
        raise ManifestError("not a BitTorrent v2 torrent (no meta version 2 and file tree)")
    name = info.get(b"name")
    step = info.get(b"piece length")
    if not isinstance(name, bytes) or not isinstance(step, int) or step <= 0:
        raise ManifestError("a torrent's name or piece length is missing")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError("a torrent's name is not UTF-8") from None
    entries: list[FileEntry] = []
    _walk(info[b"file tree"], [], piece_layers, step, entries, 0)
    single = len(entries) == 1 and entries[0].path == text
    entries.sort(key=lambda e: path_key(e.path))
    return Manifest(text, "file" if single else "dir", entries, step)


def _info_span(data: bytes) -> tuple[int, int]:
    """Where the info dict's bytes are in a (valid) torrent's bytes."""
    pos = 1
    while data[pos : pos + 1] != b"e":
        start, end = bencode.read_string(data, pos)
        value_end = bencode.skip(data, end, MAX_PATH_DEPTH + 8)
        if data[start:end] == b"info":
            return end, value_end
        pos = value_end
    raise ManifestError("a torrent has an info dictionary")


def _parts(path: str) -> list[bytes]:
    return [p.encode("utf-8") for p in path.split("/")]


def _walk(
    tree: Any,
    folders: list[str],
    layers: dict[bytes, Any],
    step: int,
    out: list[FileEntry],
    depth: int,
) -> None:
    if not isinstance(tree, dict) or depth > MAX_PATH_DEPTH:
        raise ManifestError("a torrent's file tree is malformed or too deep")
    for key, node in tree.items():
        if not isinstance(node, dict):
            raise ManifestError("a torrent's file tree is malformed")
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError("a torrent's file name is not UTF-8") from None
        problem = validate_name(name)
        if problem:
            raise ManifestError(f"bad file name in the torrent: {problem}")
        props = node.get(b"")
        if isinstance(props, dict) and len(node) == 1:
            size = props.get(b"length")
            root = props.get(b"pieces root")
            if not isinstance(size, int):
                raise ManifestError("a file of the torrent has no length")
            chunks: tuple[str, ...] = ()
            if size > step:
                layer = layers.get(root) if isinstance(root, bytes) else None
                if not isinstance(layer, bytes):
                    raise ManifestError("a file of the torrent has no piece layer")
                chunks = tuple(layer[at : at + 32].hex() for at in range(0, len(layer), 32))
            elif size > 0:
                if not isinstance(root, bytes) or len(root) != 32:
                    raise ManifestError("a file of the torrent has no pieces root")
                chunks = (root.hex(),)
            entry = FileEntry("/".join([*folders, name]), size, step, chunks)
            if size > step and entry.pieces_root != root:
                raise ManifestError("a piece layer of the torrent does not hash to its root")
            out.append(entry)
        else:
            _walk(node, [*folders, name], layers, step, out, depth + 1)
