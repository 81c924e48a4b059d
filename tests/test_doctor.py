"""`swarmshare doctor` on loopback: ports taken, firewall rules read, peers that answer and serve.
(Its diagnoses of real networks are tested in the namespace lab: tests/test_netns.py.)"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
import time
from pathlib import Path

from swarmshare.app.doctor import (
    OK,
    PROBLEM,
    WARNING,
    ProbeResult,
    firewall_findings,
    interface_findings,
    ipv6_findings,
)
from swarmshare.app.loopback import spare_port
from swarmshare.core.announce import Announcement, encode_private
from swarmshare.core.auth import derive_key
from swarmshare.net.interfaces import Ipv6Interface
from swarmshare.settings import Settings

from conftest import Swarm
from helpers import cli

NFT = """\
table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport 5001 counter packets 3 bytes 300 drop
		tcp dport { 22, 5000-5002 } reject
	}
}
table ip other {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established accept
	}
}
"""
IPTABLES = """\
*filter
:INPUT DROP [0:0]
-A INPUT -p udp -m udp --dport 5001 -j DROP
-A INPUT -p tcp -m multiport --dports 80,5001 -j REJECT --reject-with icmp-port-unreachable
-A INPUT -p tcp -m tcp --dport 22 -j DROP
COMMIT
"""
UFW = """\
Status: active

To                         Action      From
--                         ------      ----
5001/udp                   DENY        Anywhere
22                         ALLOW       Anywhere
5001                       REJECT      Anywhere
"""


def _lines(findings: list) -> list[str]:  # type: ignore[type-arg]
    return [f"{f.level}: {f.message}" for f in findings]


def test_firewall_rules_dropping_either_port_are_named_with_their_remedy() -> None:
    nft = firewall_findings({"nftables": NFT}, 5001, 5001)
    assert [f.level for f in nft] == [PROBLEM, PROBLEM, WARNING]
    assert nft[0].message.startswith(
        "nftables drops UDP 5001 (discovery): `udp dport 5001 counter packets 3 bytes 300 drop`"
        " (table inet filter, chain input)"
    )
    assert "nftables drops TCP 5001 (the peer server)" in nft[1].message
    assert "the input chain input drops what no rule accepts" in nft[2].message
    ipt = _lines(firewall_findings({"iptables": IPTABLES}, 5001, 5001))
    assert len(ipt) == 3 and "iptables drops UDP 5001" in ipt[0] and "TCP 5001" in ipt[1]
    assert "input chain INPUT drops" in ipt[2]
    ufw = firewall_findings({"ufw": UFW}, 5001, 5001)
    assert [f.message.split(":")[0] for f in ufw] == [
        "ufw drops UDP 5001 (discovery)",
        "ufw drops UDP 5001 (discovery)",
        "ufw drops TCP 5001 (the peer server)",
    ]
    assert ufw[0].remedy == "ufw allow 5001/udp"
    assert [f.level for f in firewall_findings({"nftables": NFT}, 6001, 6001)] == [WARNING]
    clean = firewall_findings({"nftables": "table ip t {\n}\n"}, 5001, 5001)
    assert _lines(clean) == ["ok: no rule drops UDP 5001 or TCP 5001 (nftables)"]


def test_no_interface_and_several_subnets_are_explained() -> None:
    (none,) = interface_findings([])
    assert none.level == PROBLEM and none.message.startswith("no usable network interface")
    two = interface_findings(
        [
            ("eth0", ipaddress.IPv4Interface("10.0.0.2/24")),
            ("wlan0", ipaddress.IPv4Interface("192.168.1.5/24")),
        ]
    )
    assert two[0].level == WARNING
    assert two[0].message.startswith(
        "interfaces on 2 subnets: eth0 10.0.0.2/24, wlan0 192.168.1.5/24"
    )
    assert "--peer HOST" in two[0].remedy


def _doctor(home: Path, *args: str) -> tuple[int, list[dict[str, str]]]:
    proc = cli(home, "doctor", "--json", "--wait", "1", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_ports_taken_by_another_program_are_named_with_the_program(tmp_path: Path) -> None:
    udp_port = spare_port()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind(("", udp_port))  # no SO_REUSEADDR: nobody may share it
        tcp.bind(("127.0.0.20", 0))
        tcp.listen()
        tcp_port = tcp.getsockname()[1]
        code, findings = _doctor(
            tmp_path,
            "--bind",
            "127.0.0.20",
            "--broadcast",
            "127.255.255.255",
            "--discovery-port",
            str(udp_port),
            "--port",
            str(tcp_port),
        )
    assert code == 1
    ports = [f for f in findings if f["check"] == "ports"]
    assert [f["level"] for f in ports] == ["problem", "problem"]
    assert ports[0]["message"].startswith(f"discovery port UDP {udp_port} is taken by pid ")
    assert "(python" in ports[0]["message"]
    assert ports[1]["message"].startswith(f"peer port TCP {tcp_port} is taken by pid ")
    assert "--port N" in ports[1]["remedy"]


def test_the_bittorrent_port_is_checked_when_bittorrent_is_on(tmp_path: Path) -> None:
    """From the command line or the config file; a port taken for TCP or for UDP (uTP) is a
    problem with its remedy; without BitTorrent it is not looked at."""
    common = ["--bind", "127.0.0.20", "--broadcast", "127.255.255.255", "--port", "0",
              "--discovery-port", str(spare_port())]  # fmt: skip
    free = spare_port()
    code, findings = _doctor(tmp_path, *common, "--bittorrent", "--bittorrent-port", str(free))
    bt = [f for f in findings if "BitTorrent" in f["message"]]
    assert [(f["level"], f["check"]) for f in bt] == [("ok", "ports")]
    assert str(free) in bt[0]["message"]
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as taker:
            taker.bind(("127.0.0.20", 0))
            if kind == socket.SOCK_STREAM:
                taker.listen()
            taken = taker.getsockname()[1]
            code, findings = _doctor(tmp_path, *common, "--bittorrent", "--bittorrent-port",
                                     str(taken))  # fmt: skip
            assert code == 1
            (bad,) = [f for f in findings if "BitTorrent" in f["message"]]
            assert bad["level"] == "problem" and bad["check"] == "ports"
            assert bad["message"].startswith(f"BitTorrent port {taken} is taken")
            assert "(python" in bad["message"]
            assert "--bittorrent-port N" in bad["remedy"]
            config = tmp_path / "config.toml"
            config.write_text(f"bittorrent = true\nbittorrent-port = {taken}\n")
            code, findings = _doctor(tmp_path, "--config", str(config), *common)
            assert code == 1
            assert any(f"BitTorrent port {taken} is taken" in f["message"] for f in findings)
            code, findings = _doctor(tmp_path, *common, "--bittorrent-port", str(taken))
            assert not [f for f in findings if "BitTorrent" in f["message"]]


def test_a_peer_that_answers_and_serves_and_one_whose_port_is_closed(
    swarm: Swarm, tmp_path: Path
) -> None:
    swarm.start(2)
    # A fake peer on 127.0.0.3 answers the solicit, announcing a TCP port nothing listens on.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.3", 0))
        dead_port = closed.getsockname()[1]
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    fake.bind(("", swarm.discovery_port))
    answer = Announcement("0123456789abcdef", dead_port, "walled", "0", 30.0).encode()

    def answer_one_solicit() -> None:
        while True:
            data, source = fake.recvfrom(2048)
            if b'"sol":true' in data:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                    out.bind(("127.0.0.3", 0))
                    out.sendto(answer, source)
                return

    thread = threading.Thread(target=answer_one_solicit)
    thread.start()
    try:
        code, findings = _doctor(tmp_path, *swarm.discovery())
    finally:
        thread.join(30)
        fake.close()
    lines = [f"{f['level']}: {f['message']}" for f in findings]
    assert any(
        line.startswith("ok: 2 peer(s) answered the broadcast to 127.255.255.255") for line in lines
    ), lines
    assert any(line.startswith('ok: peer "peer2" at 127.0.0.2 serves on TCP ') for line in lines)
    assert (
        f'problem: peer "walled" at 127.0.0.3 answered on UDP but its HTTP port TCP {dead_port}'
        " cannot be reached (Connection refused)" in "\n".join(lines)
    ), lines
    assert code == 1


def test_a_private_swarm_peer_whose_clock_is_far_off(tmp_path: Path) -> None:
    port = spare_port()
    secret = "a long enough secret"
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    fake.bind(("", port))

    def answer_five_minutes_ahead() -> None:
        while True:
            data, source = fake.recvfrom(2048)
            if b'"sol":true' in data:
                ann = Announcement("0123456789abcdef", 0, "ahead", "0", 30.0)
                signed = encode_private(ann, derive_key(secret), time.time() + 300, "127.0.0.3")
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                    out.bind(("127.0.0.3", 0))
                    out.sendto(signed, source)
                return

    thread = threading.Thread(target=answer_five_minutes_ahead)
    thread.start()
    try:
        discovery = ["--broadcast", "127.255.255.255", "--discovery-port", str(port)]
        code, findings = _doctor(tmp_path, *discovery, "--bind", "127.0.0.20", "--secret", secret)
    finally:
        thread.join(30)
        fake.close()
    (clock,) = [f for f in findings if f["check"] == "clock"]
    assert clock["level"] == "problem", findings
    assert re.match(r'peer "ahead" at 127.0.0.3\'s clock is \+(299|300) s from', clock["message"])
    assert "private swarm allows 60 s" in clock["message"]
    assert "timedatectl set-ntp true" in clock["remedy"]
    assert code == 1


def test_ipv6_interfaces_are_reported_and_alone_are_enough() -> None:
    eth0 = Ipv6Interface("eth0", 2, "fe80::1")
    (alone,) = interface_findings([], [eth0])
    assert alone.level == OK and alone.check == "ipv6"
    assert alone.message == (
        "IPv6 link-local on eth0: discovery also multicasts to ff12::7377:6172:6d73 there;"
        " no IPv4 address but loopback's: IPv6 only, which works"
    )
    both = interface_findings([("eth0", ipaddress.IPv4Interface("10.0.0.2/24"))], [eth0])
    assert [f.check for f in both] == ["interfaces", "ipv6"] and both[1].message.endswith("there")
    settings = Settings(home=Path("/nonexistent"))
    silent = ipv6_findings(ProbeResult(targets=[], unicast=[], ipv6=[eth0]), settings)
    assert silent[0].level == WARNING and "no peer answered the solicit over IPv6" in (
        silent[0].message
    )
    assert ipv6_findings(ProbeResult(targets=[], unicast=[]), settings) == []
