"""Private swarms: proof of a shared secret on every announcement and every request.

A peer started with a secret signs what it sends with HMAC-SHA256 under a key derived from the
secret, and accepts only what is signed the same way:

- announcements use the tag `swarmshare_private` (so peers without the secret treat them as
  foreign and drop them) and carry `ts` and `mac` = HMAC(key, the datagram without `mac`);
- announcements are signed together with the sender's address (see core/announce.py);
- HTTP requests carry `X-Swarmshare-Auth: TS:NONCE:MAC` with MAC = HMAC(key, METHOD \\n PATH \\n
  TS \\n NONCE \\n CLIENT \\n SERVER:PORT): the client's source address and the server address
  and port it connected to are inside the proof, so a request relayed by another host, or
  replayed to another peer, proves nothing. The server refuses a missing or wrong MAC (checked
  against the connection's remote address and its own local address), a TS more than
  MAX_SKEW_SECONDS away from its clock, and a NONCE it has already seen (a replay).

This authenticates. The encryption is TLS: a private-swarm peer serves only TLS with its own
certificate, whose fingerprint its signed announcements carry (`fp`, core/announce.py), and
members connect only to that certificate (net/chunkconn.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict

from swarmshare.errors import RemoteProtocolError

AUTH_HEADER = "X-Swarmshare-Auth"
MAX_SKEW_SECONDS = 60.0
MAX_REMEMBERED_NONCES = 100_000


class AuthError(RemoteProtocolError):
    """A request or announcement without a valid proof of the secret."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def derive_key(secret: str) -> bytes:
    """The HMAC key of a swarm secret."""
    return hashlib.sha256(b"swarmshare private swarm v1\x00" + secret.encode()).digest()


def sign(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of `message`, hex."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def web_seed_token(key: bytes, content_id: str) -> str:
    """The path token that lets a BitTorrent web seed client (which cannot sign requests)
    fetch one content's files from a private swarm: it goes in the URL's path, never in a
    query string (libtorrent ignores web seeds with one on private addresses)."""
    return sign(key, b"swarmshare web seed\x00" + content_id.encode())[:32]


Endpoint = tuple[str, int]


def request_header(
    key: bytes, method: str, path: str, now: float, client: str, server: Endpoint
) -> str:
    """The auth header value for one request sent at `now` from address `client` to the
    (address, port) `server` it is sent to."""
    ts = f"{now:.3f}"
    nonce = secrets.token_hex(12)
    message = _request_message(method, path, ts, nonce, client, server)
    return f"{ts}:{nonce}:{sign(key, message)}"


class RequestVerifier:
    """Checks request headers, remembering recent nonces to refuse replays."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(
        self,
        header: str | None,
        method: str,
        path: str,
        now: float,
        client: str,
        server: Endpoint,
    ) -> None:
        """Return if the header proves the secret for this request, sent by `client` (the
        connection's remote address) to `server` (its local address and port); AuthError
        otherwise."""
        if not header:
            raise AuthError("this peer is in a private swarm: send the swarm's proof", "auth")
        parts = header.split(":")
        if len(parts) != 3 or len(parts[1]) > 64:
            raise AuthError("malformed auth header", "auth")
        ts, nonce, mac = parts
        try:
            sent = float(ts)
        except ValueError:
            raise AuthError("malformed auth time", "auth") from None
        expected = sign(self._key, _request_message(method, path, ts, nonce, client, server))
        if not hmac.compare_digest(expected, mac):
            raise AuthError("wrong proof: not a member of this private swarm", "auth")
        if abs(now - sent) > MAX_SKEW_SECONDS:
            raise AuthError("stale request (or clocks more than a minute apart)", "stale")
        self._forget(now)
        if nonce in self._seen:
            raise AuthError("replayed request", "replayed")
        self._seen[nonce] = sent

    def _forget(self, now: float) -> None:
        while self._seen:
            sent = next(iter(self._seen.values()))
            if now - sent <= 2 * MAX_SKEW_SECONDS and len(self._seen) < MAX_REMEMBERED_NONCES:
                break
            self._seen.popitem(last=False)


def _request_message(
    method: str, path: str, ts: str, nonce: str, client: str, server: Endpoint
) -> bytes:
    # A link-local IPv6 address's scope (`%eth0`) names an interface of one side only.
    client, host = client.partition("%")[0], server[0].partition("%")[0]
    return f"{method}\n{path}\n{ts}\n{nonce}\n{client}\n{host}:{server[1]}".encode()
