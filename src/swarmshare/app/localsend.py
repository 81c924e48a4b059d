"""LocalSend in the app: a peer that receives like a LocalSend device, and `swarmshare send`.

`LocalSendService` (run by a serving Node with `--localsend`) answers LocalSend discovery and
takes uploads into the download folder, under the accept rule: `all` takes every offer, `pin`
every offer that carries the PIN, `ask` puts the offer in the inbox (`swarmshare inbox`) and
waits for a person's answer. What arrives is then shared with the swarm like a finished
download. `send_files` offers files to a LocalSend device (found by alias, or named) and uploads
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from swarmshare.config import parse_peer
from swarmshare.core.localsend import (
    SWARMSHARE_MODEL,
    DeviceInfo,
    FileOffer,
    SwarmOffer,
    check_name,
)
from swarmshare.errors import NotFoundError, SwarmshareError, UsageError
from swarmshare.net.localsend import (
    LocalSendDiscovery,
    LocalSendReceiver,
    LocalSendRefused,
    LocalSendSender,
    Offer,
    Target,
)
from swarmshare.settings import Settings
from swarmshare.store.identity import load_identity

log = logging.getLogger("swarmshare")

ACCEPT_RULES = ("ask", "pin", "all")
SWARM_FIND_SECONDS = 10.0  # for the sender's content to show up in this peer's swarm (else 404)
SWARM_FETCH_WAIT_SECONDS = 60.0  # then for holders
Json = dict[str, Any]


class Inbox:
    """Offers waiting for a person: each one's future is resolved by `decide`."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self._waiting: dict[str, tuple[Offer, asyncio.Future[bool]]] = {}
        self._changed = changed

    async def ask(self, offer: Offer) -> bool:
        """Wait for a person to accept or refuse `offer`."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[offer.id] = (offer, future)
        self._changed()
        log.info(
            "LocalSend: %r offers %d file(s); accept with: swarmshare inbox accept %s",
            offer.offer.sender.alias,
            len(offer.offer.files),
            offer.id,
        )
        try:
            return await future
        finally:
            self._waiting.pop(offer.id, None)
            self._changed()

    def list(self) -> list[Json]:
        """The offers waiting, oldest first."""
        return [offer.as_json() for offer, _ in self._waiting.values()]

    def decide(self, ref: str, accept: bool) -> Json:
        """Accept or refuse the offer whose ID starts with `ref`."""
        found = [key for key in self._waiting if key.startswith(ref)] if ref else []
        if not found:
            raise NotFoundError(f"no offer {ref!r} in the inbox (see: swarmshare inbox)")
        if len(found) > 1:
            raise UsageError(f"{ref!r} names more than one offer")
        offer, future = self._waiting[found[0]]
        if not future.done():
            future.set_result(accept)
        return offer.as_json() | {"accepted": accept}


class LocalSendService:
    """Discovery and the receiver of a serving peer (`async with`)."""

    def __init__(
        self,
        settings: Settings,
        swarm_port: int | None,
        folder: Callable[[], Path],
        received: Callable[[Path], None],
        changed: Callable[[], None],
        swarm_fetch: Callable[[SwarmOffer, float, float], Awaitable[Json]] | None = None,
    ) -> None:
        s = settings
        if s.accept not in ACCEPT_RULES:
            raise UsageError(f"--accept must be one of {', '.join(ACCEPT_RULES)}")
        if s.accept == "pin" and not s.pin:
            raise UsageError("--accept pin needs a PIN: give --pin (or pin in the config file)")
        self.settings = s
        self.inbox = Inbox(changed)
        self._swarm_port = swarm_port
        self._folder = folder
        self._received = received
        self._swarm_fetch = swarm_fetch
        self._stack = contextlib.AsyncExitStack()
        self.receiver: LocalSendReceiver | None = None
        self._announcer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LocalSendService:
        s = self.settings
        identity = await asyncio.to_thread(load_identity, s.home, s.name)
        info = DeviceInfo(
            alias=s.name,
            fingerprint=identity.fingerprint,
            port=s.localsend_port,
            protocol="https",
            device_model=SWARMSHARE_MODEL,
            device_type="headless",
            swarm_port=self._swarm_port,
        )
        try:
            discovery = await self._stack.enter_async_context(
                LocalSendDiscovery(
                    info, s.bind, s.localsend_group, s.localsend_port, identity.client_context()
                )
            )
            self.receiver = await self._stack.enter_async_context(
                LocalSendReceiver(
                    discovery,
                    identity.server_context(),
                    s.bind,
                    s.localsend_port,
                    self._folder,
                    self._decide,
                    self._received,
                    pin=s.pin,
                    fetch=None if self._swarm_fetch is None else self._fetch,
                )
            )
        except BaseException:
            await self._stack.aclose()
            raise
        discovery.announce()
        self._announcer = asyncio.get_running_loop().create_task(self._announce(discovery))
        log.info(
            "LocalSend: receiving on HTTPS %s:%d as %r (accept: %s), fingerprint %s",
            s.bind,
            s.localsend_port,
            s.name,
            s.accept,
            identity.fingerprint,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
        await self._stack.aclose()

    def status(self) -> Json:
        """The receiver's state, for `status`."""
        assert self.receiver is not None
        return self.receiver.status() | {"accept": self.settings.accept}

    async def _fetch(self, offer: SwarmOffer, address: str) -> None:
        assert self._swarm_fetch is not None
        await self._swarm_fetch(offer, SWARM_FIND_SECONDS, SWARM_FETCH_WAIT_SECONDS)

    async def _decide(self, offer: Offer) -> bool:
        if self.settings.accept == "ask":
            return await self.inbox.ask(offer)
        return True  # all, or pin (the receiver checked the PIN already)

    async def _announce(self, discovery: LocalSendDiscovery) -> None:
        while True:
            await asyncio.sleep(self.settings.interval)
            discovery.announce()


# ---- send ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendEvent:
    """What `send_files` tells its caller as it goes."""

    kind: str  # "target", "progress", "done"
    target: str
    files: int = 0
    size: int = 0
    sent: int = 0
    swarm: bool = False


Share = Callable[[list[Path]], list[Json]]
"""Share files with this home's running daemon (blocking): one share result per path."""


async def send_files(
    settings: Settings,
    paths: list[Path],
    destinations: list[str],
    pin: str | None,
    wait: float,
    report: Callable[[SendEvent], None],
    share: Share | None = None,
) -> list[Json]:
    """Offer `paths` to each destination (alias, or HOST[:PORT]) and upload what each wants.
    With `share` (a daemon serves this home) and two or more swarmshare receivers, the files
    are shared and those receivers fetch them through the swarm, from this peer and from one
    another, at once. One result per destination: `sent`, or `status` and `error`."""
    s = settings
    files = [_file_offer(p) for p in paths]
    identity = await asyncio.to_thread(load_identity, s.home, s.name)
    info = DeviceInfo(
        alias=s.name,
        fingerprint=identity.fingerprint,
        port=s.localsend_port,
        device_model=SWARMSHARE_MODEL,
        device_type="headless",
    )
    targets = await _targets(s, info, destinations, wait, identity.client_context())
    results: list[Json] = []
    async with LocalSendSender(info, identity.client_context, s.bind) as sender:
        known: list[Target] = []
        for target in targets:
            try:
                known.append(await sender.register(target))
            except SwarmshareError as exc:
                results.append({"to": target.name, "status": 0, "error": str(exc)})
        swarm = [t for t in known if t.info is not None and t.info.is_swarmshare]
        offers = await _swarm_offers(info, files, paths, share) if len(swarm) >= 2 else None
        plain = known
        if offers is not None:
            fetched = await asyncio.gather(
                *(_swarm_one(sender, t, offers, pin, report) for t in swarm)
            )
            results += [r for r in fetched if not _upload_instead(r)]
            again = {r["to"] for r in fetched if _upload_instead(r)}
            plain = [t for t in known if t not in swarm or t.name in again]
        for target in plain:
            results.append(await _send_one(sender, target, files, paths, pin, report))
    return results


def _upload_instead(result: Json) -> bool:
    """Whether a swarm fetch that failed so is done by a direct upload instead: the receiver
    cannot find the content in its swarm (404: it is in another one), or the fetch failed on
    its way (no answer, or a server error); not when the receiver said no."""
    status = int(result.get("status", 0))
    return status == 404 or status == 0 or (status >= 500 and status != 507)


async def _swarm_offers(
    info: DeviceInfo, files: list[FileOffer], paths: list[Path], share: Share | None
) -> list[SwarmOffer] | None:
    """The files shared with the swarm, as offers (None: they cannot be)."""
    if share is None:
        return None
    shared = await asyncio.to_thread(share, paths)
    if any("error" in r or r.get("kind") != "file" for r in shared):
        return None
    return [
        SwarmOffer(info, str(r["id"]), f.name, f.size) for r, f in zip(shared, files, strict=True)
    ]


async def _swarm_one(
    sender: LocalSendSender,
    target: Target,
    offers: list[SwarmOffer],
    pin: str | None,
    report: Callable[[SendEvent], None],
) -> Json:
    size = sum(o.size for o in offers)
    report(SendEvent("target", target.name, len(offers), size, swarm=True))
    try:
        for offer in offers:
            await sender.swarm_fetch(target, offer, pin)
    except LocalSendRefused as exc:
        return {"to": target.name, "status": exc.status, "error": _refusal(exc.status, target, pin)}
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return {"to": target.name, "status": 0, "error": f"{target.name}: {exc}"}
    report(SendEvent("done", target.name))
    return {"to": target.name, "status": 200, "sent": size, "files": len(offers), "swarm": True}


async def _send_one(
    sender: LocalSendSender,
    target: Target,
    files: list[FileOffer],
    paths: list[Path],
    pin: str | None,
    report: Callable[[SendEvent], None],
) -> Json:
    try:
        report(SendEvent("target", target.name, len(files), sum(f.size for f in files)))
        grant = await sender.offer(target, files, pin)
    except LocalSendRefused as exc:
        return {"to": target.name, "status": exc.status, "error": _refusal(exc.status, target, pin)}
    except (SwarmshareError, aiohttp.ClientError, OSError) as exc:
        return {"to": target.name, "status": 0, "error": f"{target.name}: {exc}"}
    sent = 0

    def progress(n: int) -> None:
        nonlocal sent
        sent += n
        report(SendEvent("progress", target.name, sent=n))

    try:
        for file, path in zip(files, paths, strict=True):
            if file.id in grant.tokens:
                await sender.upload(target, grant, file, path, progress)
    except LocalSendRefused as exc:
        return {"to": target.name, "status": exc.status, "error": _refusal(exc.status, target, pin)}
    except (TimeoutError, OSError, aiohttp.ClientError) as exc:
        await sender.cancel(target, grant)
        return {"to": target.name, "status": 0, "error": f"the transfer was cut: {exc}"}
    except BaseException:
        await sender.cancel(target, grant)
        raise
    report(SendEvent("done", target.name))
    return {"to": target.name, "status": 200, "sent": sent, "files": len(grant.tokens)}


def _refusal(status: int, target: Target, pin: str | None) -> str:
    name = target.name
    if status == 204:
        return f"{name} wants none of these files"
    if status == 401:
        return f"{name} wants a PIN: " + ("the PIN given is wrong" if pin else "give it with --pin")
    if status == 403:
        return f"{name} refused the files"
    if status == 409:
        return f"{name} is busy with another transfer; try again later"
    if status == 413:
        return f"{name} takes less than that at once"
    if status == 507:
        return f"{name} has no room for the files"
    if status == 429:
        return f"{name} refuses: too many attempts; wait a minute"
    return f"{name} answered HTTP {status}"


async def _targets(
    s: Settings,
    info: DeviceInfo,
    destinations: list[str],
    wait: float,
    context: Any,
) -> list[Target]:
    named: list[Target] = []
    aliases: list[str] = []
    for text in destinations:
        host, port = parse_peer(text, s.localsend_port)
        if _looks_like_address(host) or ":" in text:
            named.append(Target(host, port))
        else:
            aliases.append(text)
    if not aliases:
        return named
    async with LocalSendDiscovery(
        info, s.bind, s.localsend_group, s.localsend_port, context
    ) as discovery:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        discovery.announce()
        while True:
            found = {a: discovery.find(a) for a in aliases}
            if all(found.values()) or loop.time() >= deadline:
                break
            await discovery.wait_heard(min(0.5, max(0.01, deadline - loop.time())))
            discovery.announce()
    for alias, devices in found.items():
        if not devices:
            raise NotFoundError(f"no LocalSend device called {alias!r} answered within {wait:g} s")
        device = devices[0]
        i = device.info
        expected = i.fingerprint if i.protocol == "https" and i.fingerprint else None
        named.append(Target(device.address, i.port, i.protocol, i, fingerprint=expected))
    return named


def _looks_like_address(host: str) -> bool:
    parts = host.split(".")
    return (len(parts) == 4 and all(p.isdigit() for p in parts)) or host == "localhost"


def _file_offer(path: Path) -> FileOffer:
    if not path.is_file():
        raise UsageError(f"{path}: not a file (send takes files)")
    name = path.name
    try:
        check_name(name)
    except SwarmshareError as exc:
        raise UsageError(f"{path}: {exc}") from None
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileOffer(uuid.uuid4().hex, name, path.stat().st_size, kind)
