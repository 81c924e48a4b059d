"""The one typed settings object, built by the CLI from flags, environment and defaults."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

DEFAULT_DISCOVERY_PORT = 5001
DEFAULT_PEER_PORT = 5001
DEFAULT_CONTROL_PORT = 5080
DEFAULT_LEGACY_PORT = 5000
DEFAULT_INTERVAL_SECONDS = 30.0
DEFAULT_LOCALSEND_PORT = 53317
DEFAULT_LOCALSEND_GROUP = "224.0.0.167"
DEFAULT_BITTORRENT_PORT = 6881


def default_home() -> Path:
    """The data directory: $SWARMSHARE_HOME, else the platform's user data directory."""
    env = os.environ.get("SWARMSHARE_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("swarmshare", appauthor=False))


def default_name() -> str:
    """The name a peer shows to others by default: the host name."""
    return socket.gethostname() or "swarmshare"


@dataclass(frozen=True)
class Settings:
    """Everything a swarmshare process is told; handed down from the CLI."""

    home: Path
    """Data directory: database, control-port file, lock."""
    name: str = field(default_factory=default_name)
    """Display name announced to other peers."""
    bind: str = "0.0.0.0"
    """Address the peer server binds; also the source address of announcements."""
    port: int = DEFAULT_PEER_PORT
    """TCP port of the peer server (0 = any free port)."""
    discovery_port: int = DEFAULT_DISCOVERY_PORT
    """UDP port announcements are sent to and heard on."""
    broadcast: tuple[str, ...] = ()
    """Where announcements go; empty means each IPv4 interface's broadcast address."""
    peers: tuple[tuple[str, int], ...] = ()
    """Unicast peers (host, discovery port) for networks where broadcast does not pass."""
    interval: float = DEFAULT_INTERVAL_SECONDS
    """Seconds between periodic announcements; peers expire after three missed ones."""
    control_port: int | None = None
    """TCP port of the control API and web page on 127.0.0.1 (0 = any free port; None =
    DEFAULT_CONTROL_PORT, or any free port when that one is taken)."""
    downloads_dir: Path | None = None
    """Where downloads go when no destination is given (default: the current directory)."""
    chunk_timeout: float | None = None
    """Seconds a chunk request may take before it is retried elsewhere (None: adaptive)."""
    read_idle_timeout: float = 10.0
    """Seconds without a byte from a peer before a transfer is cut."""
    secret: str | None = None
    """A private swarm's shared secret: sign and require proofs on everything (None: open)."""
    legacy: bool = False
    """Also speak the original four scripts' formats (seed announcements, TCP chunk server)."""
    legacy_port: int = DEFAULT_LEGACY_PORT
    """TCP port of the seed-compatible chunk server, and of seed uploaders we fetch from."""
    upload_bytes_per_second: int = 0
    """What the peer server's uploads may send in all, in bytes per second (0: no limit)."""
    ipv6: bool = True
    """Also discover peers over IPv6 (a link-local multicast group on every IPv6 interface) and
    serve on IPv6; only with the wildcard bind address (a bind to one address is IPv4 only)."""
    mdns: bool = True
    """A serving peer also advertises itself and finds others by mDNS/DNS-SD (`_swarmshare._tcp`);
    never with a loopback bind address (there it is off, as in every test)."""
    localsend: bool = False
    """Also receive like a LocalSend device (discovery, HTTPS uploads into the download folder)."""
    localsend_port: int = DEFAULT_LOCALSEND_PORT
    """LocalSend's TCP port (HTTPS) and UDP port (discovery)."""
    localsend_group: str = DEFAULT_LOCALSEND_GROUP
    """Where LocalSend announcements go: the protocol's multicast group, or a broadcast address."""
    accept: str = "ask"
    """Which LocalSend offers are taken: ask (the inbox), pin (those with the PIN), all."""
    pin: str | None = None
    """The PIN LocalSend senders must give (None: none asked)."""
    bittorrent: bool = False
    """Also be a BitTorrent peer (libtorrent): seed every shared content, find BitTorrent peers
    on the LAN by local service discovery (never with a loopback bind address)."""
    bittorrent_port: int = DEFAULT_BITTORRENT_PORT
    """TCP/UDP port of the BitTorrent peer (0 = any free port)."""
    dht: bool = False
    """With `bittorrent`: also join the BitTorrent DHT (the wide-area swarm)."""
    trackers: tuple[str, ...] = ()
    """With `bittorrent`: BitTorrent trackers every torrent is announced to."""
