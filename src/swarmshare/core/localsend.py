"""The LocalSend protocol's messages (v2.1), as values: JSON bytes in, checked values out.

LocalSend (localsend/protocol) is the open HTTP protocol phones and laptops use to push files on
a LAN. A device announces itself with a UDP datagram (JSON: alias, version, deviceModel,
deviceType, fingerprint, port, protocol, download, announce) and is answered by
`POST /api/localsend/v2/register` (or a datagram with `announce: false`). A sender offers files
with `POST /api/localsend/v2/prepare-upload` (a `sessionId` and a token per file come back),
then posts each file's raw bytes to `/upload?sessionId=&fileId=&token=`; `/cancel?sessionId=`
ends a session. Over HTTPS a device's fingerprint is the SHA-256 of its certificate.

Everything from the network is untrusted: each decoder either returns a value or raises a
`LocalSendError` (a `RemoteProtocolError`). Offered file names are checked as manifest paths
are (relative, no `..`, no absolute or drive paths, no control characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from swarmshare.core.manifest import name_collision, parse_json, validate_path
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import (
    MAX_CONTENT_BYTES,
    MAX_DATAGRAM_BYTES,
    MAX_FILE_BYTES,
    MAX_LOCALSEND_FILES,
    MAX_LOCALSEND_JSON_BYTES,
    MAX_PEER_NAME_CHARS,
)

PROTOCOL_VERSION = "2.1"
DEFAULT_PORT = 53317
DEFAULT_GROUP = "224.0.0.167"
DEVICE_TYPES = ("mobile", "desktop", "web", "headless", "server")
SWARMSHARE_MODEL = "swarmshare"
"""The deviceModel a swarmshare peer announces: how another swarmshare peer knows one."""
MAX_ID_CHARS = 128  # a file ID, session ID, token or fingerprint
MAX_FILE_TYPE_CHARS = 128
_HEX64 = re.compile(r"[0-9a-f]{64}")


class LocalSendError(RemoteProtocolError):
    """A LocalSend message that breaks the protocol (malformed, oversized, a bad name)."""


class BadFileName(LocalSendError):
    """An offered file name that is not a safe relative path."""


@dataclass(frozen=True)
class DeviceInfo:
    """What a LocalSend device says about itself (announcement, register, info, offer)."""

    alias: str
    fingerprint: str
    port: int = DEFAULT_PORT
    protocol: str = "https"
    version: str = PROTOCOL_VERSION
    device_model: str | None = None
    device_type: str | None = "headless"
    download: bool = False
    announce: bool | None = None
    swarm_port: int | None = None
    """A swarmshare peer's own peer-server port (our extra field; None from anyone else)."""

    @property
    def is_swarmshare(self) -> bool:
        """Whether the device is a swarmshare peer."""
        return self.device_model == SWARMSHARE_MODEL

    def as_json(self, announce: bool | None = None) -> dict[str, Any]:
        """The JSON object of this device; with `announce` for a datagram."""
        obj: dict[str, Any] = {
            "alias": self.alias,
            "version": self.version,
            "deviceModel": self.device_model,
            "deviceType": self.device_type,
            "fingerprint": self.fingerprint,
            "port": self.port,
            "protocol": self.protocol,
            "download": self.download,
        }
        if self.swarm_port is not None:
            obj["swarmsharePort"] = self.swarm_port
        if announce is not None:
            obj["announce"] = announce
        return obj


@dataclass(frozen=True)
class FileOffer:
    """One file a sender offers: its ID, a checked relative path, its size."""

    id: str
    name: str
    size: int
    file_type: str = "application/octet-stream"
    sha256: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The file's entry in a prepare-upload body."""
        obj: dict[str, Any] = {
            "id": self.id,
            "fileName": self.name,
            "size": self.size,
            "fileType": self.file_type,
        }
        if self.sha256 is not None:
            obj["sha256"] = self.sha256
        return obj


@dataclass(frozen=True)
class UploadOffer:
    """A prepare-upload request: who sends, and which files."""

    sender: DeviceInfo
    files: tuple[FileOffer, ...]

    @property
    def total_bytes(self) -> int:
        """The size of every offered file together."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class UploadGrant:
    """A prepare-upload answer: the session, and a token for each file wanted."""

    session_id: str
    tokens: Mapping[str, str]


@dataclass(frozen=True)
class SwarmOffer:
    """Between swarmshare peers only: "fetch this content through the swarm, from me and from
    whoever else has it" (instead of an upload), so that several receivers fetch from one
    another and the sender uploads about one copy."""

    sender: DeviceInfo
    content_id: str
    name: str
    size: int

    def as_offer(self) -> UploadOffer:
        """The offer as the accept rule and the inbox see it: one file."""
        return UploadOffer(self.sender, (FileOffer(self.content_id[:16], self.name, self.size),))


def encode_swarm_offer(offer: SwarmOffer) -> bytes:
    """The body of a swarmshare-fetch request."""
    return _dump(
        {
            "info": offer.sender.as_json(),
            "contentId": offer.content_id,
            "name": offer.name,
            "size": offer.size,
        }
    )


def _offer_object(data: bytes) -> tuple[dict[str, object], DeviceInfo]:
    """An offer body's JSON object and its sender (both kinds of offer start so)."""
    if len(data) > MAX_LOCALSEND_JSON_BYTES:
        raise LocalSendError(f"offer of {len(data)} bytes is over the limit")
    obj = _load(data)
    if not isinstance(obj, dict):
        raise LocalSendError("an offer must be a JSON object")
    sender = decode_device(obj.get("info"))
    return obj, sender


def decode_swarm_offer(data: bytes) -> SwarmOffer:
    """A swarmshare-fetch body; BadFileName for an unsafe name."""
    obj, sender = _offer_object(data)
    content_id = obj.get("contentId")
    if not isinstance(content_id, str) or not _HEX64.fullmatch(content_id):
        raise LocalSendError("contentId must be 64 lowercase hex digits")
    name = obj.get("name")
    if not isinstance(name, str):
        raise LocalSendError("an offer needs a name")
    size = obj.get("size")
    if type(size) is not int or not 0 <= size <= MAX_CONTENT_BYTES:
        raise LocalSendError(f"bad size {size!r}")
    return SwarmOffer(sender, content_id, check_name(name), size)


def encode_announcement(info: DeviceInfo, announce: bool) -> bytes:
    """The UDP datagram announcing `info` (`announce`: whether others should answer)."""
    return _dump(info.as_json(announce))


def decode_announcement(data: bytes) -> DeviceInfo:
    """A LocalSend discovery datagram."""
    if len(data) > MAX_DATAGRAM_BYTES * 4:
        raise LocalSendError(f"datagram of {len(data)} bytes is over the limit")
    return decode_device(_load(data))


def decode_device_bytes(data: bytes) -> DeviceInfo:
    """A register request, or a register or info reply."""
    return decode_device(_load(data))


def decode_device(obj: object) -> DeviceInfo:
    """A device object already parsed from JSON."""
    if not isinstance(obj, dict):
        raise LocalSendError("a device must be a JSON object")
    alias = _text(obj, "alias", MAX_PEER_NAME_CHARS * 4)
    if alias is None:
        raise LocalSendError("a device needs an alias")
    fingerprint = _text(obj, "fingerprint", MAX_ID_CHARS) or ""
    port = obj.get("port", DEFAULT_PORT)
    if port is None:
        port = DEFAULT_PORT
    if type(port) is not int or not 0 < port < 65536:
        raise LocalSendError(f"bad port {port!r}")
    protocol = obj.get("protocol") or "https"
    if protocol not in ("http", "https"):
        raise LocalSendError(f"bad protocol {protocol!r}")
    device_type = _text(obj, "deviceType", 32)
    if device_type is not None and device_type not in DEVICE_TYPES:
        device_type = "desktop"  # as the protocol says: unknown types fall back to desktop
    announce = obj.get("announce")
    if announce is not None and not isinstance(announce, bool):
        raise LocalSendError("announce must be true or false")
    download = obj.get("download", False)
    swarm_port = obj.get("swarmsharePort")
    if swarm_port is not None and (type(swarm_port) is not int or not 0 < swarm_port < 65536):
        raise LocalSendError(f"bad swarmsharePort {swarm_port!r}")
    return DeviceInfo(
        alias=_clean(alias)[:MAX_PEER_NAME_CHARS] or "device",
        fingerprint=fingerprint,
        port=port,
        protocol=protocol,
        version=_text(obj, "version", 16) or "1.0",
        device_model=_text(obj, "deviceModel", 64),
        device_type=device_type,
        download=download is True,
        announce=announce,
        swarm_port=swarm_port,
    )


def encode_offer(offer: UploadOffer) -> bytes:
    """The body of a prepare-upload request."""
    return _dump(
        {"info": offer.sender.as_json(), "files": {f.id: f.as_json() for f in offer.files}}
    )


def decode_offer(data: bytes) -> UploadOffer:
    """A prepare-upload body; `BadFileName` for an unsafe name (nothing may be written)."""
    obj, sender = _offer_object(data)
    raw_files = obj.get("files")
    if not isinstance(raw_files, dict):
        raise LocalSendError("an offer needs files: an object")
    if len(raw_files) > MAX_LOCALSEND_FILES:
        raise LocalSendError(f"an offer of {len(raw_files)} files is over the limit")
    files: list[FileOffer] = []
    for key, raw in raw_files.items():
        files.append(_file(key, raw))
    collision = name_collision(f.name for f in files)
    if collision is not None or len({f.name for f in files}) != len(files):
        raise BadFileName("two offered files would have one name")
    clash = file_and_folder(f.name for f in files)
    if clash is not None:
        raise BadFileName(f"{clash!r} is offered both as a file and as a folder")
    return UploadOffer(sender, tuple(files))


def file_and_folder(names: Iterable[str]) -> str | None:
    """A name that is both one of `names` and a folder of another ("a" and "a/b"), or None."""
    files = set(names)
    for name in files:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in files:
                return folder
    return None


def encode_grant(grant: UploadGrant) -> bytes:
    """The body of a prepare-upload answer."""
    return _dump({"sessionId": grant.session_id, "files": dict(grant.tokens)})


def decode_grant(data: bytes) -> UploadGrant:
    """A prepare-upload answer."""
    if len(data) > MAX_LOCALSEND_JSON_BYTES:
        raise LocalSendError(f"answer of {len(data)} bytes is over the limit")
    obj = _load(data)
    if not isinstance(obj, dict):
        raise LocalSendError("an answer must be a JSON object")
    session_id = _text(obj, "sessionId", MAX_ID_CHARS)
    tokens = obj.get("files")
    if session_id is None or not isinstance(tokens, dict):
        raise LocalSendError("an answer needs sessionId and files")
    checked: dict[str, str] = {}
    for key, value in tokens.items():
        if not isinstance(value, str) or len(value) > MAX_ID_CHARS or len(key) > MAX_ID_CHARS:
            raise LocalSendError("a file token must be a short string")
        checked[key] = value
    return UploadGrant(session_id, checked)


def check_name(name: str) -> str:
    """`name` when it is a safe relative path for a received file; BadFileName otherwise."""
    problem = validate_path(name)
    if problem is not None:
        raise BadFileName(f"unsafe file name: {problem}")
    return name


def _file(key: str, raw: object) -> FileOffer:
    if not isinstance(raw, dict):
        raise LocalSendError("a file must be a JSON object")
    file_id = _text(raw, "id", MAX_ID_CHARS)
    if file_id is None or file_id != key or not file_id:
        raise LocalSendError("a file's id must be its key")
    name = raw.get("fileName")
    if not isinstance(name, str):
        raise LocalSendError("a file needs a fileName")
    size = raw.get("size")
    if type(size) is not int or not 0 <= size <= MAX_FILE_BYTES:
        raise LocalSendError(f"bad size {size!r}")
    sha256 = raw.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or len(sha256) > MAX_ID_CHARS):
        raise LocalSendError("bad sha256")
    file_type = _text(raw, "fileType", MAX_FILE_TYPE_CHARS) or "application/octet-stream"
    return FileOffer(file_id, check_name(name), size, file_type, sha256)


def _text(obj: dict[str, Any], key: str, limit: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise LocalSendError(f"{key} must be a string of at most {limit} characters")
    return value


def _clean(text: str) -> str:
    """Text from another device without control characters (it is shown to people)."""
    return "".join(c for c in text if c.isprintable()).strip()


def _load(data: bytes) -> Any:
    return parse_json(data, LocalSendError)


def _dump(obj: object) -> bytes:
    import json

    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
