"""The part file with real files: received chunks (page-aligned pooled buffers, written by
direct I/O where the file system allows) and ordinary bytes land at their offsets, in any order,
whatever the sizes; a chunk that does not hash right is never written."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from swarmshare.net.chunkconn import BufferPool
from swarmshare.store import partfile
from swarmshare.store.hashing import hash_content, scan_path
from swarmshare.store.partfile import PartFile

from helpers import same_file, write_test_file

MIB = 1 << 20


@pytest.mark.parametrize("direct_min", [0, partfile.DIRECT_IO_MIN_BYTES])
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_chunks_in_any_order_from_pooled_buffers_make_the_exact_content(
    tmp_path: Path, kind: str, direct_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Direct I/O takes chunks of 1 MiB and more; these small ones take it too with the bound at 0.
    monkeypatch.setattr(partfile, "DIRECT_IO_MIN_BYTES", direct_min)
    src = tmp_path / "src"
    if kind == "file":
        write_test_file(src, 3 * MIB + 12_345, seed=31)  # a short last chunk, not block-sized
    else:
        (src / "sub").mkdir(parents=True)
        write_test_file(src / "a.bin", 2 * MIB, seed=32)
        write_test_file(src / "sub" / "b.bin", 700_001, seed=33)
        write_test_file(src / "sub" / "c.bin", 4096, seed=34)
        (src / "empty.txt").write_bytes(b"")
    name, content_kind, files, _ = scan_path(str(src))
    manifest = hash_content(name, content_kind, files)
    sources = {f.rel_path: f.abs_path for f in files}
    pool = BufferPool(8 * MIB)
    dest = tmp_path / "out" / name
    dest.parent.mkdir()
    part = PartFile(dest, manifest)
    assert part.open() == set()
    refs = list(manifest.chunks())
    random.Random(5).shuffle(refs)
    for number, ref in enumerate(refs):
        entry = manifest.files[ref.file_index]
        with open(sources[entry.path], "rb") as handle:
            data = os.pread(handle.fileno(), ref.length, ref.offset)
        if number % 3 == 2:
            assert part.write_if_valid(ref, data)  # bytes: the buffered path
            continue
        buffer = pool.get(ref.length)
        buffer[:] = bytes(len(data)) if number == 0 else data
        if number == 0:  # wrong bytes first: refused, nothing written; then the right ones
            assert not part.write_if_valid(ref, buffer)
            assert part.read(ref) == bytes(ref.length)
            buffer[:] = data
        assert part.write_if_valid(ref, buffer)
        pool.put(buffer)
    part.finish(force=False)
    if kind == "file":
        assert same_file(dest, src)
    else:
        for entry in manifest.files:
            assert same_file(dest / entry.path, Path(sources[entry.path])), entry.path
    assert not part.part.exists() and not part.record.exists()


@pytest.mark.skipif(not partfile.DIRECT_IO_FLAG, reason="no direct I/O on this system")
def test_chunks_under_a_mib_are_written_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct write waits for the disk: for chunks of a few hundred KiB that wait sets the
    pace, so only chunks of DIRECT_IO_MIN_BYTES and more bypass the page cache."""
    src = tmp_path / "mid.bin"
    write_test_file(src, 3 * MIB, seed=41)
    name, kind, files, _ = scan_path(str(src))
    manifest = hash_content(name, kind, files)
    part = PartFile(tmp_path / "out.bin", manifest)
    part.open()
    flags: list[int] = []
    real_open = os.open

    def recording_open(path: str, flag: int, *args: int) -> int:
        flags.append(flag)
        return real_open(path, flag, *args)

    monkeypatch.setattr(os, "open", recording_open)
    pool = BufferPool(8 * MIB)
    data = src.read_bytes()
    for ref in manifest.chunks():
        buffer = pool.get(ref.length)
        buffer[:] = data[ref.offset : ref.offset + ref.length]
        assert part.write_if_valid(ref, buffer)
        pool.put(buffer)
    assert flags and not any(flag & partfile.DIRECT_IO_FLAG for flag in flags)
    part.finish(force=False)
    assert same_file(tmp_path / "out.bin", src)


def test_a_descriptor_in_use_is_not_closed_under_its_user(tmp_path: Path) -> None:
    """close() while a write holds a descriptor (an endgame duplicate still being written as
    the part is finished): the descriptor stays that file's until its user is done, so no
    other file opened meanwhile can be given its number and take the write."""
    files = partfile._OpenFiles([str(tmp_path / "a"), str(tmp_path / "b")], limit=4)
    idle_fd = -1
    with files.use(1) as fd:
        idle_fd = fd
    with files.use(0) as fd:
        files.close()
        assert files.closed
        with pytest.raises(OSError):
            os.fstat(idle_fd)  # the idle one is closed at once
        with open(tmp_path / "other", "wb") as other:  # would take a freed number
            assert other.fileno() != fd
            os.pwrite(fd, b"late write", 0)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by its last user
    assert (tmp_path / "a").read_bytes() == b"late write"
    assert (tmp_path / "other").read_bytes() == b""
    with pytest.raises(OSError), files.use(0):
        pass
