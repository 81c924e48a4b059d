"""The LocalSend message codec (core/localsend.py), fed values and arbitrary bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmshare.core.localsend import (
    SWARMSHARE_MODEL,
    BadFileName,
    DeviceInfo,
    FileOffer,
    LocalSendError,
    SwarmOffer,
    UploadGrant,
    UploadOffer,
    decode_announcement,
    decode_device_bytes,
    decode_grant,
    decode_offer,
    decode_swarm_offer,
    encode_announcement,
    encode_grant,
    encode_offer,
    encode_swarm_offer,
)

ME = DeviceInfo(alias="lab-7", fingerprint="ab" * 32, port=53317, device_model=SWARMSHARE_MODEL)


def offer_bytes(name: object, size: object = 3, **extra: object) -> bytes:
    entry = {"id": "f", "fileName": name, "size": size, "fileType": "text/plain", **extra}
    return json.dumps(
        {"info": {"alias": "phone", "fingerprint": "x"}, "files": {"f": entry}}
    ).encode()


def test_an_announcement_round_trips_and_says_it_is_swarmshare() -> None:
    data = encode_announcement(ME, True)
    decoded = decode_announcement(data)
    assert decoded == DeviceInfo(
        alias="lab-7",
        fingerprint="ab" * 32,
        port=53317,
        device_model=SWARMSHARE_MODEL,
        announce=True,
    )
    assert decoded.is_swarmshare
    assert json.loads(data)["deviceModel"] == "swarmshare"


def test_a_device_from_localsend_decodes_with_its_defaults() -> None:
    data = json.dumps(
        {
            "alias": "Nice Orange\x1b[31m",
            "version": "2.0",
            "deviceModel": "Samsung",
            "deviceType": "fridge",
            "fingerprint": "random string",
            "port": 53317,
            "protocol": "http",
            "download": True,
        }
    ).encode()
    info = decode_device_bytes(data)
    assert info.alias == "Nice Orange[31m"  # no control characters reach a terminal
    assert info.device_type == "desktop"  # unknown types fall back, as the protocol says
    assert info.protocol == "http" and info.download and not info.is_swarmshare


def test_an_offer_and_a_grant_round_trip() -> None:
    offer = UploadOffer(
        ME, (FileOffer("1", "a.txt", 3), FileOffer("2", "dir/b.bin", 0, sha256="00"))
    )
    assert decode_offer(encode_offer(offer)) == UploadOffer(
        DeviceInfo(
            alias="lab-7",
            fingerprint="ab" * 32,
            device_model=SWARMSHARE_MODEL,
        ),
        offer.files,
    )
    grant = UploadGrant("s1", {"1": "t1", "2": "t2"})
    assert decode_grant(encode_grant(grant)) == grant


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "",
        ".",
        "..",
        "a\x00b",
        "tab\there",
        "C:x",
        "a\\b",
        "a//b",
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(BadFileName):
        decode_offer(offer_bytes(name))


@pytest.mark.parametrize(
    "data",
    [
        offer_bytes("a", size=-1),
        offer_bytes("a", size=1.5),
        offer_bytes("a", size=True),
        offer_bytes(7),
        b'{"info": {"alias": "p"}, "files": []}',
        b'{"info": {"alias": "p"}, "files": {"f": {"id": "g", "fileName": "a", "size": 1}}}',
        b'{"info": {}, "files": {}}',
        b'{"info": {"alias": "p", "port": 70000}, "files": {}}',
        b'{"info": {"alias": "p", "port": 1, "port": 2}, "files": {}}',
        b"[1]",
        b"\xff",
    ],
)
def test_malformed_offers_are_refused(data: bytes) -> None:
    with pytest.raises(LocalSendError):
        decode_offer(data)


def test_two_files_with_one_name_are_refused() -> None:
    files = {
        "1": {"id": "1", "fileName": "A.txt", "size": 1},
        "2": {"id": "2", "fileName": "a.txt", "size": 1},
    }
    data = json.dumps({"info": {"alias": "p"}, "files": files}).encode()
    with pytest.raises(BadFileName):
        decode_offer(data)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_a_protocol_error(data: bytes) -> None:
    for decode in (decode_offer, decode_grant, decode_announcement, decode_device_bytes):
        try:
            decode(data)
        except LocalSendError:
            pass


@settings(max_examples=200)
@given(st.text(max_size=40))
def test_any_accepted_name_is_a_safe_relative_path(name: str) -> None:
    try:
        offer = decode_offer(offer_bytes(name))
    except LocalSendError:
        return
    accepted = offer.files[0].name
    parts = accepted.split("/")
    assert not accepted.startswith("/")
    assert all(p not in ("", ".", "..") for p in parts)
    assert not any(ord(c) < 0x20 or c in "\x7f\\" for c in accepted)  # as manifest paths


def test_a_swarm_offer_round_trips_and_checks_its_name() -> None:
    offer = SwarmOffer(ME, "c" * 64, "dir/data.bin", 10)
    assert decode_swarm_offer(encode_swarm_offer(offer)) == SwarmOffer(
        DeviceInfo(alias="lab-7", fingerprint="ab" * 32, device_model=SWARMSHARE_MODEL),
        "c" * 64,
        "dir/data.bin",
        10,
    )
    with pytest.raises(BadFileName):
        decode_swarm_offer(encode_swarm_offer(SwarmOffer(ME, "c" * 64, "../x", 1)))
    with pytest.raises(LocalSendError):
        decode_swarm_offer(encode_swarm_offer(SwarmOffer(ME, "C" * 64, "x", 1)))


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_any_bytes_make_a_swarm_offer_or_a_protocol_error(data: bytes) -> None:
    try:
        decode_swarm_offer(data)
    except LocalSendError:
        pass


def test_an_offer_with_a_file_and_a_folder_of_one_name_is_refused() -> None:
    from swarmshare.core.localsend import BadFileName, decode_offer, file_and_folder

    assert file_and_folder(["a", "a/b"]) == "a"
    assert file_and_folder(["a/b/c", "a/b"]) == "a/b"
    assert file_and_folder(["a", "ab/c", "b/a"]) is None
    body = {
        "info": {"alias": "x", "fingerprint": "y"},
        "files": {k: {"id": k, "fileName": n, "size": 1} for k, n in (("1", "a"), ("2", "a/b"))},
    }
    with pytest.raises(BadFileName, match="both as a file and as a folder"):
        decode_offer(json.dumps(body).encode())
