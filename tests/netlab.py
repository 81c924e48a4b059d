"""A small LAN of real hosts on one machine: network namespaces joined by veth pairs to a
bridge, built and torn down by the tests themselves.

    router namespace:  bridge per subnet (10.199.S.1/24 on each), IP forwarding on
    host namespaces:   one veth each, 10.199.S.N/24, default route via 10.199.S.1

Every address lives only inside these namespaces; nothing is created in, or routed to, the
host's own namespace, so the host's interfaces never see this traffic. Processes started in a
host get SWARMSHARE_NETGUARD_ALLOW for the lab's range, and nothing else beyond loopback.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from helpers import swarmshare_command

LAB_RANGE = "10.199.0.0/16"
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
        self.tag = f"ss{os.getpid() % 10000}x{next(_counter)}"
        self.router = f"{self.tag}-r"
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []

    def build(self, layout: dict[str, int]) -> NetLab:
        """Hosts by name -> subnet number (1, 2, ...): one bridge per subnet in the router."""
        self._netns(self.router)
        sh("ip", "-n", self.router, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for subnet in sorted(set(layout.values())):
            bridge = f"br{subnet}"
            sh("ip", "-n", self.router, "link", "add", bridge, "type", "bridge")
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
            sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", host_side)
            sh("ip", "-n", netns, "link", "set", host_side, "up")
            sh("ip", "-n", netns, "route", "add", "default", "via", f"10.199.{subnet}.1")
            home = self.root / name
            home.mkdir(parents=True, exist_ok=True)
            self.hosts[name] = Host(name, netns, address, subnet, router_side, home)
        return self

    def start(self, name: str, *args: str, log: str = "run.log") -> subprocess.Popen[bytes]:
        """Start `swarmshare --home HOME ARGS` inside a host, in the background."""
        host = self.hosts[name]
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

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "SWARMSHARE_NETGUARD_ALLOW": LAB_RANGE, "COLUMNS": "200"}


def sweep_stale() -> None:
    """Remove namespaces left by an earlier run that was killed before its cleanup."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("ss") and "x" in name and "-" in name:
            pid = name[2:].split("x")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
