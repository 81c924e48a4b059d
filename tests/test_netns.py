"""Real hosts: swarmshare across network namespaces, with default discovery and ports, and with
links that fail. Skipped, with the reason, where namespaces cannot be made (not root)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import same_file, wait_until, write_test_file
from netlab import NetLab, can_build, lab_fixture, sh

MIB = 1 << 20
HERE = Path(__file__).parent
REASON = can_build()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


lab = lab_fixture()


def _ls(lab: NetLab, host: str, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    proc = lab.cli(host, "ls", "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _wait_ready(lab: NetLab, host: str) -> None:
    wait_until(lambda: (lab.hosts[host].home / "home" / "control.json").exists(), timeout=30)


def test_default_discovery_and_a_download_from_three_hosts(lab: NetLab, tmp_path: Path) -> None:
    lab.build({"a": 1, "b": 1, "c": 1, "d": 1})
    src = tmp_path / "talk.mp4"
    write_test_file(src, 24 * MIB, seed=11)
    for name in "abcd":
        lab.start(name, "run")  # no --broadcast, default ports: as a user runs it
    for name in "abcd":
        _wait_ready(lab, name)
    for name in "abc":
        assert lab.cli(name, "share", str(src)).returncode == 0
    for name in "abcd":
        wait_until(lambda n=name: any(i["name"] == "talk.mp4" for i in _ls(lab, n)), timeout=20)
    status = json.loads(lab.cli("d", "status", "--json").stdout)
    assert status["broadcast"] == ["10.199.1.255"] or "10.199.1.255" in status["broadcast"]
    assert status["port"] == 5001 and status["discovery_port"] == 5001
    out = tmp_path / "out"
    out.mkdir()
    proc = lab.cli("d", "get", "talk.mp4", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert same_file(out / "talk.mp4", src)
    assert set(summary["by_peer"]) == {"10.199.1.2", "10.199.1.3", "10.199.1.4"}


def test_seeder_link_cut_mid_download(lab: NetLab, tmp_path: Path) -> None:
    lab.build({"a": 1, "b": 1, "c": 1, "d": 1})
    src = tmp_path / "disk.img"
    write_test_file(src, 512 * MIB, seed=12)
    for name in "abcd":
        lab.start(name, "run", "--chunk-timeout", "3")
    for name in "abcd":
        _wait_ready(lab, name)
    for name in "abc":
        assert lab.cli(name, "share", str(src)).returncode == 0
    wait_until(lambda: any(i["peers"] == 3 for i in _ls(lab, "d")), timeout=20)
    out = tmp_path / "out"
    out.mkdir()
    host = lab.hosts["d"]
    getter = subprocess.Popen(
        host.swarmshare("get", "disk.img", "-o", str(out), "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lab._env(),
    )
    wait_until((out / "disk.img.part.swarmshare").exists, timeout=60, interval=0.01)
    lab.cut("a")
    stdout, stderr = getter.communicate(timeout=240)
    assert getter.returncode == 0, stderr
    summary = json.loads(stdout)
    assert same_file(out / "disk.img", src)
    assert summary["by_peer"].get("10.199.1.3") and summary["by_peer"].get("10.199.1.4")


def test_lossy_and_slow_link_still_gives_the_right_file(lab: NetLab, tmp_path: Path) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft (nftables) is not installed: .ci/run installs it")
    lab.build({"a": 1, "d": 1})
    src = tmp_path / "scan.pdf"
    write_test_file(src, 12 * MIB, seed=13)
    lab.start("a", "run")
    lab.start("d", "run")
    for name in "ad":
        _wait_ready(lab, name)
    assert lab.cli("a", "share", str(src)).returncode == 0
    # No netem in this kernel: 5 % random packet loss both ways with nftables, and 30 ms of
    # delay each way through the suite's own relay, which an nft redirect puts in front of the
    # peer server on host a.
    a = lab.hosts["a"].netns
    relay = lab.run_in(
        "a", sys.executable, str(HERE / "faultrelay.py"), "6001", "127.0.0.1", "5001", "30"
    )
    assert relay.stdout is not None and relay.stdout.readline().strip() == b"relaying"
    rules = "\n".join(
        [
            "table ip lab {",
            "  chain loss_in { type filter hook input priority 0;",
            '    iifname "eth0" numgen random mod 100 < 5 counter drop; }',
            "  chain loss_out { type filter hook output priority 0;",
            '    oifname "eth0" numgen random mod 100 < 5 counter drop; }',
            "  chain nat_in { type nat hook prerouting priority -100;",
            '    iifname "eth0" tcp dport 5001 counter redirect to :6001; }',
            "}",
        ]
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", a, "nft", "-f", "-"],
        input=rules,
        text=True,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: any(i["name"] == "scan.pdf" for i in _ls(lab, "d")), timeout=30)
    out = tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    proc = lab.cli("d", "get", "scan.pdf", "-o", str(out), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert same_file(out / "scan.pdf", src)
    ruleset = subprocess.run(
        ["ip", "netns", "exec", a, "nft", "list", "ruleset"], capture_output=True, text=True
    ).stdout
    dropped_in, dropped_out, redirected = (
        int(n) for n in re.findall(r"counter packets (\d+)", ruleset)
    )
    print(
        f"lossy link: {time.monotonic() - started:.1f} s for 12 MiB, {dropped_in} + "
        f"{dropped_out} packets dropped, {redirected} connections through the relay"
    )
    assert dropped_in + dropped_out > 0 and redirected > 0, "the faults were not on the path"


def test_host_on_another_subnet_reached_by_unicast_peer(lab: NetLab, tmp_path: Path) -> None:
    lab.build({"a": 1, "b": 1, "far": 2})
    src = tmp_path / "notes.odt"
    write_test_file(src, 3 * MIB, seed=14)
    lab.start("a", "run")
    lab.start("b", "run")
    for name in "ab":
        _wait_ready(lab, name)
    assert lab.cli("a", "share", str(src)).returncode == 0
    # Broadcast does not cross subnets: without --peer the far host finds nothing.
    assert _ls(lab, "far", "--wait", "2") == []
    lab.start("far", "run", "--peer", lab.hosts["a"].address)
    _wait_ready(lab, "far")
    wait_until(lambda: any(i["name"] == "notes.odt" for i in _ls(lab, "far")), timeout=20)
    peers = json.loads(lab.cli("far", "peers", "--json").stdout)
    assert [p["address"] for p in peers] == ["10.199.1.2"]
    wait_until(
        lambda: any(
            p["address"] == "10.199.2.2" for p in json.loads(lab.cli("a", "peers", "--json").stdout)
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    proc = lab.cli("far", "get", "notes.odt", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert same_file(out / "notes.odt", src)


def test_lab_is_sealed_from_the_host(lab: NetLab) -> None:
    lab.build({"a": 1, "far": 2})
    root_links = sh("ip", "-o", "link").stdout
    assert lab.tag not in root_links, "a lab interface leaked into the host's namespace"
    for netns in (lab.router, lab.hosts["a"].netns):
        routes = sh("ip", "-n", netns, "route").stdout
        assert "10.199." in routes and not any(
            line.startswith("default") and "10.199." not in line for line in routes.splitlines()
        )
    # The router has no way out: an outside address is unreachable from inside the lab.
    probe = sh("ip", "-n", lab.router, "route", "get", "192.0.2.1", check=False)
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower()


# ---- swarmshare doctor: each diagnosis on a real network, with the line it must print ----


def _doctor(lab: NetLab, host: str, *extra: str) -> tuple[int, str]:
    proc = lab.cli(host, "doctor", "--wait", "2", *extra)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def _nft(lab: NetLab, netns: str, rules: str) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=rules,
        text=True,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def test_doctor_names_a_rule_dropping_udp_5001(lab: NetLab) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft (nftables) is not installed: .ci/run installs it")
    lab.build({"a": 1, "b": 1})
    lab.start("a", "run", "--name", "a")
    _wait_ready(lab, "a")
    rules = "table inet lab {\n chain input {\n  type filter hook input priority 0;\n"
    _nft(lab, lab.hosts["b"].netns, rules + "  udp dport 5001 drop\n }\n}\n")
    code, out = _doctor(lab, "b")
    assert code == 1
    assert (
        "problem: firewall: nftables drops UDP 5001 (discovery): `udp dport 5001 drop`"
        " (table inet lab, chain input)" in out
    ), out
    assert "this host's own broadcast to 10.199.1.255, 127.255.255.255 on UDP 5001 did not" in out
    # Answers to a solicit come back to its own port, not 5001: the rule lets them in.
    assert (
        'peer(s) answered the broadcast to 10.199.1.255, 127.255.255.255 on UDP 5001: peer "a"'
        in out
    )


def test_doctor_tells_a_bridge_that_drops_broadcast(lab: NetLab) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft (nftables) is not installed: .ci/run installs it")
    lab.build({"a": 1, "b": 1})
    lab.start("b", "run", "--name", "b")
    _wait_ready(lab, "b")
    code, out = _doctor(lab, "a")  # broadcast still passes
    assert code == 0 and "ok: broadcast: 1 peer(s) answered the broadcast" in out, out
    # The bridge stops forwarding IPv4 broadcast (ARP still passes), as an access point with
    # client isolation does.
    _nft(
        lab,
        lab.router,
        "table bridge lab {\n chain isolate {\n  type filter hook forward priority 0;\n"
        "  ether daddr ff:ff:ff:ff:ff:ff ether type ip drop\n }\n}\n",
    )
    code, out = _doctor(lab, "a")
    assert code == 1
    assert "problem: broadcast: no peer answered the solicit sent to 10.199.1.255" in out, out
    code, out = _doctor(lab, "a", "--peer", lab.hosts["b"].address)
    assert code == 1
    assert (
        'problem: broadcast: broadcast does not come back: peer "b" at 10.199.1.3 answered by'
        " unicast, but no peer answered the broadcast to 10.199.1.255" in out
    ), out
    assert 'ok: peers: peer "b" at 10.199.1.3 serves on TCP 5001' in out


def test_doctor_tells_a_host_on_another_subnet(lab: NetLab) -> None:
    lab.build({"a": 1, "far": 2})
    lab.start("a", "run", "--name", "a")
    _wait_ready(lab, "a")
    code, out = _doctor(lab, "far")
    assert code == 1 and "no peer answered the solicit sent to 10.199.2.255" in out, out
    code, out = _doctor(lab, "far", "--peer", lab.hosts["a"].address)
    assert (
        'warning: broadcast: peer "a" at 10.199.1.2 is on another subnet (none of this host\'s'
        " interfaces is on it)" in out
    ), out
    assert 'ok: peers: peer "a" at 10.199.1.2 serves on TCP 5001' in out
    assert code == 0, out
