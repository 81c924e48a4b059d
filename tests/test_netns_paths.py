"""Discovery's other paths on real hosts (network namespaces): mDNS/DNS-SD where broadcast is
dropped, IPv6 link-local multicast on an IPv6-only LAN, and one peer however it was found.
mDNS runs only here (the lab has no way out). Skipped, with the reason, where namespaces cannot
be made (not root)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers import same_file, wait_until, write_test_file
from netlab import NetLab, can_build, lab_fixture, sh

MIB = 1 << 20
REASON = can_build()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

# The bridge stops forwarding IPv4 broadcast (ARP and multicast still pass), as a network that
# filters broadcast does.
DROP_BROADCAST = (
    "table bridge lab {\n chain filter {\n  type filter hook forward priority 0;\n"
    "  ether daddr ff:ff:ff:ff:ff:ff ether type ip counter drop\n }\n}\n"
)


lab = lab_fixture()


def _json(lab: NetLab, host: str, *args: str) -> Any:
    proc = lab.cli(host, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _wait_ready(lab: NetLab, host: str) -> None:
    wait_until(lambda: (lab.hosts[host].home / "home" / "control.json").exists(), timeout=30)


def _nft(netns: str, rules: str) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=rules,
        text=True,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def _get(lab: NetLab, host: str, name: str, out: Path) -> dict[str, Any]:
    out.mkdir(exist_ok=True)
    proc = lab.cli(host, "get", name, "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_mdns_finds_peers_where_broadcast_is_dropped(lab: NetLab, tmp_path: Path) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft (nftables) is not installed: .ci/run installs it")
    lab.build({"a": 1, "b": 1}, mdns=True)
    _nft(lab.router, DROP_BROADCAST)
    src = tmp_path / "slides.pdf"
    write_test_file(src, 3 * MIB, seed=21)
    lab.start("a", "run", "--name", "a")
    lab.start("b", "run", "--name", "b")
    for name in "ab":
        _wait_ready(lab, name)
    assert lab.cli("a", "share", str(src)).returncode == 0
    wait_until(lambda: any(i["name"] == "slides.pdf" for i in _json(lab, "b", "ls")), timeout=30)
    peers = _json(lab, "b", "peers")
    assert [(p["name"], p["address"]) for p in peers] == [("a", lab.hosts["a"].address)]
    status = _json(lab, "b", "status")
    assert status["mdns"]["on"] and status["mdns"]["sightings"] >= 1
    summary = _get(lab, "b", "slides.pdf", tmp_path / "out")
    assert same_file(tmp_path / "out" / "slides.pdf", src)
    assert set(summary["by_peer"]) == {lab.hosts["a"].address}
    # Broadcast really was dropped on the way: the rule counted a's and b's announcements.
    ruleset = sh("ip", "netns", "exec", lab.router, "nft", "list", "ruleset").stdout
    assert "counter packets 0 " not in ruleset, ruleset


def test_ipv6_only_lan(lab: NetLab, tmp_path: Path) -> None:
    lab.build({"a": 1, "b": 1}, ipv4=False, ipv6=True)  # and no mDNS: multicast discovery alone
    src = tmp_path / "video.mkv"
    write_test_file(src, 5 * MIB, seed=22)
    lab.start("a", "run", "--name", "a")
    lab.start("b", "run", "--name", "b")
    for name in "ab":
        _wait_ready(lab, name)
    assert lab.cli("a", "share", str(src)).returncode == 0
    wait_until(lambda: any(i["name"] == "video.mkv" for i in _json(lab, "b", "ls")), timeout=30)
    peers = _json(lab, "b", "peers")
    assert [(p["name"], p["address"]) for p in peers] == [("a", f"{lab.hosts['a'].address6}%eth0")]
    assert _json(lab, "b", "status")["ipv6"] == ["eth0"]
    summary = _get(lab, "b", "video.mkv", tmp_path / "out")
    assert same_file(tmp_path / "out" / "video.mkv", src)
    assert set(summary["by_peer"]) == {f"{lab.hosts['a'].address6}%eth0"}


def test_ipv6_only_lan_private_swarm(lab: NetLab, tmp_path: Path) -> None:
    lab.build({"a": 1, "b": 1}, ipv4=False, ipv6=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("correct horse battery staple\n")
    src = tmp_path / "notes.txt"
    write_test_file(src, 1 * MIB, seed=23)
    for name in "ab":
        lab.start(name, "run", "--name", name, "--secret-file", str(secret))
    for name in "ab":
        _wait_ready(lab, name)
    assert lab.cli("a", "share", str(src)).returncode == 0
    wait_until(lambda: any(i["name"] == "notes.txt" for i in _json(lab, "b", "ls")), timeout=30)
    _get(lab, "b", "notes.txt", tmp_path / "out")
    assert same_file(tmp_path / "out" / "notes.txt", src)


def test_a_peer_found_three_ways_is_one_peer(lab: NetLab) -> None:
    lab.build({"a": 1, "b": 1}, ipv6=True, mdns=True)  # broadcast, IPv6 multicast and mDNS
    lab.start("a", "run", "--name", "a")
    lab.start("b", "run", "--name", "b")
    for name in "ab":
        _wait_ready(lab, name)

    def found_every_way() -> bool:
        status = _json(lab, "b", "status")
        discovery = status["discovery"]
        heard = discovery["from_others_ipv4"] and discovery["from_others_ipv6"]
        return bool(heard and status["mdns"]["sightings"] >= 1)

    wait_until(found_every_way, timeout=30)
    peers = _json(lab, "b", "peers")
    assert [p["name"] for p in peers] == ["a"], peers
    assert peers[0]["address"] in (lab.hosts["a"].address, f"{lab.hosts['a'].address6}%eth0")


def test_doctor_on_an_ipv6_only_lan(lab: NetLab) -> None:
    lab.build({"a": 1, "b": 1}, ipv4=False, ipv6=True)
    lab.start("a", "run", "--name", "a")
    _wait_ready(lab, "a")
    proc = lab.cli("b", "doctor", "--wait", "2")
    assert "Traceback" not in proc.stderr, proc.stderr
    out, a6 = proc.stdout, f"{lab.hosts['a'].address6}%eth0"
    assert (
        "ok: ipv6: IPv6 link-local on eth0: discovery also multicasts to ff12::7377:6172:6d73"
        " there; no IPv4 address but loopback's: IPv6 only, which works" in out
    ), out
    assert (
        "ok: ipv6: 1 peer(s) answered over IPv6 (ff12::7377:6172:6d73 on eth0, UDP 5001):"
        f' peer "a" at {a6}' in out
    ), out
    assert f'ok: peers: peer "a" at {a6} serves on TCP 5001' in out, out
    assert "no usable network interface" not in out and proc.returncode == 0, out
    proc = lab.cli("b", "doctor", "--wait", "1", "--no-ipv6")  # as before IPv6: nothing found
    assert (
        proc.returncode == 1 and "problem: interfaces: no usable network interface" in proc.stdout
    )
