"""`swarmshare doctor`: why peers do not find each other, each finding with its remedy.

The checks, in order: this host's interfaces (none usable; several subnets), the discovery and
peer ports (taken by another program), the firewall rules that can be read (nftables, iptables,
ufw), then one solicit sent the way `run` sends it, listened to for a few seconds: who answered
by broadcast, who only by unicast (broadcast dropped on the way, or another subnet), whether this
host's own broadcast came back to it (a firewall here), whether each peer that answered can be
reached on its HTTP port, and, in a private swarm, how far its clock is from ours. With the
wildcard bind, the solicit also goes to IPv6 discovery's link-local multicast group on each IPv6
interface, and the peers that answer that way are reported apart (an IPv6-only LAN works so).

The probe sends only where `run` would: the broadcast targets and --peer addresses of the
settings, and TCP connections to the peers that answered.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import selectors
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swarmshare.app.swarm import uses_ipv6
from swarmshare.core.announce import (
    Announcement,
    AnnouncementError,
    decode_announcement,
    decode_private,
    encode_private,
    is_native,
)
from swarmshare.core.auth import MAX_SKEW_SECONDS, derive_key
from swarmshare.limits import MAX_DATAGRAM_BYTES
from swarmshare.net.discovery import DISCOVERY_GROUP_V6
from swarmshare.net.interfaces import (
    Ipv6Interface,
    broadcast_addresses,
    ipv4_interfaces,
    ipv6_interfaces,
    scoped,
)
from swarmshare.settings import Settings

OK, WARNING, PROBLEM = "ok", "warning", "problem"
CONNECT_TIMEOUT_SECONDS = 2.0
FIREWALL_READ_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Finding:
    """One thing the doctor found: how bad, what, and what to do about it."""

    level: str
    """ok, warning or problem."""
    check: str
    """Which check: interfaces, ports, firewall, broadcast, peers, clock."""
    message: str
    remedy: str = ""

    def as_json(self) -> dict[str, str]:
        """The finding as JSON for `doctor --json`."""
        return asdict(self)


@dataclass
class Heard:
    """A peer that a probe heard from."""

    peer_id: str
    name: str
    address: str
    port: int
    by_unicast_only: bool = True
    by_ipv6: bool = False
    """It answered over IPv6 only (not over IPv4)."""
    over_ipv6: bool = False
    """It answered over IPv6 (maybe over IPv4 too)."""
    skew_seconds: float | None = None


@dataclass
class ProbeResult:
    """What one solicit brought back."""

    targets: list[str]
    unicast: list[tuple[str, int]]
    ipv6: list[Ipv6Interface] = field(default_factory=list)
    own_echo: bool = False
    heard: dict[str, Heard] = field(default_factory=dict)
    send_errors: list[str] = field(default_factory=list)


def diagnose(settings: Settings, wait: float, daemon_running: bool) -> list[Finding]:
    """Every check, in order (`daemon_running`: this home's peer holds its ports)."""
    interfaces = ipv4_interfaces()
    ipv6 = ipv6_interfaces() if uses_ipv6(settings) else []
    findings = interface_findings(interfaces, ipv6)
    findings += port_findings(settings, daemon_running)
    findings += firewall_findings(read_firewall(), settings.discovery_port, settings.port)
    result = probe(settings, wait, ipv6)
    findings += probe_findings(result, settings, interfaces, wait)
    findings += ipv6_findings(result, settings)
    findings += reachability_findings(result)
    if settings.secret is not None:
        findings += clock_findings(result)
    return findings


def interface_findings(
    interfaces: list[tuple[str, ipaddress.IPv4Interface]],
    ipv6: list[Ipv6Interface] | None = None,
) -> list[Finding]:
    """No usable interface; one subnet (fine); several subnets (peers on each are apart); the
    IPv6 interfaces discovery multicasts on (`ipv6`), which alone will do."""
    v6 = (
        [
            Finding(
                OK,
                "ipv6",
                f"IPv6 link-local on {_names(ipv6)}: discovery also multicasts to"
                f" {DISCOVERY_GROUP_V6} there"
                + (
                    "" if interfaces else "; no IPv4 address but loopback's: IPv6 only, which works"
                ),
            )
        ]
        if ipv6
        else []
    )
    if not interfaces and v6:
        return v6
    if not interfaces:
        return [
            Finding(
                PROBLEM,
                "interfaces",
                "no usable network interface: no IPv4 address but loopback's",
                "connect this machine to the network (cable or Wi-Fi) and check it has an"
                " address: ip -4 addr",
            )
        ]
    listed = ", ".join(f"{name} {interface}" for name, interface in interfaces)
    subnets = {interface.network for _name, interface in interfaces}
    if len(subnets) == 1:
        return [Finding(OK, "interfaces", f"one IPv4 subnet: {listed}"), *v6]
    return [
        Finding(
            WARNING,
            "interfaces",
            f"interfaces on {len(subnets)} subnets: {listed}; announcements go out on each, but"
            " a peer is found only by the others on its own subnet",
            'to reach a peer of another subnet, name it: --peer HOST, or peers = ["HOST"]'
            " in the config file",
        ),
        *v6,
    ]


def port_findings(settings: Settings, daemon_running: bool) -> list[Finding]:
    """Whether `run` could take its UDP discovery port and TCP peer port."""
    if daemon_running:
        return [
            Finding(
                OK,
                "ports",
                f"the peer of this home runs and holds UDP {settings.discovery_port} and its"
                " TCP port",
            )
        ]
    findings = []
    udp = _try_bind(socket.SOCK_DGRAM, "", settings.discovery_port, reuse=True)
    if udp is None:
        findings.append(
            Finding(OK, "ports", f"discovery port UDP {settings.discovery_port} is free")
        )
    else:
        findings.append(
            Finding(
                PROBLEM,
                "ports",
                f"discovery port UDP {settings.discovery_port} is taken"
                f"{_owners('udp', settings.discovery_port)}: {udp}",
                "stop that program, or choose another port on every peer: --discovery-port N"
                " (discovery-port = N in the config file)",
            )
        )
    if settings.port:
        tcp = _try_bind(socket.SOCK_STREAM, settings.bind, settings.port, reuse=True)
        if tcp is None:
            findings.append(Finding(OK, "ports", f"peer port TCP {settings.port} is free"))
        else:
            findings.append(
                Finding(
                    PROBLEM,
                    "ports",
                    f"peer port TCP {settings.port} is taken{_owners('tcp', settings.port)}: {tcp}",
                    "stop that program, or serve on another port: --port N (port = N in the"
                    " config file; announcements carry it, so other peers follow)",
                )
            )
    if settings.bittorrent and settings.bittorrent_port:
        findings.append(_bittorrent_port_finding(settings))
    return findings


def _bittorrent_port_finding(settings: Settings) -> Finding:
    """Whether `run --bittorrent` could take its BitTorrent port: TCP, and UDP for uTP."""
    port = settings.bittorrent_port
    for proto, kind in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
        why = _try_bind(kind, settings.bind, port, reuse=kind == socket.SOCK_STREAM)
        if why is not None:
            return Finding(
                PROBLEM,
                "ports",
                f"BitTorrent port {port} is taken ({proto.upper()}){_owners(proto, port)}: {why}",
                "stop that program, or choose another port: --bittorrent-port N"
                " (bittorrent-port = N in the config file)",
            )
    return Finding(OK, "ports", f"BitTorrent port TCP/UDP {port} is free")


def read_firewall() -> dict[str, str]:
    """The rules each firewall tool shows, by tool (a tool missing or refusing: not listed)."""
    commands = {
        "nftables": ["nft", "list", "ruleset"],
        "iptables": ["iptables-save"],
        "ufw": ["ufw", "status"],
    }
    found = {}
    for tool, argv in commands.items():
        if shutil.which(argv[0]) is None:
            continue
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=FIREWALL_READ_TIMEOUT_SECONDS
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0:
            found[tool] = proc.stdout
    return found


def firewall_findings(rules: dict[str, str], udp_port: int, tcp_port: int) -> list[Finding]:
    """Rules that drop or reject the discovery or peer port, and input chains that drop by
    default; `rules` is read_firewall()'s."""
    findings = []
    wanted = {"udp": udp_port, "tcp": tcp_port}
    what = {"udp": "discovery", "tcp": "the peer server"}
    for tool, text in rules.items():
        for proto, port, rule, where in _blocking_rules(tool, text, wanted):
            findings.append(
                Finding(
                    PROBLEM,
                    "firewall",
                    f"{tool} drops {proto.upper()} {port} ({what[proto]}): `{rule}`{where}",
                    _firewall_remedy(tool, proto, port),
                )
            )
        for chain in _dropping_input_chains(tool, text):
            findings.append(
                Finding(
                    WARNING,
                    "firewall",
                    f"{tool}: the input chain {chain} drops what no rule accepts; make sure"
                    f" UDP {udp_port} and TCP {tcp_port} are accepted",
                    _firewall_remedy(tool, "udp", udp_port)
                    + "; and "
                    + _firewall_remedy(tool, "tcp", tcp_port),
                )
            )
    if not findings:
        read = ", ".join(rules) or "none readable (run as root to read them)"
        findings.append(
            Finding(OK, "firewall", f"no rule drops UDP {udp_port} or TCP {tcp_port} ({read})")
        )
    return findings


def probe(settings: Settings, wait: float, ipv6: list[Ipv6Interface] | None = None) -> ProbeResult:
    """Send one solicit the way `run` does (on the `ipv6` interfaces too) and collect what comes
    back for `wait` seconds."""
    targets = list(settings.broadcast) or broadcast_addresses()
    result = ProbeResult(targets=targets, unicast=list(settings.peers), ipv6=list(ipv6 or []))
    key = derive_key(settings.secret) if settings.secret else None
    me = secrets.token_hex(8)
    sel = selectors.DefaultSelector()
    sockets = []
    try:
        listener = _udp(("", settings.discovery_port))
        if listener is not None:
            sockets.append(listener)
            sel.register(listener, selectors.EVENT_READ, False)
        sender = _udp((settings.bind, 0))
        if sender is None:
            result.send_errors.append(f"cannot bind {settings.bind}")
            return result
        sockets.append(sender)
        sel.register(sender, selectors.EVENT_READ, True)
        ask = Announcement(me, 0, "swarmshare doctor", "0", settings.interval, solicit=True)
        destinations = [(t, settings.discovery_port) for t in targets] + result.unicast
        for address in destinations:
            try:
                data = (
                    ask.encode()
                    if key is None
                    else encode_private(ask, key, time.time(), _source(sender, address))
                )
                sender.sendto(data, address)
            except OSError as exc:
                result.send_errors.append(f"{address[0]}: {exc.strerror or exc}")
        if result.ipv6:
            sockets += _probe_ipv6(sel, result, ask, key, settings.discovery_port)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            for selected, _events in sel.select(left):
                sock = selected.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data, source = sock.recvfrom(MAX_DATAGRAM_BYTES + 1)
                except OSError:
                    continue
                sender_address = scoped(source[0], source[3]) if len(source) == 4 else source[0]
                _take(result, data, sender_address, bool(selected.data), me, key)
    finally:
        sel.close()
        for sock in sockets:
            sock.close()
    return result


def probe_findings(
    result: ProbeResult,
    settings: Settings,
    interfaces: list[tuple[str, ipaddress.IPv4Interface]],
    wait: float,
) -> list[Finding]:
    """Who answered the solicit, and how; what that says about broadcast on this network."""
    findings = []
    lan_first = sorted(result.targets, key=lambda t: t.startswith("127."))
    targets = ", ".join(lan_first) or "no broadcast address"
    port = settings.discovery_port
    for error in result.send_errors:
        findings.append(
            Finding(
                PROBLEM,
                "broadcast",
                f"the solicit could not be sent to {error}",
                "check the address (--broadcast, --peer, --bind) and that the interface is up",
            )
        )
    if not result.own_echo and result.targets and not result.send_errors:
        findings.append(
            Finding(
                PROBLEM,
                "broadcast",
                f"this host's own broadcast to {targets} on UDP {port} did not come back to it:"
                " something on this host drops UDP {port}".replace("{port}", str(port)),
                f"let UDP {port} in and out in this host's firewall (see the firewall findings)",
            )
        )
    heard_v4 = [h for h in result.heard.values() if not h.by_ipv6]
    by_broadcast = [h for h in heard_v4 if not h.by_unicast_only]
    unicast_only = [h for h in heard_v4 if h.by_unicast_only]
    if by_broadcast:
        names = ", ".join(_who(h) for h in by_broadcast)
        findings.append(
            Finding(
                OK,
                "broadcast",
                f"{len(by_broadcast)} peer(s) answered the broadcast to"
                f" {targets} on UDP {port}: {names}",
            )
        )
    local = [i.network for _n, i in interfaces]
    for heard in unicast_only:
        address = ipaddress.ip_address(heard.address)
        if any(address in net for net in local):
            if by_broadcast:
                continue  # broadcast passes; this one simply answered the unicast first
            findings.append(
                Finding(
                    PROBLEM,
                    "broadcast",
                    f"broadcast does not come back: {_who(heard)} answered by unicast, but no"
                    f" peer answered the broadcast to {targets} on UDP {port}: the network"
                    " drops broadcast between them (Wi-Fi client isolation, a switch or"
                    " bridge filter, or that host's firewall)",
                    'keep naming the peers by unicast: peers = ["HOST", ...] in the config'
                    " file (or --peer HOST); or allow broadcast on the access point or switch",
                )
            )
        else:
            findings.append(
                Finding(
                    WARNING,
                    "broadcast",
                    f"{_who(heard)} is on another subnet (none of this host's interfaces is on"
                    " it): it answered by unicast; broadcast does not cross routers",
                    f'keep it named by unicast on both sides: peers = ["{heard.address}"] in'
                    " the config file (or --peer), and this host in its peers",
                )
            )
    if not result.heard:
        findings.append(
            Finding(
                PROBLEM,
                "broadcast",
                f"no peer answered the solicit sent to {targets} on UDP {port} within"
                f" {wait:g} s"
                + (
                    f" (nor the unicast to {', '.join(a for a, _p in result.unicast)})"
                    if result.unicast
                    else ""
                ),
                "start `swarmshare run` on another machine of this network; if one runs, the"
                " network or its firewall drops UDP broadcast: name it with --peer HOST (or"
                ' peers = ["HOST"] in the config file), and check its firewall',
            )
        )
    return findings


def ipv6_findings(result: ProbeResult, settings: Settings) -> list[Finding]:
    """Who answered the solicit over IPv6 multicast (when it went out over IPv6)."""
    if not result.ipv6:
        return []
    where = f"{DISCOVERY_GROUP_V6} on {_names(result.ipv6)}, UDP {settings.discovery_port}"
    by_ipv6 = [h for h in result.heard.values() if h.over_ipv6]
    if by_ipv6:
        names = ", ".join(_who(h) for h in by_ipv6)
        return [
            Finding(OK, "ipv6", f"{len(by_ipv6)} peer(s) answered over IPv6 ({where}): {names}")
        ]
    if result.heard:  # IPv4 works; peers without IPv6, or an older swarmshare
        return [Finding(OK, "ipv6", f"no peer answered over IPv6 ({where}); they did over IPv4")]
    return [
        Finding(
            WARNING,
            "ipv6",
            f"no peer answered the solicit over IPv6 multicast ({where}) either",
            "on an IPv6-only network, check that the other peers run with IPv6 on (--ipv6, the"
            " default, with --bind 0.0.0.0) and that their firewall lets UDP"
            f" {settings.discovery_port} in over IPv6",
        )
    ]


def reachability_findings(result: ProbeResult) -> list[Finding]:
    """Whether each serving peer that answered can be reached on its HTTP port."""
    findings = []
    for heard in result.heard.values():
        if not heard.port:
            continue
        try:
            with socket.create_connection(
                (heard.address, heard.port), timeout=CONNECT_TIMEOUT_SECONDS
            ):
                pass
        except OSError as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            findings.append(
                Finding(
                    PROBLEM,
                    "peers",
                    f"{_who(heard)} answered on UDP but its HTTP port TCP {heard.port} cannot"
                    f" be reached ({reason}): nothing can be fetched from it",
                    f"on that machine, let TCP {heard.port} in (its firewall, e.g. ufw allow"
                    f" {heard.port}/tcp), or check that `swarmshare run` serves on that address",
                )
            )
        else:
            findings.append(Finding(OK, "peers", f"{_who(heard)} serves on TCP {heard.port}"))
    return findings


def clock_findings(result: ProbeResult) -> list[Finding]:
    """Peers of a private swarm whose clock is further off than the swarm allows."""
    findings = []
    for heard in result.heard.values():
        if heard.skew_seconds is None:
            continue
        if abs(heard.skew_seconds) > MAX_SKEW_SECONDS:
            findings.append(
                Finding(
                    PROBLEM,
                    "clock",
                    f"{_who(heard)}'s clock is {heard.skew_seconds:+.0f} s from this one's; a"
                    f" private swarm allows {MAX_SKEW_SECONDS:.0f} s, so each drops the other's"
                    " announcements and requests",
                    "turn on time synchronisation on both machines: timedatectl set-ntp true",
                )
            )
        else:
            findings.append(
                Finding(OK, "clock", f"{_who(heard)}'s clock is {heard.skew_seconds:+.1f} s off")
            )
    return findings


def _who(heard: Heard) -> str:
    return f"peer {json.dumps(heard.name)} at {heard.address}"


def _take(
    result: ProbeResult, data: bytes, address: str, answer: bool, me: str, key: bytes | None
) -> None:
    """One datagram that came back: our own solicit, or another peer's announcement."""
    skew = None
    if key is not None:
        try:
            ann = decode_private(data, key, time.time(), address.partition("%")[0])
            skew = _timestamp(data) - time.time()
        except AnnouncementError as exc:
            if "stale" not in str(exc):
                return
            skew = _timestamp(data) - time.time()
            try:  # signed with our secret, only its time is off: still a peer we heard
                obj = json.loads(data)
                ann = Announcement(obj["id"], int(obj["port"]), str(obj["name"]), "0", 1.0)
            except (ValueError, KeyError, TypeError):
                return
    elif is_native(data):
        try:
            ann = decode_announcement(data)
        except AnnouncementError:
            return
    else:
        return
    if ann.peer_id == me:
        result.own_echo = True
        return
    heard = result.heard.get(ann.peer_id)
    if heard is None:
        heard = Heard(ann.peer_id, ann.name, address, ann.port, by_ipv6=":" in address)
        result.heard[ann.peer_id] = heard
    if ann.port:
        heard.port = ann.port
    if skew is not None:
        heard.skew_seconds = skew
    if ":" in address:
        heard.over_ipv6 = True
        return  # by IPv6 multicast (by_ipv6 stays as it is: True unless heard over IPv4)
    if heard.by_ipv6:  # heard over IPv4 too: report it there, at its IPv4 address
        heard.by_ipv6, heard.address = False, address
    if not answer or address not in {a for a, _p in result.unicast}:
        heard.by_unicast_only = False


def _timestamp(data: bytes) -> float:
    try:
        ts = json.loads(data).get("ts")
    except ValueError:
        return time.time()
    return float(ts) if isinstance(ts, int | float) else time.time()


def _source(sock: socket.socket, address: tuple[str, int]) -> str:
    bound = str(sock.getsockname()[0])
    if bound != "0.0.0.0":
        return bound
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_sock:
        try:
            probe_sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            probe_sock.connect(address)
            return str(probe_sock.getsockname()[0])
        except OSError:
            return "0.0.0.0"


def _probe_ipv6(
    sel: selectors.BaseSelector,
    result: ProbeResult,
    ask: Announcement,
    key: bytes | None,
    port: int,
) -> list[socket.socket]:
    """Listen on the IPv6 group and send the solicit to it on each interface; the sockets."""
    opened = []
    group = socket.inet_pton(socket.AF_INET6, DISCOVERY_GROUP_V6)
    for bound_port, answers in ((port, False), (0, True)):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", bound_port))
        except OSError as exc:
            sock.close()
            result.send_errors.append(f"[::]:{bound_port}: {exc.strerror or exc}")
            continue
        if not answers:
            for interface in result.ipv6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.IPPROTO_IPV6,
                        socket.IPV6_JOIN_GROUP,
                        group + struct.pack("@I", interface.index),
                    )
        opened.append(sock)
        sel.register(sock, selectors.EVENT_READ, answers)
        if answers:
            for interface in result.ipv6:
                data = (
                    ask.encode()
                    if key is None
                    else encode_private(ask, key, time.time(), interface.link_local)
                )
                try:
                    sock.sendto(data, (DISCOVERY_GROUP_V6, port, 0, interface.index))
                except OSError as exc:
                    result.send_errors.append(f"{interface.name}: {exc.strerror or exc}")
    return opened


def _names(interfaces: list[Ipv6Interface] | None) -> str:
    return ", ".join(i.name for i in interfaces or [])


def _udp(address: tuple[str, int]) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        return None
    return sock


def _try_bind(kind: int, address: str, port: int, *, reuse: bool) -> str | None:
    """None if `run` could bind there; else why not."""
    with socket.socket(socket.AF_INET, kind) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _owners(proto: str, port: int) -> str:
    """' by pid N (program)' for the processes holding a local port, where /proc tells."""
    inodes = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                if proto == "tcp" and fields[3] != "0A":  # only listening sockets
                    continue
                inodes.add(fields[9])
    owners = []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, _listdir("/proc")):
        for fd in _listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in wanted:
                owners.append(f"pid {pid} ({_comm(pid)})")
                break
    return f" by {', '.join(owners)}" if owners else ""


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()
    except OSError:
        return "?"


_NFT_PORTS = re.compile(r"\b(udp|tcp|th) dport (\{[^}]*\}|[\d-]+)")
_IPT_PORTS = re.compile(r"-p (udp|tcp)\b.*?--dports? ([\d,:]+)")
_UFW_LINE = re.compile(r"^(\d+(?::\d+)?(?:,\d+)*)(?:/(udp|tcp))?\s+(DENY|REJECT)\b", re.I)


def _blocking_rules(
    tool: str, text: str, wanted: dict[str, int]
) -> list[tuple[str, int, str, str]]:
    """(proto, port, rule, where) for each rule of `text` dropping a wanted port."""
    found = []
    table = chain = ""
    for raw in text.splitlines():
        line = raw.strip()
        if tool == "nftables":
            if line.startswith("table "):
                table = line.removeprefix("table ").rstrip(" {")
            elif line.startswith("chain "):
                chain = line.removeprefix("chain ").rstrip(" {")
            if not re.search(r"\b(drop|reject)\b", line):
                continue
            for match in _NFT_PORTS.finditer(line):
                for proto in ("udp", "tcp") if match[1] == "th" else (match[1],):
                    if _port_in(match[2], wanted[proto], "-", ","):
                        found.append(
                            (proto, wanted[proto], line, f" (table {table}, chain {chain})")
                        )
        elif tool == "iptables":
            if not re.search(r"-j (DROP|REJECT)\b", line):
                continue
            ipt = _IPT_PORTS.search(line)
            if ipt and _port_in(ipt[2], wanted[ipt[1]], ":", ","):
                found.append((ipt[1], wanted[ipt[1]], line, ""))
        elif tool == "ufw":
            ufw = _UFW_LINE.match(line)
            if ufw:
                for proto in (ufw[2].lower(),) if ufw[2] else ("udp", "tcp"):
                    if _port_in(ufw[1], wanted[proto], ":", ","):
                        found.append((proto, wanted[proto], line, ""))
    return found


def _port_in(spec: str, port: int, dash: str, comma: str) -> bool:
    """Whether `port` is in a port list like '{ 5000, 5001-5003 }' or '5000:5010,22'."""
    for part in spec.strip("{} ").split(comma):
        part = part.strip()
        low, _sep, high = part.partition(dash)
        try:
            if int(low) <= port <= int(high or low):
                return True
        except ValueError:
            continue
    return False


def _dropping_input_chains(tool: str, text: str) -> list[str]:
    if tool == "nftables":
        chains = re.findall(r"chain (\S+) \{\s*type filter hook input [^;]*;\s*policy drop;", text)
        return list(chains)
    if tool == "iptables":
        return ["INPUT"] if re.search(r"^:INPUT DROP\b", text, re.M) else []
    if tool == "ufw":
        return []  # ufw's default deny shows in `ufw status verbose` only; rules above cover it
    return []


def _firewall_remedy(tool: str, proto: str, port: int) -> str:
    if tool == "ufw":
        return f"ufw allow {port}/{proto}"
    if tool == "iptables":
        return f"iptables -I INPUT -p {proto} --dport {port} -j ACCEPT (or remove the rule)"
    return (
        f"remove the rule, or accept before it: nft insert rule TABLE CHAIN {proto} dport"
        f" {port} accept"
    )
