"""The config file: every `run` option as a key of one TOML file, checked and remembered with
the line it came from.

    name = "lab-7"
    port = 5001
    peers = ["10.0.2.15", "fileserver:5001"]
    upload-limit = "10M"

Keys are the options' long names without the dashes in front. What a key holds is checked here,
so that a bad value is one line naming the file, the line and the key; the CLI puts the values
under the command line's (settings.Settings is still built in one place, by the CLI).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from swarmshare.errors import UsageError
from swarmshare.limits import MAX_PEER_NAME_CHARS

CONFIG_FILE_NAME = "config.toml"
MAX_CONFIG_FILE_BYTES = 1 << 20

_RATE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def default_config_file() -> Path:
    """Where the config file is when none is named: the platform's user config directory."""
    return Path(platformdirs.user_config_dir("swarmshare", appauthor=False)) / CONFIG_FILE_NAME


def parse_rate(text: str) -> int:
    """A rate in bytes per second: a number with an optional K, M or G (powers of 1024), like
    512K, 10M or 10MiB/s; ValueError otherwise."""
    cleaned = text.strip().upper().removesuffix("/S").removesuffix("B").removesuffix("I")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in ("K", "M", "G") else (cleaned, "")
    try:
        rate = float(number) * _RATE_UNITS[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a rate in bytes per second (like 512K or 10M)") from None
    if not 0 <= rate < 1 << 50:
        raise ValueError(f"{text!r} is out of range")
    return int(rate)


def parse_peer(value: str, default_port: int) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6] or [V6]:PORT -> (host, port); ValueError for a bad port."""
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port or (":" in host and not host.startswith("[")):
        return value.strip("[]"), default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value}: the port must be a number from 1 to 65535")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ConfigFile:
    """The settings one config file holds, by option name (`discovery_port`), each with its line."""

    path: Path
    exists: bool
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, option: str) -> str:
        """`file PATH:LINE` for a setting the file holds."""
        line = self.lines.get(option)
        return f"file {self.path}:{line}" if line else f"file {self.path}"


def load_config(path: Path, *, required: bool) -> ConfigFile:
    """Read and check a config file; a missing one is empty unless `required` (named by the
    user). UsageError, one line naming the file, line and key, for anything wrong in it."""
    try:
        raw = path.read_bytes()[: MAX_CONFIG_FILE_BYTES + 1]
    except FileNotFoundError:
        if required:
            raise UsageError(f"config file {path} does not exist") from None
        return ConfigFile(path, exists=False)
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise UsageError(f"config file {path} is over {MAX_CONFIG_FILE_BYTES} bytes")
    import tomllib  # here, not at start: most homes have no config file

    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise UsageError(f"config file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path}{_toml_problem(str(exc))}") from None
    lines = _key_lines(text)
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = f"config file {path}" + (f", line {lines[key]}" if key in lines else "")
        spec = KEYS.get(key)
        if spec is None:
            raise UsageError(f"{where}: unknown key {key!r}{_did_you_mean(key)}")
        try:
            values[_option(key)] = spec.check(value, path.parent)
        except ValueError as exc:
            raise UsageError(f"{where}: {key}: {exc}") from None
    return ConfigFile(
        path,
        exists=True,
        values=values,
        lines={_option(k): n for k, n in lines.items() if k in KEYS},
    )


@dataclass(frozen=True)
class Key:
    """One key of the config file: what it holds, and the check that turns it into a value."""

    help: str
    check: Callable[[Any, Path], Any]


def _int_in(low: int, high: int) -> Callable[[Any, Path], int]:
    def check(value: Any, _base: Path) -> int:
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, not {value!r}")
        return value

    return check


def _float_in(low: float, high: float) -> Callable[[Any, Path], float]:
    def check(value: Any, _base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number of seconds, not {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low:g} to {high:g} seconds, not {value!r}")
        return float(value)

    return check


def _text(value: Any, _base: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


def _name(value: Any, base: Path) -> str:
    text = _text(value, base)
    if len(text) > MAX_PEER_NAME_CHARS:
        raise ValueError(f"must be at most {MAX_PEER_NAME_CHARS} characters")
    return text


def _texts(value: Any, base: Path) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"must be a list of strings, not {value!r}")
    return tuple(_text(item, base) for item in items)


def _peers(value: Any, base: Path) -> tuple[str, ...]:
    peers = _texts(value, base)
    for peer in peers:
        parse_peer(peer, 1)
    return peers


def _flag(value: Any, _base: Path) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _rate(value: Any, _base: Path) -> int:
    if type(value) is int:
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f'must be a rate like "10M" or a number of bytes, not {value!r}')
    return parse_rate(value)


def _path(value: Any, base: Path) -> Path:
    """A path; a relative one is relative to the config file's folder."""
    return base / Path(_text(value, base)).expanduser()


def _accept(value: Any, base: Path) -> str:
    text = _text(value, base)
    if text not in ("ask", "pin", "all"):
        raise ValueError(f"must be ask, pin or all, not {value!r}")
    return text


KEYS: dict[str, Key] = {
    "name": Key("name shown to other peers", _name),
    "port": Key("TCP port of the peer server", _int_in(0, 65535)),
    "discovery-port": Key("UDP port of announcements", _int_in(1, 65535)),
    "bind": Key("local address to serve on and announce from", _text),
    "broadcast": Key("addresses to announce to", _texts),
    "peers": Key("peers to announce to by unicast, HOST[:PORT]", _peers),
    "interval": Key("seconds between announcements", _float_in(0.05, 3600)),
    "chunk-timeout": Key("seconds a chunk may take", _float_in(0.1, 3600)),
    "control-port": Key("port of the control API and web page", _int_in(0, 65535)),
    "secret-file": Key("file holding a private swarm's secret", _path),
    "download-dir": Key("where downloads go", _path),
    "upload-limit": Key("bytes per second all uploads may send", _rate),
    "legacy": Key("also speak the original scripts' formats", _flag),
    "legacy-port": Key("TCP port of the seed-compatible chunk server", _int_in(0, 65535)),
    "ipv6": Key("also find peers and serve over IPv6 (with the wildcard bind)", _flag),
    "mdns": Key("also advertise and find peers by mDNS/DNS-SD", _flag),
    "localsend": Key("also receive like a LocalSend device", _flag),
    "localsend-port": Key("LocalSend's TCP (HTTPS) and UDP port", _int_in(1, 65535)),
    "localsend-group": Key("where LocalSend announcements go", _text),
    "accept": Key("which LocalSend offers are taken: ask, pin or all", _accept),
    "pin": Key("the PIN LocalSend senders must give", _text),
    "bittorrent": Key("also be a BitTorrent peer (seed every share, LSD on the LAN)", _flag),
    "bittorrent-port": Key("TCP/UDP port of the BitTorrent peer", _int_in(0, 65535)),
    "dht": Key("with bittorrent: also join the BitTorrent DHT", _flag),
    "trackers": Key("with bittorrent: BitTorrent tracker URLs to announce to", _texts),
}
"""Every key of the config file (the `run` options' long names)."""


def option_key(option: str) -> str:
    """The config key of an option name: `discovery_port` -> `discovery-port`."""
    return option.replace("_", "-")


def _option(key: str) -> str:
    return key.replace("-", "_")


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key.replace("_", "-").lower(), KEYS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(KEYS)}"


_KEY_LINE = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*[=.]""")


def _key_lines(text: str) -> dict[str, int]:
    """The line of each top-level key (tomllib keeps no positions)."""
    found: dict[str, int] = {}
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = True
            name = stripped.strip("[]").split(".")[0].strip().strip("\"'")
            found.setdefault(name, number)
            continue
        match = _KEY_LINE.match(line)
        if match and not in_table:
            found.setdefault(next(g for g in match.groups() if g is not None), number)
    return found


def _toml_problem(message: str) -> str:
    """tomllib's 'What (at line 3, column 8)' as ', line 3: not valid TOML: What (column 8)'."""
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message)
    if match is None:
        return f": not valid TOML: {message}"
    what, line, column = match.groups()
    return f", line {line}: not valid TOML: {what} (column {column})"
