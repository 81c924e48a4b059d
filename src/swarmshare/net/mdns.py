"""mDNS/DNS-SD: advertise this peer as `_swarmshare._tcp` and find the others, with zeroconf.

Where the peer server has a LAN page (an open swarm), it is advertised too, as `_http._tcp`
with `path=/`, so that a phone or laptop browsing the network's web servers finds it.

A second path to the facts UDP discovery yields, for networks that filter broadcast but pass
multicast. The record (core/service.py) says what an announcement says; each instance found is
resolved and its announcement handed to `on_sighting` with the address it resolved to (IPv4
first, else IPv6 with its scope), as a datagram from that address would be: the peer table sees
one peer however it was found.

Liveness: records live SERVICE_RECORD_TTL_SECONDS unless refreshed; zeroconf reports a service
Removed when its peer says goodbye or its records expire. While present, each instance is handed
on again every `interval` (with `fresh` False: what was resolved earlier), so the table keeps it
as it keeps a peer that announces. This peer's TXT record follows its catalogue version, updated
at most every SERVICE_UPDATE_MIN_SECONDS.

zeroconf opens its own sockets (UDP 5353; 224.0.0.251 and ff02::fb) on the interfaces it is
given: the caller chooses them (never loopback). If they cannot be opened, mDNS is off and
`error` says why; the peer runs on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from zeroconf import BadTypeInNameException, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from swarmshare.core.announce import Announcement
from swarmshare.core.service import SERVICE_TYPE, decode_service, encode_txt, instance_name
from swarmshare.errors import RemoteProtocolError
from swarmshare.limits import (
    MAX_SERVICE_RESOLVES_IN_FLIGHT,
    MAX_SERVICES_TRACKED,
    SERVICE_RECORD_TTL_SECONDS,
    SERVICE_RESOLVE_TIMEOUT_SECONDS,
    SERVICE_UPDATE_MIN_SECONDS,
)
from swarmshare.net.interfaces import scoped

log = logging.getLogger("swarmshare")

HTTP_SERVICE_TYPE = "_http._tcp.local."

OnSighting = Callable[[Announcement, str, bool], None]
"""(announcement, source address, fresh): fresh is False for a re-statement of an earlier one."""


class ServiceDiscovery:
    """Advertises this peer and browses for others; use as `async with ServiceDiscovery(...)`."""

    def __init__(
        self,
        *,
        interfaces: list[str | int],
        addresses: list[str],
        make_announcement: Callable[[], Announcement],
        on_sighting: OnSighting,
        interval: float,
        networks: list[IPv4Network] | None = None,
        lan_page: bool = False,
    ) -> None:
        """`interfaces`: IPv4 addresses and IPv6 interface indexes to use; `addresses`: this
        peer's addresses on them, for its A and AAAA records; `networks`: this host's IPv4
        subnets (a peer's address on one of them is preferred to its others); `lan_page`: also
        advertise the peer server's page as `_http._tcp`."""
        self.lan_page = lan_page
        self.interfaces = interfaces
        self.networks = networks or []
        self.addresses = addresses
        self.interval = interval
        self.error: str | None = None
        self.sightings = 0
        self.refused = 0
        self._make = make_announcement
        self._on_sighting = on_sighting
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._page_info: AsyncServiceInfo | None = None
        self._found: OrderedDict[str, tuple[Announcement, str]] = OrderedDict()
        self._resolving: set[str] = set()
        self._slots = asyncio.Semaphore(MAX_SERVICE_RESOLVES_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresh: asyncio.TimerHandle | None = None
        self._update: asyncio.TimerHandle | None = None
        self._updated_at = -SERVICE_UPDATE_MIN_SECONDS

    async def __aenter__(self) -> ServiceDiscovery:
        if not self.interfaces:
            self.error = "no interface to use"
            return self
        try:
            self._zc = AsyncZeroconf(interfaces=self.interfaces)
        except (OSError, RuntimeError) as exc:
            self.error = f"cannot open mDNS sockets: {getattr(exc, 'strerror', None) or exc}"
            log.warning("mDNS off: %s", self.error)
            return self
        ann = self._make()
        self._info = self._service_info(instance_name(ann.name, ann.peer_id))
        self._spawn(self._register())
        if self.lan_page:
            self._page_info = self._page_service_info(ann)
            self._spawn(self._register_page())
        self._browser = AsyncServiceBrowser(
            self._zc.zeroconf, [SERVICE_TYPE], handlers=[self._changed]
        )
        self._arm_refresh()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for timer in (self._refresh, self._update):
            if timer is not None:
                timer.cancel()
        self._refresh = self._update = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zc is not None:
            with contextlib.suppress(Exception):  # goodbyes are best effort at shutdown
                await self._zc.async_close()
            self._zc = None

    @property
    def running(self) -> bool:
        """Whether mDNS advertises and browses."""
        return self._zc is not None

    def changed(self) -> None:
        """This peer's catalogue changed: update its TXT record (paced)."""
        if self._zc is None or self._update is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._updated_at + SERVICE_UPDATE_MIN_SECONDS - loop.time())
        self._update = loop.call_later(delay, self._send_update)

    def _send_update(self) -> None:
        self._update = None
        self._updated_at = asyncio.get_running_loop().time()
        if self._info is None or self._zc is None:
            return
        self._info = self._service_info(self._info.name)  # the name registered (maybe renamed)
        self._spawn(self._publish_update())

    def _service_info(self, name: str) -> AsyncServiceInfo:
        ann = self._make()
        return AsyncServiceInfo(
            SERVICE_TYPE,
            name,
            port=ann.port,
            properties=encode_txt(ann),
            server=f"swarmshare-{ann.peer_id}.local.",
            host_ttl=SERVICE_RECORD_TTL_SECONDS,
            other_ttl=SERVICE_RECORD_TTL_SECONDS,
            parsed_addresses=self.addresses,
        )

    async def _register(self) -> None:
        assert self._zc is not None and self._info is not None
        try:
            await self._zc.async_register_service(self._info, allow_name_change=True)
        except (OSError, BadTypeInNameException, RuntimeError) as exc:
            self.error = f"cannot advertise: {exc}"
            log.warning("mDNS: %s", self.error)

    def _page_service_info(self, ann: Announcement) -> AsyncServiceInfo:
        label = instance_name(ann.name, ann.peer_id).removesuffix("." + SERVICE_TYPE)
        return AsyncServiceInfo(
            HTTP_SERVICE_TYPE,
            f"{label}.{HTTP_SERVICE_TYPE}",
            port=ann.port,
            properties={"path": "/"},
            server=f"swarmshare-{ann.peer_id}.local.",
            host_ttl=SERVICE_RECORD_TTL_SECONDS,
            other_ttl=SERVICE_RECORD_TTL_SECONDS,
            parsed_addresses=self.addresses,
        )

    async def _register_page(self) -> None:
        assert self._zc is not None and self._page_info is not None
        try:
            await self._zc.async_register_service(self._page_info, allow_name_change=True)
        except (OSError, BadTypeInNameException, RuntimeError) as exc:
            log.warning("mDNS: cannot advertise the LAN page: %s", exc)

    async def _publish_update(self) -> None:
        assert self._zc is not None and self._info is not None
        with contextlib.suppress(Exception):  # a failed update is retried with the next change
            await self._zc.async_update_service(self._info)

    def _changed(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            gone = self._found.pop(name, None)
            if gone is not None:
                ann, address = gone
                bye = Announcement(
                    ann.peer_id, ann.port, ann.name, ann.catalog_version, ann.interval, bye=True
                )
                self._on_sighting(bye, address, True)
            return
        if self._info is not None and name == self._info.name:
            return  # this peer's own record
        if name in self._resolving or len(self._resolving) >= MAX_SERVICES_TRACKED:
            return
        self._resolving.add(name)
        self._spawn(self._resolve(service_type, name))

    async def _resolve(self, service_type: str, name: str) -> None:
        try:
            async with self._slots:
                if self._zc is None:
                    return
                info = AsyncServiceInfo(service_type, name)
                timeout_ms = int(SERVICE_RESOLVE_TIMEOUT_SECONDS * 1000)
                if not await info.async_request(self._zc.zeroconf, timeout_ms):
                    return
        except (OSError, BadTypeInNameException):
            return
        finally:
            self._resolving.discard(name)
        address = _address_of(info, self.networks)
        try:
            ann = decode_service(info.text or b"", info.port or 0)
        except RemoteProtocolError:
            self.refused += 1
            return
        if address is None or ann.peer_id == self._make().peer_id:
            return
        self._found.pop(name, None)
        self._found[name] = (ann, address)
        while len(self._found) > MAX_SERVICES_TRACKED:
            self._found.popitem(last=False)
        self.sightings += 1
        self._on_sighting(ann, address, True)

    def _arm_refresh(self) -> None:
        loop = asyncio.get_running_loop()
        self._refresh = loop.call_later(self.interval, self._restate)

    def _restate(self) -> None:
        for ann, address in list(self._found.values()):
            self._on_sighting(ann, address, False)
        self._arm_refresh()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _address_of(info: AsyncServiceInfo, networks: list[IPv4Network]) -> str | None:
    """Where a resolved service is reached: its IPv4 address on one of our subnets, else its
    first IPv4 address, else its first IPv6 one (a link-local one with the scope of the
    interface it was heard on)."""
    v4 = info.parsed_addresses(IPVersion.V4Only)
    for text in v4:
        if any(IPv4Address(text) in net for net in networks):
            return text
    if v4:
        return v4[0]
    for text in info.parsed_scoped_addresses(IPVersion.V6Only):
        address, _sep, scope = text.partition("%")
        if not scope:
            return address
        if scope.isdigit():
            return scoped(address, int(scope))
        return text
    return None
