"""A content is a BitTorrent v2 torrent: the infohash and piece layers swarmshare computes equal
libtorrent's for the same files, and .torrent files and magnet links go both ways.

libtorrent is used offline only (create_torrent, torrent_info): no session, no socket.
"""

from __future__ import annotations

import base64
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core import bencode
from swarmshare.core.manifest import Manifest, ManifestError, decode_manifest, file_entry
from swarmshare.core.torrent import (
    magnet,
    manifest_from_torrent,
    parse_magnet,
    read_torrent,
    torrent_file,
    v1_layout,
)
from swarmshare.errors import UsageError
from swarmshare.limits import KIB, MIB
from swarmshare.store.hashing import hash_content, scan_path, v1_piece_hashes

lt: Any
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import libtorrent as lt
except ImportError:  # pragma: no cover - the extra is not installed
    lt = None

needs_libtorrent = pytest.mark.skipif(
    lt is None, reason="libtorrent (the optional extra swarmshare[bittorrent]) is not installed"
)


def _write(root: Path, files: dict[str, int]) -> None:
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def _share(path: Path) -> tuple[Manifest, list[str]]:
    name, kind, files, _ = scan_path(str(path))
    manifest = hash_content(name, kind, files)
    by_path = {f.rel_path: f.abs_path for f in files}
    return manifest, [by_path[manifest.path_of(i)] for i in range(manifest.file_count)]


def _libtorrent(path: Path, piece_length: int, hybrid: bool = False) -> dict[bytes, Any]:
    assert lt is not None
    flags = 0 if hybrid else lt.create_torrent.v2_only
    creator = lt.create_torrent(lt.list_files(str(path)), piece_length, flags)
    lt.set_piece_hashes(creator, str(path.parent))
    made: dict[bytes, Any] = creator.generate()
    return made


CASES = {
    "single file": {"one.bin": 300_001},
    "folder": {"f/a/x.bin": 200_000, "f/a/y.txt": 10, "f/b.bin": 70_000, "f/c/d/e.bin": 5},
    "empty file": {"e/empty": 0, "e/full": 1_000},
    "one piece exactly": {"piece.bin": 64 * KIB},
    "16 KiB exactly": {"block.bin": 16 * KIB},
    "odd sizes": {"o/a": 1, "o/b": 16 * KIB + 1, "o/c": 64 * KIB - 1, "o/d": 3 * 64 * KIB + 7},
    "several pieces and a small one": {"s/big": 5 * 64 * KIB + 123, "s/small": 100},
    "trailing empty file": {"t/a": 100, "t/z": 0},
}


@needs_libtorrent
@pytest.mark.parametrize("case", list(CASES))
def test_infohash_and_piece_layers_equal_libtorrents(tmp_path: Path, case: str) -> None:
    _write(tmp_path, CASES[case])
    (top,) = list(tmp_path.iterdir())
    manifest, paths = _share(top)
    made = _libtorrent(top, manifest.piece_length)
    info = bencode.encode(made[b"info"])
    assert manifest.info == info
    assert manifest.content_id == hashlib.sha256(info).hexdigest()
    assert bencode.decode(manifest.piece_layers) == made.get(b"piece layers", {})
    # libtorrent reads swarmshare's .torrent as the same torrent.
    assert lt is not None
    ours = lt.torrent_info(torrent_file(manifest, ["http://127.0.0.2:1/x/"]))
    assert str(ours.info_hashes().v2) == manifest.content_id
    assert not ours.info_hashes().has_v1()
    # The hybrid export is libtorrent's hybrid torrent, byte for byte in its info dict.
    hybrid = _libtorrent(top, manifest.piece_length, hybrid=True)
    exported = torrent_file(manifest, (), v1_piece_hashes(manifest, paths))
    assert bencode.decode(exported)[b"info"] == hybrid[b"info"]
    back = read_torrent(exported)
    assert back.manifest == manifest
    assert back.infohash_v2 == hashlib.sha256(bencode.encode(hybrid[b"info"])).hexdigest()
    assert back.infohash_v1 == hashlib.sha1(bencode.encode(hybrid[b"info"])).hexdigest()
    assert sum(s.length for s in v1_layout(manifest)) >= manifest.total_size


@needs_libtorrent
def test_a_torrent_libtorrent_made_becomes_the_same_content(tmp_path: Path) -> None:
    """Any power-of-two piece length is read (libtorrent's choice here: 16 KiB)."""
    _write(tmp_path, {"lt/a.bin": 100_000, "lt/sub/b.bin": 20_000, "lt/e": 0})
    made = _libtorrent(tmp_path / "lt", 16 * KIB)
    got = read_torrent(bencode.encode(made))
    assert got.manifest.content_id == got.infohash_v2
    assert got.infohash_v2 == hashlib.sha256(bencode.encode(made[b"info"])).hexdigest()
    assert got.manifest.piece_length == 16 * KIB
    assert got.manifest.chunk_total == 7 + 2
    assert decode_manifest(got.manifest.encoded) == got.manifest


def test_a_lying_piece_layer_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"big.bin": 300_000})
    manifest, _ = _share(tmp_path / "big.bin")
    top = bencode.decode(torrent_file(manifest))
    (root,) = top[b"piece layers"]
    layer = bytearray(top[b"piece layers"][root])
    layer[0] ^= 1
    with pytest.raises(ManifestError):
        manifest_from_torrent(top[b"info"], {root: bytes(layer)})
    with pytest.raises(ManifestError):
        manifest_from_torrent({**top[b"info"], b"meta version": 1}, top[b"piece layers"])
    # A name holding a slash would be read as a folder: another content than the torrent's.
    node = top[b"info"][b"file tree"][b"big.bin"]
    tree = {b"a/b": node, b"c": node}
    with pytest.raises(ManifestError):
        manifest_from_torrent({**top[b"info"], b"file tree": tree}, top[b"piece layers"])


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_any_bytes_read_as_a_torrent_or_raise_manifest_error(data: bytes) -> None:
    try:
        read_torrent(data)
    except ManifestError:
        pass


@given(st.data())
@settings(max_examples=200)
def test_a_mutated_torrent_reads_or_raises_manifest_error(data: st.DataObject) -> None:
    raw = bytearray(_SMALL_TORRENT)
    raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        read_torrent(bytes(raw))
    except ManifestError:
        pass


_SMALL_TORRENT = torrent_file(
    Manifest.build(
        "d",
        "dir",
        [
            file_entry("a", 100_000, ["11" * 32, "22" * 32], 64 * KIB),
            file_entry("b/c", 5, ["33" * 32], 64 * KIB),
            file_entry("e", 0, [], 64 * KIB),
        ],
    ),
    ["http://127.0.0.2:1/v1/content/x/bt/"],
)


def test_magnet_link_names_the_v2_infohash() -> None:
    cid = "ab" * 32
    assert magnet(cid, "a b&c.txt") == f"magnet:?xt=urn:btmh:1220{cid}&dn=a%20b%26c.txt"


def test_magnet_links_read_back() -> None:
    cid = "ab" * 32
    got = parse_magnet(magnet(cid, "a b&c.txt") + "&x.pe=127.0.0.2:6881&ws=http%3A%2F%2Fh%2Fx")
    assert (got.content_id, got.name, got.peers, got.web_seeds) == (
        cid,
        "a b&c.txt",
        ("127.0.0.2:6881",),
        ("http://h/x",),
    )
    v1 = "c" * 40
    hybrid = parse_magnet(f"magnet:?xt=urn:btih:{v1}&xt=urn:btmh:1220{cid}&tr=udp://t:1")
    assert (hybrid.content_id, hybrid.infohash_v1, hybrid.trackers) == (cid, v1, ("udp://t:1",))
    base32 = base64.b32encode(bytes.fromhex(v1)).decode()
    assert parse_magnet(f"magnet:?xt=urn:btih:{base32}").infohash_v1 == v1
    for bad in ("http://x", "magnet:?dn=x", "magnet:?xt=urn:btmh:1220abc", "magnet:?xt=urn:sha1:x"):
        with pytest.raises(UsageError):
            parse_magnet(bad)


def test_chunks_verify_by_subtree_root(tmp_path: Path) -> None:
    """A chunk of a big file checks against its piece layer entry, a small file's chunk
    against the pieces root; one flipped bit fails either."""
    _write(tmp_path, {"d/big": 3 * MIB + 5, "d/small": 20_000})
    manifest, paths = _share(tmp_path / "d")
    for ref in manifest.chunks():
        with open(paths[ref.file_index], "rb") as handle:
            data = bytearray(os.pread(handle.fileno(), ref.length, ref.offset))
        assert ref.matches(data)
        data[-1] ^= 1
        assert not ref.matches(data)
        assert not ref.matches(data[:-1])
