"""A small LAN of real hosts on one machine: network namespaces joined by veth pairs to a
bridge, built and torn down by the tests themselves.

    router namespace:  bridge per subnet (10.199.S.1/24 on each), IP forwarding on
    host namespaces:   one veth each, 10.199.S.N/24, default route via 10.199.S.1

Every address lives only inside these namespaces; nothing is created in, or routed to, the
host's own namespace, so the host's interfaces never see this traffic. Processes started in a
host get SWARMSHARE_NETGUARD_ALLOW for the lab's range (and, inside the lab only, link-local
IPv6 and the link-local multicast groups of mDNS and IPv6 discovery), nothing else beyond
loopback.

A lab is IPv4 only unless built with `ipv6=True` (each host's link gets its IPv6 link-local
address, no duplicate-address wait); `ipv4=False` makes an IPv6-only LAN. `swarmshare run` in a
host gets --no-mdns unless the lab is built with `mdns=True`: mDNS is on only in the tests
about it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import swarmshare_command, wait_until

LAB_RANGE = "10.199.0.0/16"
LAB_LINK_LOCAL = "fe80::/10,ff02::/16,ff12::/16,224.0.0.251/32,::ffff:10.199.0.0/112"
_counter = itertools.count()


def can_build() -> str | None:
    """Why a lab cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root; run the suite with sudo)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    probe = f"ssprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command, failing loudly with its stderr."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {proc.stderr.strip()}")
    return proc


@dataclass
class Host:
    """One host namespace of the lab."""

    name: str
    netns: str
    address: str
    subnet: int
    veth_router_side: str
    home: Path
    address6: str = ""
    """Its IPv6 link-local address (in a lab built with ipv6=True)."""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def exec_args(self, *args: str) -> list[str]:
        """A command line that runs inside this host."""
        return ["ip", "netns", "exec", self.netns, *args]

    def swarmshare(self, *args: str) -> list[str]:
        """`swarmshare --home HOME ARGS`, run inside this host."""
        return self.exec_args(*swarmshare_command(self.home / "home", *args))


class NetLab:
    """Build with `NetLab(root).build({"a": 1, ...})`; always `destroy()` afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The whole pid, which sweep_stale reads back ("sw": labs named "ss" carried it cut to
        # four digits, so that a sweep could remove a live lab of another run).
        self.tag = f"sw{os.getpid()}x{next(_counter)}"
        self.router = f"{self.tag}-r"
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []
        self.mdns = False

    def build(
        self,
        layout: dict[str, int],
        *,
        ipv4: bool = True,
        ipv6: bool = False,
        mdns: bool = False,
    ) -> NetLab:
        """Hosts by name -> subnet number (1, 2, ...): one bridge per subnet in the router."""
        self.mdns = mdns
        self._netns(self.router)
        sh("ip", "-n", self.router, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for subnet in sorted(set(layout.values())):
            bridge = f"br{subnet}"
            sh(
                "ip", "-n", self.router, "link", "add", bridge, "type", "bridge",
                "mcast_snooping", "0",
            )  # fmt: skip
            sh("ip", "-n", self.router, "addr", "add", f"10.199.{subnet}.1/24", "dev", bridge)
            sh("ip", "-n", self.router, "link", "set", bridge, "up")
        numbers: dict[int, int] = {}
        for index, (name, subnet) in enumerate(layout.items()):
            numbers[subnet] = numbers.get(subnet, 1) + 1
            address = f"10.199.{subnet}.{numbers[subnet]}"
            netns = f"{self.tag}-{name}"
            self._netns(netns)
            router_side, host_side = f"{self.tag}r{index}", "eth0"
            sh(
                "ip",
                "-n",
                self.router,
                "link",
                "add",
                router_side,
                "type",
                "veth",
                "peer",
                "name",
                host_side,
                "netns",
                netns,
            )
            sh("ip", "-n", self.router, "link", "set", router_side, "master", f"br{subnet}")
            sh("ip", "-n", self.router, "link", "set", router_side, "up")
            sh("ip", "-n", netns, "link", "set", "lo", "up")
            conf = f"net.ipv6.conf.{host_side}"
            if ipv6:
                self._sysctl(netns, f"{conf}.accept_dad=0", f"{conf}.disable_ipv6=0")
            else:
                self._sysctl(netns, f"{conf}.disable_ipv6=1")
            if ipv4:
                sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", host_side)
            sh("ip", "-n", netns, "link", "set", host_side, "up")
            if ipv4:
                sh("ip", "-n", netns, "route", "add", "default", "via", f"10.199.{subnet}.1")
            else:
                address = ""
            home = self.root / name
            home.mkdir(parents=True, exist_ok=True)
            host = Host(name, netns, address, subnet, router_side, home)
            if ipv6:
                host.address6 = self._link_local(netns, host_side)
            self.hosts[name] = host
        return self

    def start(self, name: str, *args: str, log: str = "run.log") -> subprocess.Popen[bytes]:
        """Start `swarmshare --home HOME ARGS` inside a host, in the background (`run` without
        mDNS unless the lab was built with mdns=True)."""
        host = self.hosts[name]
        if args[:1] == ("run",) and not self.mdns:
            args = (*args, "--no-mdns")
        with open(host.home / log, "ab") as out:
            proc = subprocess.Popen(
                host.swarmshare(*args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
            )
        host.procs.append(proc)
        return proc

    def cli(self, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `swarmshare --home HOME ARGS` inside a host and wait for it."""
        host = self.hosts[name]
        return subprocess.run(
            host.swarmshare(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(),
            stdin=subprocess.DEVNULL,
        )

    def run_in(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start any command inside a host (a relay, say); stopped at destroy()."""
        host = self.hosts[name]
        proc = subprocess.Popen(
            host.exec_args(*args),
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        host.procs.append(proc)
        return proc

    def cut(self, name: str) -> None:
        """Cut a host's link (its port on the bridge goes down)."""
        sh("ip", "-n", self.router, "link", "set", self.hosts[name].veth_router_side, "down")

    def destroy(self) -> None:
        """Stop every process and remove every namespace (and with them every link)."""
        for host in self.hosts.values():
            for proc in host.procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in host.procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                if proc.stdout is not None:
                    proc.stdout.close()
        for netns in reversed(self.namespaces):
            sh("ip", "netns", "del", netns, check=False)
        self.namespaces.clear()

    def _sysctl(self, netns: str, *settings: str) -> None:
        sh("ip", "netns", "exec", netns, "sysctl", "-qw", *settings)

    def _link_local(self, netns: str, device: str) -> str:
        """The link-local address the kernel gives a link once it is up (waited for)."""
        found: list[str] = []

        def assigned() -> bool:
            shown = sh(
                "ip", "-n", netns, "-6", "-o", "addr", "show", "dev", device, "scope", "link"
            )
            found[:] = [w.split("/")[0] for w in shown.stdout.split() if w.startswith("fe80:")]
            return bool(found)

        wait_until(assigned, timeout=10)
        return found[0]

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)

    def _env(self) -> dict[str, str]:
        allow = f"{LAB_RANGE},{LAB_LINK_LOCAL}"
        return {**os.environ, "SWARMSHARE_NETGUARD_ALLOW": allow, "COLUMNS": "200"}


def sweep_stale() -> None:
    """Remove namespaces left by an earlier run that was killed before its cleanup."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("sw") and "x" in name and "-" in name:
            pid = name[2:].split("x")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


def lab_fixture() -> Callable[[Path], Iterator[NetLab]]:
    """The `lab` fixture for a test module: `lab = lab_fixture()`."""

    @pytest.fixture(name="lab")
    def lab(tmp_path: Path) -> Iterator[NetLab]:
        """A fresh lab for each test, torn down after it; the test fails if its namespaces
        are left behind."""
        sweep_stale()
        built = NetLab(tmp_path / "lab")
        try:
            yield built
        finally:
            built.destroy()
            leftover = sh("ip", "netns", "list").stdout
            assert built.tag not in leftover, "namespaces left behind"

    return lab
