"""This host's IPv4 interfaces and their broadcast addresses."""

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


def ipv4_interfaces() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(interface name, address/prefix) of every IPv4 address but loopback's."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not ip.is_IPv4 or not isinstance(ip.ip, str):
                continue
            interface = ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}")
            if not interface.ip.is_loopback:
                found.append((str(adapter.nice_name), interface))
    return found
