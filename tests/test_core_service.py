"""The DNS-SD record codec (core/service.py), fed values and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core.announce import Announcement, AnnouncementError
from swarmshare.core.service import (
    MAX_INSTANCE_LABEL_BYTES,
    SERVICE_TYPE,
    decode_service,
    decode_txt,
    encode_txt,
    instance_name,
)
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import MAX_SERVICE_TXT_BYTES

ids = st.text("0123456789abcdef", min_size=16, max_size=16)
printable = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp", "Co", "Cn"))
served = st.builds(
    Announcement,
    peer_id=ids,
    port=st.integers(1, 65535),
    name=st.text(printable, max_size=64).filter(lambda n: n.isprintable()),
    catalog_version=st.text("0123456789abcdef", min_size=1, max_size=64),
    interval=st.floats(0.05, 3600),
)


def _txt(*items: bytes) -> bytes:
    return b"".join(bytes([len(i)]) + i for i in items)


@given(served)
def test_record_round_trip_within_bounds(ann: Announcement) -> None:
    text = encode_txt(ann)
    assert len(text) <= MAX_SERVICE_TXT_BYTES
    assert decode_service(text, ann.port) == ann


@given(st.binary(max_size=700), st.integers(-5, 70000))
@settings(max_examples=1000)
def test_any_bytes_decode_or_raise_a_protocol_error(text: bytes, port: int) -> None:
    try:
        ann = decode_service(text, port)
    except RemoteProtocolError:
        return
    assert 0 < ann.port <= 65535 and len(ann.peer_id) == 16


@given(served, st.data())
@settings(max_examples=300)
def test_a_damaged_record_decodes_or_raises_a_protocol_error(
    ann: Announcement, data: st.DataObject
) -> None:
    text = bytearray(encode_txt(ann))
    index = data.draw(st.integers(0, len(text) - 1))
    text[index] = data.draw(st.integers(0, 255))
    try:
        decode_service(bytes(text), ann.port)
    except RemoteProtocolError:
        pass


def test_keys_are_case_insensitive_the_first_counts_and_unknown_are_ignored() -> None:
    text = _txt(
        b"SwarmShare=1",
        b"ID=0123456789abcdef",
        b"id=ffffffffffffffff",
        b"cv=ab",
        b"iv=30",
        b"future",
        b"",
        b"colour=blue",
    )
    ann = decode_service(text, 5001)
    assert (ann.peer_id, ann.catalog_version, ann.interval, ann.name) == (
        "0123456789abcdef",
        "ab",
        30.0,
        "",
    )


@pytest.mark.parametrize(
    ("text", "port", "why"),
    [
        (_txt(b"swarmshare=2", b"id=0123456789abcdef", b"cv=a", b"iv=1"), 5001, "version"),
        (_txt(b"swarmshare=1", b"id=xyz", b"cv=a", b"iv=1"), 5001, "peer id"),
        (_txt(b"swarmshare=1", b"id=0123456789abcdef", b"cv=a", b"iv=nan"), 5001, "interval"),
        (_txt(b"swarmshare=1", b"id=0123456789abcdef", b"cv=a", b"iv=inf"), 5001, "interval"),
        (_txt(b"swarmshare=1", b"id=0123456789abcdef", b"cv=a", b"iv=1"), 0, "port"),
        (_txt(b"swarmshare=1", b"id=0123456789abcdef", b"iv=1"), 5001, "catalogue"),
        (b"\x10swarmshare=1", 5001, "runs past"),
        (_txt(b"swarmshare=1", b"name=\xff\xfe"), 5001, "not text"),
        (_txt(b"x=" + b"a" * 250) * 3, 5001, "over the limit"),
    ],
)
def test_bad_records_are_refused_with_the_reason(text: bytes, port: int, why: str) -> None:
    with pytest.raises(AnnouncementError, match=why):
        decode_service(text, port)


def test_decode_txt_skips_boolean_attributes() -> None:
    assert decode_txt(_txt(b"flag", b"a=1", b"=x", b"b=")) == {"a": "1", "b": ""}


@given(st.text(max_size=100), ids)
def test_instance_names_fit_one_label_and_stay_unique(name: str, peer_id: str) -> None:
    full = instance_name(name, peer_id)
    assert full.endswith(f" ({peer_id}).{SERVICE_TYPE}")
    label = full[: -len(SERVICE_TYPE) - 1]
    assert len(label.encode()) <= MAX_INSTANCE_LABEL_BYTES and "." not in label
