"""Manifests (BEP 52 info dict and piece layers): canonical encoding, content IDs (v2
infohashes), and strict validation of untrusted bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opcount import python_steps
from swarmshare.core import bencode, merkle
from swarmshare.core.chunking import chunk_count
from swarmshare.core.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    decode_manifest,
    file_entry,
    manifest_id,
    name_collision,
)
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import KIB

HEX = "0123456789abcdef"
digests = st.text(HEX, min_size=64, max_size=64)
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in (".", "..") and not (len(n) >= 2 and n[1] == ":"))
PIECE = 64 * KIB


@st.composite
def entries(draw: st.DrawFn, path: str) -> FileEntry:
    size = draw(st.integers(min_value=0, max_value=300_000))
    count = chunk_count(size, PIECE)
    return file_entry(path, size, [draw(digests) for _ in range(count)], PIECE)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    name = draw(names)
    if draw(st.booleans()):
        return Manifest.build(name, "file", [draw(entries(name))])
    paths = draw(st.lists(st.lists(names, min_size=1, max_size=3), min_size=1, max_size=5))
    joined: list[str] = []
    for parts in paths:
        path = "/".join(parts)
        clash = any(
            p == path or p.startswith(path + "/") or path.startswith(p + "/") for p in joined
        )
        if not clash and name_collision([*joined, path]) is None:
            joined.append(path)
    if joined == [name]:
        return Manifest.build(name, "file", [draw(entries(name))])
    return Manifest.build(name, "dir", [draw(entries(p)) for p in joined])


@given(manifests())
@settings(max_examples=200)
def test_round_trip(manifest: Manifest) -> None:
    decoded = decode_manifest(manifest.encoded)
    assert decoded == manifest
    assert decoded.content_id == hashlib.sha256(manifest.info).hexdigest()
    assert manifest_id(manifest.encoded) == manifest.content_id
    assert bencode.decode(manifest.encoded)[b"info"][b"meta version"] == 2
    assert sum(manifest.chunk_lengths()) == manifest.total_size
    assert [r.index for r in manifest.chunks()] == list(range(manifest.chunk_total))
    assert list(decoded.files) == list(manifest.files)
    for index in range(manifest.file_count):
        assert manifest.find(manifest.path_of(index)) == index
    assert list(decoded.paths()) == [manifest.path_of(i) for i in range(manifest.file_count)]
    assert list(decoded.chunk_roots()) == [r.root for r in manifest.chunks()]


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_any_bytes_decode_or_raise_manifest_error(data: bytes) -> None:
    try:
        decode_manifest(data)
    except ManifestError:
        pass


@given(manifests(), st.data())
@settings(max_examples=300)
def test_mutated_manifest_decodes_or_raises(manifest: Manifest, data: st.DataObject) -> None:
    raw = bytearray(manifest.encoded)
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_manifest(bytes(raw))
    except RemoteProtocolError as exc:
        assert isinstance(exc, ManifestError)
    else:
        assert decoded.encoded == bytes(raw)


ROOT = bytes(range(32))


def _node(size: int = 3, root: bytes | None = ROOT) -> dict[bytes, object]:
    props: dict[bytes, object] = {b"length": size}
    if root is not None:
        props[b"pieces root"] = root
    return {b"": props}


def _tree(paths: list[str]) -> dict[bytes, object]:
    tree: dict[bytes, object] = {}
    for path in paths:
        *folders, leaf = path.split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder.encode(), {})  # type: ignore[assignment]
        node[leaf.encode()] = _node()
    return tree


def _raw(
    name: str | bytes,
    tree: dict[bytes, object],
    piece: int = PIECE,
    layers: dict[bytes, bytes] | None = None,
    **extra: object,
) -> bytes:
    info: dict[bytes, object] = {
        b"name": name,
        b"meta version": 2,
        b"piece length": piece,
        b"file tree": tree,
    }
    info.update({k.replace("_", " ").encode(): v for k, v in extra.items()})
    return bencode.encode({b"info": info, b"piece layers": layers or {}})


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "a/../../b",
        "C:/x",
        "c:x",
        "a\\b",
        "a/./b",
        "x\x00y",
        "x\ny",
        "a/" * 70 + "z",
        "a/" + "b" * 250 + "/" + "c" * 250 + "/" + ("d" * 250 + "/") * 20 + "e",
    ],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(ManifestError):
        decode_manifest(_raw("top", _tree([path, "zz"])))


def test_structural_lies_are_refused() -> None:
    ok = _raw("a.txt", _tree(["a.txt"]))
    assert decode_manifest(ok).name == "a.txt"
    assert decode_manifest(ok).kind == "file"
    big_root = merkle.pieces_root(bytes(64), PIECE)
    bad = [
        _raw("d", {}),  # empty
        _raw("d", {b"a": {}}),  # empty folder
        _raw("d", {b"a": _node(), b"b": {b"": {b"length": 3}}}),  # no pieces root
        _raw("d", {b"a": {b"": {b"length": 0, b"pieces root": ROOT}}}),  # empty with a root
        _raw("d", {b"a": {b"": {b"length": 3, b"pieces root": ROOT, b"x": 1}}}),
        _raw("d", {b"a": {b"": {b"length": 3, b"pieces root": ROOT[:31]}}}),
        _raw("d", {b"a": {**_node(), b"b": _node()}}),  # a file and a folder at once
        _raw("d", {b"A": _node(), b"a": _node()}),  # one file on macOS or Windows
        _raw("d", {b"F": {b"x": _node()}, b"f": _node()}),
        _raw("d", {b"a": _node(-1)}),
        _raw("d", {b"a": _node(1 << 50)}),
        _raw("d", _tree(["a"]), piece=1024),  # piece length under 16 KiB
        _raw("d", _tree(["a"]), piece=3 * 16384),  # not a power of two
        _raw("d", {b"a": _node(100_000, big_root)}),  # no piece layer
        _raw("d", {b"a": _node(100_000, big_root)}, layers={big_root: bytes(32)}),  # short
        _raw("d", {b"a": _node(100_000, ROOT)}, layers={ROOT: bytes(64)}),  # wrong layer
        _raw("d", _tree(["a"]), layers={ROOT: bytes(64)}),  # a layer of no file
        _raw("d", _tree(["a"]), private=1),  # unknown info key
        _raw("..", _tree(["a"])),
        _raw(b"\xff", _tree(["a"])),
        _raw("d", {b"\xff": _node()}),
        ok.replace(b"i65536e", b"i065536e"),
        ok + b" ",  # not canonical
        b"d4:info" + b"d" * 100_000,
    ]
    for raw in bad:
        with pytest.raises(ManifestError):
            decode_manifest(raw)
    good = _raw("d", {b"a": _node(100_000, big_root)}, layers={big_root: bytes(64)})
    assert decode_manifest(good).chunk(1).root == bytes(32)


def test_chunk_lookup_skips_empty_files() -> None:
    m = Manifest.build(
        "d", "dir", [file_entry("a", 0, []), file_entry("b", 5, ["1" * 64]), file_entry("c", 0, [])]
    )
    ref = m.chunk(0)
    assert (ref.file_index, ref.offset, ref.length, ref.sha256) == (1, 0, 5, "1" * 64)
    with pytest.raises(IndexError):
        m.chunk(1)


def _folder(files: int) -> Manifest:
    digest = "a" * 64
    return Manifest.build("d", "dir", [file_entry(f"f{i:07d}", 10, [digest]) for i in range(files)])


def test_chunk_lookups_cost_the_same_whatever_the_number_of_files() -> None:
    """Looking up a chunk, the totals and every length must not sum over the files each time
    (that made a folder's download quadratic in its number of files)."""
    small, big = _folder(100), _folder(20_000)

    def lookups(m: Manifest) -> Callable[[], None]:
        def run() -> None:
            for index in range(0, 100):
                m.chunk(index)
                _ = m.chunk_total, m.total_size

        return run

    assert python_steps(lookups(big)) <= python_steps(lookups(small)) + 10
    # A whole pass is linear: the same steps per chunk for 200 times the files.
    per_chunk_small = python_steps(lambda: list(small.chunks())) / 100
    per_chunk_big = python_steps(lambda: list(big.chunks())) / 20_000
    assert per_chunk_big <= per_chunk_small * 1.1
    assert python_steps(big.chunk_lengths) <= python_steps(small.chunk_lengths) + 10


def test_chunk_walk_matches_lookups() -> None:
    m = Manifest.build(
        "d",
        "dir",
        [
            file_entry("a", 0, []),
            file_entry("b", 200_000, ["1" * 64, "2" * 64, "3" * 64, "4" * 64]),
            file_entry("c", 0, []),
            file_entry("d", 7, ["5" * 64]),
        ],
    )
    walked = list(m.chunks())
    assert walked == [m.chunk(i) for i in range(m.chunk_total)]
    assert m.chunk_lengths() == [r.length for r in walked] == [65536, 65536, 65536, 3392, 7]
    assert [m.file_of(i) for i in range(m.chunk_total)] == [1, 1, 1, 1, 3]
    assert [m.first_chunk(i) for i in range(4)] == [0, 0, 4, 4]
    assert m.total_size == 200_007


@pytest.mark.parametrize(
    "tree",
    [
        {b"a" * 256: _node()},  # a name over 255 bytes
        {("\u00e9" * 128).encode(): _node()},  # 256 bytes of a non-ASCII name
        {b"d": {b"c:x": _node()}},
        {b"d": {b"..": _node()}},
        {b"d": {b"x\x7f": _node()}},
        {b"d": {b"x": {b"A": _node(), b"a": _node()}}},  # case, deeper down
        {"e\u0301".encode(): _node(), "\u00e9".encode(): _node()},  # NFD and NFC
        {b"a": {b"": {b"length": 3, b"pieces root": ROOT}, b"x": 1}},
        {b"a": {b"": {b"length": 3, b"pieces root": ROOT + b"x"}}},
        {b"a": _node(1 << 44 + 1)},
    ],
)
def test_every_name_and_node_is_checked_however_it_is_read(tree: dict[bytes, object]) -> None:
    """The parser reads plain names and file nodes in a few steps; what they do not cover is
    refused all the same."""
    with pytest.raises(ManifestError):
        decode_manifest(_raw("top", tree))


def test_plain_names_are_read_without_a_second_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding checks a plain ASCII name in one step, not with validate_name (which the scan
    of a shared folder has called on each name already)."""
    from swarmshare.core import manifest as manifest_module

    names = ["a" * 255, "B.txt", "x y", "\u00e9t\u00e9"]
    good = Manifest.build("d", "dir", [file_entry(f"f/{n}", 5, ["1" * 64]) for n in names])
    checked: list[str] = []
    real = manifest_module.validate_name

    def counted(name: str) -> str | None:
        checked.append(name)
        return real(name)

    monkeypatch.setattr(manifest_module, "validate_name", counted)
    decoded = decode_manifest(good.encoded)
    assert list(decoded.paths()) == sorted(f"f/{n}" for n in names)
    assert checked == ["\u00e9t\u00e9", "d"]  # the non-ASCII name, the content's name


@pytest.mark.parametrize("paths", [["/x"], ["/x", "y"], ["x/"], ["a//b"], ["a/b/"], ["/"]])
def test_empty_path_components_are_refused_when_building(paths: list[str]) -> None:
    """A path with an empty component is refused, not read as another path (the encoder
    skips walking the folders of a file in the same folder as the one before)."""
    with pytest.raises(ManifestError):
        Manifest.build("d", "dir", [file_entry(p, 1, ["1" * 64]) for p in paths])
