"""The discovery datagram: who a peer is, where its server listens, and its catalogue version.

One small JSON object, well under MAX_DATAGRAM_BYTES so it never fragments. It never lists
contents: receivers fetch the catalogue over HTTP when its version changes.

    {"swarmshare": 1, "id": "3f2a...", "port": 5001, "name": "lab-7", "cv": "9b1c...",
     "iv": 30, "sol": false, "bye": false}

`fp` (only when the sender has one to give: a private-swarm peer) is the SHA-256 fingerprint of
the sender's TLS certificate; in a private swarm it is signed with the rest, so a member connects
to a peer only over TLS to the certificate its signed announcement names.

`sol` (solicit) asks every receiver to answer at once, by unicast to the sender's address and
port; `bye` says the sender is leaving. `port` 0 means "not serving" (a CLI looking around).
Unknown keys are ignored, so later versions may add fields.

Every announcement also carries `"chunks": []`: the original scripts' listener, which shares the
port, reads `data["chunks"]` from every datagram and dies on one without it; an empty list
keeps it alive and adds nothing to its dictionary. (A seed datagram has `chunks` as its only
key, so the two kinds stay easy to tell apart.)
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass

from swarmshare.core.auth import MAX_SKEW_SECONDS, sign
from swarmshare.core.manifest import parse_json
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import MAX_DATAGRAM_BYTES, MAX_PEER_NAME_CHARS

PROTOCOL_VERSION = 1
MIN_INTERVAL_SECONDS = 0.05
MAX_INTERVAL_SECONDS = 3600.0
_PEER_ID = re.compile(r"[0-9a-f]{16}")
_VERSION = re.compile(r"[0-9a-f]{1,64}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


class AnnouncementError(RemoteProtocolError):
    """A datagram that is not a valid announcement."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """One peer's discovery datagram."""

    peer_id: str
    port: int
    name: str
    catalog_version: str
    interval: float
    solicit: bool = False
    bye: bool = False
    fingerprint: str = ""
    """SHA-256 of the sender's TLS certificate (64 hex digits), or "" when it gives none."""

    def encode(self) -> bytes:
        """The datagram bytes."""
        obj = {
            "swarmshare": PROTOCOL_VERSION,
            "id": self.peer_id,
            "port": self.port,
            "name": self.name[:MAX_PEER_NAME_CHARS],
            "cv": self.catalog_version,
            "iv": self.interval,
            "sol": self.solicit,
            "bye": self.bye,
            "chunks": [],
        }
        if self.fingerprint:
            obj["fp"] = self.fingerprint
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()
        if len(data) > MAX_DATAGRAM_BYTES:  # only a pathological name could do this
            raise ValueError("announcement too large")
        return data


def encode_private(ann: Announcement, key: bytes, now: float, source: str) -> bytes:
    """The announcement of a private-swarm peer: tagged `swarmshare_private`, timed, and signed
    together with its peer ID, its certificate's fingerprint and `source`, the address it is
    sent from."""
    obj = json.loads(ann.encode())
    del obj["swarmshare"]
    obj["swarmshare_private"] = PROTOCOL_VERSION
    obj["ts"] = round(now, 3)
    obj["src"] = source
    body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    obj["mac"] = sign(key, body)
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def decode_private(data: bytes, key: bytes, now: float, source: str) -> Announcement:
    """A private-swarm announcement signed with `key`, fresh, and sent from the address it was
    signed for (`source`, the datagram's); AnnouncementError otherwise."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise AnnouncementError("datagram over the limit")
    obj = parse_json(data, AnnouncementError)
    if not isinstance(obj, dict) or obj.get("swarmshare_private") != PROTOCOL_VERSION:
        raise AnnouncementError("not a private-swarm announcement")
    mac, ts = obj.pop("mac", None), obj.get("ts")
    body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    if not isinstance(mac, str) or not hmac.compare_digest(mac, sign(key, body)):
        raise AnnouncementError("announcement not signed with this swarm's secret")
    if not isinstance(ts, int | float) or abs(now - ts) > MAX_SKEW_SECONDS:
        raise AnnouncementError("stale announcement")
    if obj.get("src") != source:
        raise AnnouncementError("announcement signed for another sender address")
    del obj["swarmshare_private"], obj["ts"], obj["src"]
    obj["swarmshare"] = PROTOCOL_VERSION
    return decode_announcement(json.dumps(obj).encode())


def is_native(data: bytes) -> bool:
    """Whether a datagram claims to be a swarmshare announcement (cheap shape test)."""
    return data.startswith(b"{") and b'"swarmshare"' in data[:MAX_DATAGRAM_BYTES]


def decode_announcement(data: bytes) -> Announcement:
    """Parse an untrusted datagram; AnnouncementError unless it is a valid announcement."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise AnnouncementError(f"datagram of {len(data)} bytes is over the limit")
    obj = parse_json(data, AnnouncementError)
    if not isinstance(obj, dict) or obj.get("swarmshare") != PROTOCOL_VERSION:
        raise AnnouncementError("not a swarmshare announcement of a known version")
    peer_id, port, name = obj.get("id"), obj.get("port"), obj.get("name", "")
    version, interval = obj.get("cv"), obj.get("iv")
    solicit, bye = obj.get("sol", False), obj.get("bye", False)
    fingerprint = obj.get("fp", "")
    if not isinstance(peer_id, str) or not _PEER_ID.fullmatch(peer_id):
        raise AnnouncementError("bad peer id")
    if type(port) is not int or not 0 <= port <= 65535:
        raise AnnouncementError("bad port")
    if not isinstance(name, str) or len(name) > MAX_PEER_NAME_CHARS:
        raise AnnouncementError("bad name")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise AnnouncementError("bad catalogue version")
    if not isinstance(interval, int | float) or isinstance(interval, bool):
        raise AnnouncementError("bad interval")
    if not MIN_INTERVAL_SECONDS <= interval <= MAX_INTERVAL_SECONDS:
        raise AnnouncementError("bad interval")
    if type(solicit) is not bool or type(bye) is not bool:
        raise AnnouncementError("bad flags")
    if not isinstance(fingerprint, str) or (
        fingerprint and not _FINGERPRINT.fullmatch(fingerprint)
    ):
        raise AnnouncementError("bad certificate fingerprint")
    clean_name = "".join(c if c.isprintable() else "?" for c in name)
    return Announcement(
        peer_id, port, clean_name, version, float(interval), solicit, bye, fingerprint
    )
