"""Manifests: canonical encoding, content IDs, and strict validation of untrusted bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opcount import python_steps
from swarmshare.core.chunking import chunk_count, chunk_size_for
from swarmshare.core.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    decode_manifest,
    file_entry,
    name_collision,
)
from swarmshare.errors import RemoteProtocolError

HEX = "0123456789abcdef"
digests = st.text(HEX, min_size=64, max_size=64)
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in (".", "..") and not (len(n) >= 2 and n[1] == ":"))


@st.composite
def entries(draw: st.DrawFn, path: str) -> FileEntry:
    size = draw(st.integers(min_value=0, max_value=300_000))
    count = chunk_count(size, chunk_size_for(size))
    return file_entry(path, size, [draw(digests) for _ in range(count)])


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
    return Manifest.build(name, "dir", [draw(entries(p)) for p in joined])


@given(manifests())
@settings(max_examples=200)
def test_round_trip(manifest: Manifest) -> None:
    decoded = decode_manifest(manifest.encoded)
    assert decoded == manifest
    assert decoded.content_id == hashlib.sha256(manifest.encoded).hexdigest()
    assert sum(manifest.chunk_lengths()) == manifest.total_size
    assert [r.index for r in manifest.chunks()] == list(range(manifest.chunk_total))


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


def _raw(name: str, kind: str, files: list[dict[str, object]]) -> bytes:
    obj = {"swarmshare_manifest": 1, "name": name, "kind": kind, "files": files}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _file(path: str, size: int = 3) -> dict[str, object]:
    return {"path": path, "size": size, "chunk_size": chunk_size_for(size), "chunks": ["0" * 64]}


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "a/../../b",
        "/etc/passwd",
        "C:/x",
        "c:x",
        "a\\b",
        "a//b",
        "a/./b",
        "",
        "a/",
        "x\x00y",
        "x\ny",
        "a/" * 70 + "z",
    ],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(ManifestError):
        decode_manifest(_raw("top", "dir", [_file(path)]))


def test_structural_lies_are_refused() -> None:
    ok = _raw("a.txt", "file", [_file("a.txt")])
    assert decode_manifest(ok).name == "a.txt"
    bad = [
        _raw("a.txt", "file", [_file("b.txt")]),  # file content named differently
        _raw("d", "dir", []),  # empty
        _raw("d", "dir", [_file("x"), _file("x")]),  # duplicate
        _raw("d", "dir", [_file("b"), _file("a")]),  # unsorted
        _raw("d", "dir", [_file("a"), _file("a/b")]),  # file and folder at once
        _raw("d", "dir", [{**_file("a"), "size": -1}]),
        _raw("d", "dir", [{**_file("a"), "chunk_size": 1024}]),  # breaks the rule
        _raw("d", "dir", [{**_file("a"), "chunks": []}]),  # count mismatch
        _raw("d", "dir", [{**_file("a"), "chunks": ["A" * 64]}]),  # not lowercase hex
        _raw("d", "dir", [{**_file("a"), "extra": 1}]),
        _raw("..", "dir", [_file("a")]),
        ok.replace(b'"kind"', b'"kind":"file","kind"', 1),  # duplicate key
        ok + b" ",  # not canonical
        json.dumps(json.loads(ok), indent=1).encode(),  # valid JSON, other layout
        b'{"swarmshare_manifest":NaN}',
        b"[" * 100_000,
    ]
    for raw in bad:
        with pytest.raises(ManifestError):
            decode_manifest(raw)


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
