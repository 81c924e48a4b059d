"""Announcement and catalogue codecs, and the peer table, fed values and time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core.announce import Announcement, AnnouncementError, decode_announcement
from swarmshare.core.catalog import (
    CatalogError,
    CatalogItem,
    bitmap_count,
    bitmap_get,
    bitmap_new,
    bitmap_set,
    decode_catalog,
    make_catalog,
)
from swarmshare.core.peers import CatalogStale, PeerJoined, PeerLeft, PeerTable
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import MAX_DATAGRAM_BYTES

ids = st.text("0123456789abcdef", min_size=16, max_size=16)
announcements = st.builds(
    Announcement,
    peer_id=ids,
    port=st.integers(0, 65535),
    name=st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=64),
    catalog_version=st.text("0123456789abcdef", min_size=1, max_size=64),
    interval=st.floats(0.05, 3600),
    solicit=st.booleans(),
    bye=st.booleans(),
)


@given(announcements)
def test_announcement_round_trip_and_size(ann: Announcement) -> None:
    data = ann.encode()
    assert len(data) <= MAX_DATAGRAM_BYTES
    decoded = decode_announcement(data)
    assert decoded.peer_id == ann.peer_id and decoded.port == ann.port
    assert decoded.catalog_version == ann.catalog_version and decoded.solicit == ann.solicit


@given(st.binary(max_size=1500))
@settings(max_examples=1000)
def test_any_datagram_decodes_or_raises_the_remote_error(data: bytes) -> None:
    try:
        decode_announcement(data)
    except AnnouncementError:
        pass


@given(announcements, st.data())
@settings(max_examples=500)
def test_mutated_announcement_decodes_or_raises(ann: Announcement, data: st.DataObject) -> None:
    raw = bytearray(ann.encode())
    raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode_announcement(bytes(raw))
    except RemoteProtocolError as exc:
        assert isinstance(exc, AnnouncementError)


def test_announcement_rejects_lies() -> None:
    good = b'{"swarmshare":1,"id":"0123456789abcdef","port":5,"name":"a","cv":"ff","iv":30}'
    assert decode_announcement(good).port == 5
    for bad in [
        good.replace(b'"port":5', b'"port":70000'),
        good.replace(b'"port":5', b'"port":true'),
        good.replace(b'"iv":30', b'"iv":0'),
        good.replace(b'"iv":30', b'"iv":1e999'),
        good.replace(b"0123456789abcdef", b"../../etc/passwd"),
        good.replace(b'"swarmshare":1', b'"swarmshare":2'),
        good + b" " * MAX_DATAGRAM_BYTES,
        b'{"chunks":["cat_1"]}',
    ]:
        with pytest.raises(AnnouncementError):
            decode_announcement(bad)


items = st.builds(
    CatalogItem,
    id=st.text("0123456789abcdef", min_size=64, max_size=64),
    name=st.sampled_from(["a.txt", "photos", "ünï code.png"]),
    kind=st.sampled_from(["file", "dir"]),
    size=st.integers(0, 1 << 40),
    chunks=st.just(10),
    have=st.one_of(st.none(), st.binary(min_size=2, max_size=2)),
)


@given(st.lists(items, max_size=20, unique_by=lambda i: i.id))
def test_catalog_round_trip(entries: list[CatalogItem]) -> None:
    catalog = make_catalog("0123456789abcdef", entries)
    decoded = decode_catalog(catalog.encode())
    assert decoded == catalog and decoded.version == catalog.version


@given(st.binary(max_size=3000))
@settings(max_examples=500)
def test_any_bytes_catalog_decodes_or_raises(data: bytes) -> None:
    try:
        decode_catalog(data)
    except CatalogError:
        pass


def test_catalog_version_follows_content() -> None:
    item = CatalogItem("a" * 64, "x", "file", 5, 1)
    one = make_catalog("0123456789abcdef", [item])
    two = make_catalog("0123456789abcdef", [item, CatalogItem("b" * 64, "y", "file", 5, 1)])
    assert one.version != two.version
    assert one.version == make_catalog("0123456789abcdef", [item]).version


def test_bitmap() -> None:
    bitmap = bitmap_new(10)
    for i in (0, 7, 9):
        bitmap_set(bitmap, i)
    assert [bitmap_get(bitmap, i) for i in range(10)].count(True) == 3 == bitmap_count(bitmap)
    part = CatalogItem("c" * 64, "x", "file", 5, 10, bytes(bitmap))
    assert part.holds(9) and not part.holds(8) and part.held_count() == 3


def _ann(pid: str, version: str = "1", interval: float = 1.0, bye: bool = False) -> Announcement:
    return Announcement(pid, 5001, "n", version, interval, False, bye)


def test_peer_table_lifecycle_in_simulated_time() -> None:
    table = PeerTable(own_id="0" * 16)
    assert table.heard(_ann("0" * 16), "127.0.0.2", 0.0) == []  # our own echo
    events = table.heard(_ann("a" * 16), "127.0.0.2", 0.0)
    assert [type(e) for e in events] == [PeerJoined, CatalogStale]
    peer = table.peers["a" * 16]
    assert table.heard(_ann("a" * 16), "127.0.0.2", 1.0) == []  # its fetch is under way
    catalog = make_catalog("a" * 16, [])
    table.fetched(peer, catalog, 1.0)
    assert peer.catalog_stale and peer.fetch_wanted  # it announced "1", served another version
    assert table.tick(1.5) == []
    assert table.tick(3.0) == [CatalogStale(peer)]  # at most every CATALOG_REFETCH_MIN_SECONDS
    table.fetched(peer, catalog, 3.0)
    assert table.heard(_ann("a" * 16, catalog.version), "127.0.0.2", 3.5) == []
    assert table.heard(_ann("a" * 16, "99"), "127.0.0.2", 9.0) == [CatalogStale(peer)]
    table.fetched(peer, None, 9.0)  # failed: backed off (4 s), the peer expires first (3 s)
    assert peer.fetch_not_before == 13.0
    assert table.tick(11.99) == [] and table.next_deadline() == 12.0
    gone = table.tick(12.0)
    assert [type(e) for e in gone] == [PeerLeft] and table.peers == {}
    table.heard(_ann("b" * 16), "127.0.0.3", 13.0)
    assert [type(e) for e in table.heard(_ann("b" * 16, bye=True), "127.0.0.3", 13.1)] == [PeerLeft]


def test_peer_address_is_the_packet_source() -> None:
    table = PeerTable(own_id="0" * 16)
    table.heard(_ann("a" * 16), "127.0.0.7", 0.0)
    assert table.peers["a" * 16].address == "127.0.0.7"
    table.tick(3.0)  # expired: the same ID may now be claimed from another address
    table.heard(_ann("a" * 16), "127.0.0.8", 3.5)
    assert table.peers["a" * 16].address == "127.0.0.8"
    assert table.peers["a" * 16].catalog is None
