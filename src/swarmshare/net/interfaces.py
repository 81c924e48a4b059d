"""This host's interfaces: IPv4 ones and their broadcast addresses, IPv6 link-local ones."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Ipv6Interface:
    """An interface with an IPv6 link-local address: where IPv6 discovery multicasts."""

    name: str
    index: int
    link_local: str
    """Its link-local address, without the scope."""


def ipv6_interfaces() -> list[Ipv6Interface]:
    """Every interface but loopback that has an IPv6 link-local address, by index."""
    found: dict[int, Ipv6Interface] = {}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not ip.is_IPv6 or not isinstance(ip.ip, tuple):
                continue
            address = ipaddress.IPv6Address(ip.ip[0].split("%")[0])
            index = adapter.index
            if address.is_link_local and index is not None and index not in found:
                found[index] = Ipv6Interface(str(adapter.name), index, str(address))
    return [found[index] for index in sorted(found)]


def is_wildcard(address: str) -> bool:
    """Whether a bind address means every interface (0.0.0.0, ::, or empty)."""
    return address in ("", "0.0.0.0", "::")


def scoped(address: str, scope_id: int) -> str:
    """`fe80::1%eth0` for a link-local address heard on interface `scope_id`; others as they are."""
    if scope_id and ":" in address and "%" not in address:
        try:
            return f"{address}%{socket.if_indextoname(scope_id)}"
        except OSError:
            return f"{address}%{scope_id}"
    return address
