"""The DNS-SD record of a peer: how it advertises itself as `_swarmshare._tcp` over mDNS.

The SRV record carries the port of its peer server; the TXT record carries what an announcement
does, as RFC 6763 strings `key=value`:

    swarmshare=1  id=3f2a...  cv=9b1c...  iv=30  name=lab-7

A sighting of the record is taken as an announcement from the address it resolved to (never an
address from the TXT record). The TXT bytes come from the network: `decode_service` accepts
any bytes and either returns an Announcement or raises AnnouncementError. Keys are
case-insensitive (RFC 6763 6.4); the first of a repeated key counts; unknown keys are ignored.
"""

from __future__ import annotations

import json

from swarmshare.core.announce import (
    PROTOCOL_VERSION,
    Announcement,
    AnnouncementError,
    decode_announcement,
)
from swarmshare.limits import MAX_PEER_NAME_CHARS, MAX_SERVICE_TXT_BYTES

SERVICE_TYPE = "_swarmshare._tcp.local."
MAX_INSTANCE_LABEL_BYTES = 63  # one DNS label


def encode_txt(ann: Announcement) -> bytes:
    """The TXT record's bytes (length-prefixed strings) for this peer's announcement."""
    pairs = [
        ("swarmshare", str(PROTOCOL_VERSION)),
        ("id", ann.peer_id),
        ("cv", ann.catalog_version),
        ("iv", repr(float(ann.interval))),
        ("name", ann.name[:MAX_PEER_NAME_CHARS]),
    ]
    out = bytearray()
    for key, value in pairs:
        item = f"{key}={value}".encode()
        while len(item) > 255:  # one TXT string: cut whole characters off the end
            value = value[:-1]
            item = f"{key}={value}".encode()
        out += bytes([len(item)]) + item
    return bytes(out)


def decode_txt(text: bytes) -> dict[str, str]:
    """The `key=value` strings of TXT record bytes; AnnouncementError if they are malformed,
    over MAX_SERVICE_TXT_BYTES, or not UTF-8."""
    if len(text) > MAX_SERVICE_TXT_BYTES:
        raise AnnouncementError(f"TXT record of {len(text)} bytes is over the limit")
    found: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        length = text[pos]
        item = text[pos + 1 : pos + 1 + length]
        if len(item) != length:
            raise AnnouncementError("TXT record string runs past its end")
        pos += 1 + length
        key, sep, value = item.partition(b"=")
        if not sep or not key:
            continue  # a boolean attribute or an empty string: none of ours
        try:
            name, text_value = key.decode("ascii").lower(), value.decode("utf-8")
        except UnicodeDecodeError:
            raise AnnouncementError("TXT record string is not text") from None
        found.setdefault(name, text_value)
    return found


def decode_service(text: bytes, port: int) -> Announcement:
    """The announcement a peer's service record makes: its TXT bytes and its SRV port.
    AnnouncementError unless both are valid."""
    if type(port) is not int or not 0 < port <= 65535:
        raise AnnouncementError("bad service port")
    fields = decode_txt(text)
    if fields.get("swarmshare") != str(PROTOCOL_VERSION):
        raise AnnouncementError("not a swarmshare service record of a known version")
    try:
        interval = float(fields.get("iv", ""))
    except ValueError:
        raise AnnouncementError("bad interval") from None
    obj = {
        "swarmshare": PROTOCOL_VERSION,
        "id": fields.get("id"),
        "port": port,
        "name": fields.get("name", ""),
        "cv": fields.get("cv"),
        "iv": interval if interval == interval and abs(interval) != float("inf") else None,
    }
    return decode_announcement(json.dumps(obj).encode())


def instance_name(name: str, peer_id: str) -> str:
    """The service instance name `NAME (ID)`, cut to fit one DNS label; the peer ID keeps it
    unique when two peers share a name."""
    suffix = f" ({peer_id})"
    room = MAX_INSTANCE_LABEL_BYTES - len(suffix.encode())
    cleaned = "".join(c if c.isprintable() and c != "." else "_" for c in name) or "swarmshare"
    base = cleaned.encode()[:room].decode("utf-8", errors="ignore")
    return f"{base}{suffix}.{SERVICE_TYPE}"
