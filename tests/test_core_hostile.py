"""What a hostile peer can send to the pure core, fed as values: catalogues with absurd numbers,
announcement floods, spoofed claims. Each test counts work or outcomes, never time."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core import catalog as catalog_module
from swarmshare.core.announce import Announcement
from swarmshare.core.catalog import CatalogError, CatalogItem, decode_catalog, make_catalog
from swarmshare.core.peers import CatalogStale, PeerJoined, PeerLeft, PeerTable
from swarmshare.limits import (
    EXPIRY_INTERVALS,
    MAX_CHUNKS_PER_CONTENT,
    MAX_CONTENT_BYTES,
    MAX_PEER_INTERVAL_SECONDS,
    MAX_PEERS,
    MAX_PEERS_PER_ADDRESS,
)

PEER = "0123456789abcdef"


def _catalog_bytes(**item: object) -> bytes:
    raw = {"id": "a" * 64, "name": "x.bin", "kind": "file", "size": 5, "chunks": 1, "have": None}
    raw.update(item)
    return json.dumps({"peer": PEER, "items": [raw]}).encode()


def test_catalog_numbers_are_bounded() -> None:
    assert decode_catalog(_catalog_bytes(size=MAX_CONTENT_BYTES)).items[0].size == MAX_CONTENT_BYTES
    for bad in [
        _catalog_bytes(size=10**400),
        _catalog_bytes(size=MAX_CONTENT_BYTES + 1),
        _catalog_bytes(size=-1),
        _catalog_bytes(size=1e300),
        _catalog_bytes(chunks=MAX_CHUNKS_PER_CONTENT + 1),
        _catalog_bytes(chunks=-1),
        _catalog_bytes(chunks=10**400),
        _catalog_bytes(size=True),
    ]:
        with pytest.raises(CatalogError):
            decode_catalog(bad)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**500)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from(["a" * 64, "b" * 63]) | json_values,
            "name": st.sampled_from(["ok.txt", "../x", ""]) | json_values,
            "kind": st.sampled_from(["file", "dir"]) | json_values,
            "size": json_values,
            "chunks": json_values,
            "have": st.sampled_from([None, "gA==", "!!"]) | json_values,
        },
    )
)
@settings(max_examples=300)
def test_any_catalogue_item_decodes_or_raises_the_remote_error(item: dict[str, object]) -> None:
    data = json.dumps({"peer": PEER, "items": [item]}).encode()
    try:
        catalog = decode_catalog(data)
    except CatalogError:
        return
    for entry in catalog.items:  # whatever decodes is within the limits `ls` can show
        assert 0 <= entry.size <= MAX_CONTENT_BYTES
        assert 0 <= entry.chunks <= MAX_CHUNKS_PER_CONTENT
        f"{entry.size / 1e9:.1f} GB"


def test_catalogue_version_and_index_are_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    encodes = 0
    real = catalog_module._encode_items

    def counting(items: object) -> bytes:
        nonlocal encodes
        encodes += 1
        return real(items)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_module, "_encode_items", counting)
    items = [CatalogItem(f"{i:064x}", f"f{i}", "file", i, 1) for i in range(1000)]
    catalog = make_catalog(PEER, items)
    for _ in range(200):  # 200 announcements heard, 200 `holders()` calls
        assert catalog.version
        assert catalog.by_id()[f"{7:064x}"].size == 7
    catalog.encode()
    assert encodes == 1
    assert catalog.by_id() is catalog.by_id()


def _ann(peer_id: str, *, interval: float = 10.0, bye: bool = False) -> Announcement:
    return Announcement(peer_id, 5001, "n", "1", interval, False, bye)


def test_full_table_makes_room_by_evidence_and_per_address() -> None:
    table = PeerTable(own_id="0" * 16)
    for i in range(MAX_PEERS):  # spoofed sources: one peer each
        table.heard(_ann(f"{i + 1:016x}"), f"10.0.{i // 256}.{i % 256}", float(i))
    proven = table.peers[f"{1:016x}"]  # the oldest, but its server answered
    table.fetched(proven, make_catalog(proven.peer_id, []), 2000.0)
    events = table.heard(_ann("f" * 16), "192.168.1.5", 2000.0)
    assert [type(e) for e in events] == [PeerLeft, PeerJoined, CatalogStale]
    assert events[0].peer.peer_id == f"{2:016x}"  # the unproven one heard least recently
    assert proven.peer_id in table.peers and len(table.peers) == MAX_PEERS
    for peer in list(table.peers.values()):
        table.fetched(peer, make_catalog(peer.peer_id, []), 2001.0)
    assert table.heard(_ann("e" * 16), "192.168.1.6", 2002.0) == []  # all proven: refused
    assert table.dropped_full == 1


def test_one_address_holds_a_few_entries_with_capped_intervals() -> None:
    table = PeerTable(own_id="0" * 16)
    for i in range(1030):
        table.heard(_ann(f"{i + 1:016x}", interval=3600.0), "10.0.0.9", 0.0)
    assert len(table.peers) == MAX_PEERS_PER_ADDRESS and table.refused_address == 1030 - 8
    assert table.next_deadline() == EXPIRY_INTERVALS * MAX_PEER_INTERVAL_SECONDS
    events = table.heard(_ann("f" * 16), "10.0.0.10", 1.0)
    assert [type(e) for e in events] == [PeerJoined, CatalogStale]


def test_a_second_address_is_another_claim_and_its_bye_does_not_count() -> None:
    table = PeerTable(own_id="0" * 16)
    table.heard(_ann("b" * 16), "10.0.0.3", 0.0)
    assert table.heard(_ann("b" * 16), "10.0.0.9", 1.0) == []
    assert table.heard(_ann("b" * 16, bye=True), "10.0.0.9", 1.0) == []
    assert table.peers["b" * 16].address == "10.0.0.3" and table.conflicts == 2
    assert [type(e) for e in table.heard(_ann("b" * 16, bye=True), "10.0.0.3", 2.0)] == [PeerLeft]


def test_heard_and_tick_stay_cheap_under_a_flood() -> None:
    table = PeerTable(own_id="0" * 16)
    for i in range(MAX_PEERS):
        table.heard(_ann(f"{i + 1:016x}"), f"10.0.{i // 256}.{i % 256}", 0.0)
    for step in range(20_000):  # refreshes of one peer: the wake-up heap does not grow
        table.heard(_ann(f"{1:016x}"), "10.0.0.0", step / 1000)
    assert len(table._heap) <= 2 * MAX_PEERS + 64
