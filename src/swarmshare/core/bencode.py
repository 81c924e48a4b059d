"""Bencode (BEP 3), strict: one value has one encoding, and only that encoding is read.

`decode` refuses anything but the canonical form -- dictionary keys unsorted or repeated, integers
with a leading zero, `-0`, a string length with a leading zero, bytes after the value, nesting
deeper than `max_depth` -- with `BencodeError`. The low-level readers (`read_int`,
`read_string`, `skip`) let a caller walk a big value in place, without building it.

Values: `int`, `bytes`, `list`, and `dict` with `bytes` keys. `encode` also takes `str` (as
UTF-8) for strings and keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from swarmshare.errors import RemoteProtocolError

MAX_DEPTH = 64
_MAX_INT_DIGITS = 20  # past a signed 64-bit integer; no client sends more
_MAX_LENGTH_DIGITS = 12


class BencodeError(RemoteProtocolError):
    """Bytes that are not one canonical bencoded value."""


def encode(value: Any) -> bytes:
    """The canonical bencoding of `value` (int, bytes, str, list, dict); TypeError otherwise."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def decode(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The one value `data` is the canonical encoding of; BencodeError on anything else."""
    value, end = _decode(data, 0, max_depth)
    if end != len(data):
        raise BencodeError(f"bytes after the value (at byte {end})")
    return value


def read_int(data: bytes, pos: int) -> tuple[int, int]:
    """The integer at `pos` and where it ends."""
    if data[pos : pos + 1] != b"i":
        raise BencodeError(f"an integer was expected at byte {pos}")
    end = data.find(b"e", pos + 1, pos + 2 + _MAX_INT_DIGITS)
    if end < 0:
        raise BencodeError(f"integer at byte {pos} is not closed or too long")
    digits = data[pos + 1 : end]
    negative = digits.startswith(b"-")
    body = digits[1:] if negative else digits
    if not body.isdigit() or not body.isascii():
        raise BencodeError(f"integer at byte {pos} has no digits")
    if (body.startswith(b"0") and len(body) > 1) or (negative and body == b"0"):
        raise BencodeError(f"integer at byte {pos} is not canonical")
    return int(digits), end + 1


def read_string(data: bytes, pos: int) -> tuple[int, int]:
    """Where the bytes of the string at `pos` start and end (the end is also the next value's
    start)."""
    colon = data.find(b":", pos, pos + _MAX_LENGTH_DIGITS + 1)
    if colon <= pos:
        raise BencodeError(f"a string was expected at byte {pos}")
    digits = data[pos:colon]
    if not digits.isdigit() or not digits.isascii():
        raise BencodeError(f"string length at byte {pos} is not a number")
    if digits.startswith(b"0") and len(digits) > 1:
        raise BencodeError(f"string length at byte {pos} is not canonical")
    start = colon + 1
    end = start + int(digits)
    if end > len(data):
        raise BencodeError(f"string at byte {pos} runs past the end")
    return start, end


def skip(data: bytes, pos: int, max_depth: int = MAX_DEPTH) -> int:
    """Where the canonical value at `pos` ends (checked like `decode`, nothing built)."""
    return _decode(data, pos, max_depth, build=False)[1]


def _decode(data: bytes, pos: int, depth: int, build: bool = True) -> tuple[Any, int]:
    lead = data[pos : pos + 1]
    if lead == b"i":
        return read_int(data, pos)
    if lead.isdigit():
        start, end = read_string(data, pos)
        return (data[start:end] if build else None), end
    if lead not in (b"l", b"d"):
        raise BencodeError(f"no value at byte {pos}")
    if depth <= 0:
        raise BencodeError(f"nesting too deep at byte {pos}")
    pos += 1
    if lead == b"l":
        items: list[Any] = []
        while data[pos : pos + 1] != b"e":
            if pos >= len(data):
                raise BencodeError("list not closed")
            item, pos = _decode(data, pos, depth - 1, build)
            if build:
                items.append(item)
        return (items if build else None), pos + 1
    result: dict[bytes, Any] = {}
    previous: bytes | None = None
    while data[pos : pos + 1] != b"e":
        if pos >= len(data):
            raise BencodeError("dictionary not closed")
        start, end = read_string(data, pos)
        key = data[start:end]
        if previous is not None and key <= previous:
            raise BencodeError(f"dictionary keys not sorted or repeated (at byte {pos})")
        previous = key
        value, pos = _decode(data, end, depth - 1, build)
        if build:
            result[key] = value
    return (result if build else None), pos + 1


def _encode(value: Any, out: bytearray) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out += b"i%de" % value
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out += b"%d:" % len(raw)
        out += raw
    elif isinstance(value, str):
        _encode(value.encode("utf-8"), out)
    elif isinstance(value, Mapping):
        keys = [
            (k.encode("utf-8") if isinstance(k, str) else bytes(k), v) for k, v in value.items()
        ]
        keys.sort(key=lambda kv: kv[0])
        out += b"d"
        previous: bytes | None = None
        for key, item in keys:
            if key == previous:
                raise ValueError(f"key {key!r} given twice")
            previous = key
            _encode(key, out)
            _encode(item, out)
        out += b"e"
    elif isinstance(value, Sequence):
        out += b"l"
        for item in value:
            _encode(item, out)
        out += b"e"
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")
