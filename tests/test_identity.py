"""A peer's certificate: created once, kept across restarts, usable for TLS."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path

import pytest

from swarmshare.errors import StoreError
from swarmshare.store.identity import load_identity


def test_created_once_and_kept(tmp_path: Path) -> None:
    first = load_identity(tmp_path, "alice")
    again = load_identity(tmp_path, "ignored on reload")
    assert first.fingerprint == again.fingerprint
    assert len(first.fingerprint) == 64
    assert first.fingerprint == hashlib.sha256(first.der).hexdigest()
    assert first.compare_code == "-".join(
        first.fingerprint[:16].upper()[i : i + 4] for i in range(0, 16, 4)
    )
    assert (first.key_path.stat().st_mode & 0o777) == 0o600
    assert not list(first.cert_path.parent.glob("*.tmp"))
    assert load_identity(tmp_path / "other").fingerprint != first.fingerprint


def test_damaged_certificate_is_one_clear_error(tmp_path: Path) -> None:
    identity = load_identity(tmp_path)
    identity.cert_path.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    with pytest.raises(StoreError, match="damaged"):
        load_identity(tmp_path)


async def test_tls_between_two_identities_shows_the_servers_fingerprint(tmp_path: Path) -> None:
    server_id = load_identity(tmp_path / "server")
    client_id = load_identity(tmp_path / "client")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_id.server_context())
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_id.client_context(), server_hostname=None
        )
        tls = writer.get_extra_info("ssl_object")
        assert isinstance(tls, ssl.SSLObject)
        peer_der = tls.getpeercert(binary_form=True)
        assert peer_der is not None
        assert hashlib.sha256(peer_der).hexdigest() == server_id.fingerprint
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.close()
        await writer.wait_closed()
