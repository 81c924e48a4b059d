"""Bencode, strict: one encoding per value, and nothing else read."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core.bencode import BencodeError, decode, encode, skip
from swarmshare.errors import RemoteProtocolError

values: st.SearchStrategy[Any] = st.recursive(
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner),
    max_leaves=20,
)


@given(values)
@settings(max_examples=300)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    assert decode(data) == value
    assert skip(data, 0) == len(data)


def test_examples() -> None:
    assert encode({"b": 1, b"a": [b"x", -3, "é"]}) == b"d1:al1:xi-3e2:\xc3\xa9e1:bi1ee"
    assert decode(b"d1:ai0e1:b0:e") == {b"a": 0, b"b": b""}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i01e",  # leading zero
        b"i-0e",
        b"ie",
        b"i1",
        b"i-e",
        b"i 1e",
        b"i1_0e",
        b"i" + b"9" * 30 + b"e",  # longer than any client sends
        b"01:a",  # length with a leading zero
        b"2:a",  # runs past the end
        b"1:ab",  # bytes after the value
        b"d1:b0:1:a0:e",  # keys not sorted
        b"d1:a0:1:a0:e",  # a key twice
        b"di1e0:e",  # a key that is not a string
        b"l" * 100 + b"e" * 100,  # nested too deep
        b"d1:a",
        b"l",
        b"x",
        b"-1:a",
    ],
)
def test_non_canonical_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_any_bytes_decode_or_raise(data: bytes) -> None:
    try:
        value = decode(data)
    except RemoteProtocolError as exc:
        assert isinstance(exc, BencodeError)
    else:
        assert encode(value) == data


@given(values, st.data())
@settings(max_examples=300)
def test_a_mutated_encoding_decodes_to_itself_or_raises(value: Any, data: st.DataObject) -> None:
    raw = bytearray(encode(value))
    raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(raw))
    except BencodeError:
        return
    assert encode(decoded) == bytes(raw)
