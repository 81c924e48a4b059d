"""The broadcast addresses of this host's IPv4 interfaces."""

from __future__ import annotations

import ipaddress

import ifaddr


def broadcast_addresses() -> list[str]:
    """Each IPv4 interface's directed broadcast address (loopback's too), without repeats."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not ip.is_IPv4 or not isinstance(ip.ip, str) or ip.network_prefix >= 31:
                continue
            net = ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False)
            address = str(net.broadcast_address)
            if address not in found:
                found.append(address)
    return found
