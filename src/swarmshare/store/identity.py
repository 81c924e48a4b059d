"""A peer's identity: one persistent self-signed certificate in its home.

Created on first use (an ECDSA P-256 key, valid for 20 years, the peer's name as its common
name), kept as `identity/cert.pem` and `identity/key.pem` (a folder of mode 0700, files 0600),
written under temporary names and renamed, so a crash never leaves half an identity. Loading it
needs only the standard library; `cryptography` is imported to create one. The fingerprint is
the SHA-256 of the certificate's DER bytes, as LocalSend devices compute theirs; the compare
code is its first 64 bits, for people to read to each other.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from swarmshare.errors import StoreError

IDENTITY_DIR = "identity"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
VALID_DAYS = 20 * 365


@dataclass(frozen=True)
class Identity:
    """The certificate and key files of one peer, and the certificate's fingerprint."""

    cert_path: Path
    key_path: Path
    der: bytes

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate (DER), 64 lowercase hex digits."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def compare_code(self) -> str:
        """The fingerprint's first 64 bits as four groups of four: `3F2A-91BC-0D44-E7A1`."""
        head = self.fingerprint[:16].upper()
        return "-".join(head[i : i + 4] for i in range(0, 16, 4))

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting this certificate (TLS 1.2 or newer)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A TLS client context presenting this certificate and accepting any server
        certificate: the caller pins the server's fingerprint (self-signed certificates have
        no chain to check)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


def fingerprint_of(der: bytes) -> str:
    """SHA-256 of a certificate's DER bytes, as Identity.fingerprint."""
    return hashlib.sha256(der).hexdigest()


def load_identity(home: Path, name: str = "swarmshare") -> Identity:
    """The identity kept in `home`, created first if there is none; StoreError when the files
    cannot be read, written or parsed."""
    folder = home / IDENTITY_DIR
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    try:
        if not (cert_path.exists() and key_path.exists()):
            _create(folder, cert_path, key_path, name)
        return Identity(cert_path, key_path, _der(cert_path.read_bytes()))
    except OSError as exc:
        raise StoreError(f"cannot keep this peer's certificate in {folder}: {exc}") from exc
    except ValueError as exc:
        raise StoreError(f"this peer's certificate {cert_path} is damaged: {exc}") from exc


def _der(pem: bytes) -> bytes:
    der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
    if not der.startswith(b"\x30"):  # a DER certificate is a SEQUENCE
        raise ValueError("not a certificate")
    return der


def _create(folder: Path, cert_path: Path, key_path: Path, name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "swarmshare")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    _write_new(key_path, key_pem, 0o600)
    _write_new(cert_path, cert.public_bytes(Encoding.PEM), 0o600)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
