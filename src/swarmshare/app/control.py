"""The control API: how the CLI (and later the web page) drives a running daemon.

Listens on 127.0.0.1 only. Every /api request must carry the per-home token the daemon wrote
to its home (`Authorization: Bearer TOKEN`), and a Host header naming this loopback address, so
neither another local user nor a web page (DNS rebinding) can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler

from swarmshare.app.swarm import peer_json
from swarmshare.errors import AmbiguousError, DaemonError, SwarmshareError
from swarmshare.net.server import error_response, start_site
from swarmshare.settings import DEFAULT_CONTROL_PORT
from swarmshare.store.db import Database
from swarmshare.store.library import Library

if TYPE_CHECKING:
    from swarmshare.app.daemon import Daemon

_log = logging.getLogger(__name__)
CONTROL_HOST = "127.0.0.1"
COOKIE = "swarmshare_token"
EVENT_KEEPALIVE_SECONDS = 15.0
EVENT_MIN_GAP_SECONDS = 0.25
STATIC_FILES = {
    "index.html": "text/html",
    "app.css": "text/css",
    "app.js": "text/javascript",
}


class ControlServer:
    """The control API server; `async with ControlServer(daemon, port) as c:`."""

    def __init__(self, daemon: Daemon, port: int | None) -> None:
        self.daemon = daemon
        self.requested_port = port
        self.port = 0
        app = web.Application(client_max_size=1 << 20, middlewares=[self._guard])
        r = app.router
        r.add_get("/api/status", self._status)
        r.add_get("/api/peers", self._peers)
        r.add_get("/api/network", self._network)
        r.add_get("/api/library", self._library)
        r.add_post("/api/reload", self._reload)
        r.add_post("/api/share", self._share)
        r.add_post("/api/unshare", self._unshare)
        r.add_get("/api/log", self._log)
        r.add_get("/", self._index)
        r.add_get("/static/{name}", self._static)
        r.add_get("/login", self._login)
        r.add_get("/api/events", self._events)
        r.add_post("/api/settings", self._settings)
        r.add_get("/api/downloads", self._downloads)
        r.add_post("/api/downloads", self._start_download)
        r.add_get("/api/downloads/{id}", self._download)
        r.add_post("/api/downloads/{id}/{action}", self._download_action)
        self.app = app
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)

    async def __aenter__(self) -> ControlServer:
        await self._runner.setup()
        port = self.requested_port
        if port is None:  # the usual port, unless another peer of this host has it
            port = DEFAULT_CONTROL_PORT if _port_is_free(DEFAULT_CONTROL_PORT) else 0
        self.port = await start_site(
            self._runner,
            CONTROL_HOST,
            port,
            "the control port: pick another --control-port, or 0 for any",
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if host not in (f"{CONTROL_HOST}:{self.port}", f"localhost:{self.port}"):
            return error_response(403, "bad_host", "the control API answers 127.0.0.1 only")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in (
            f"http://{CONTROL_HOST}:{self.port}",
            f"http://localhost:{self.port}",
        ):
            return error_response(403, "bad_origin", "requests from other web pages are refused")
        if request.path.startswith("/api/") and not self._authorized(request):
            return error_response(401, "bad_token", "missing or wrong control token")
        try:
            return await handler(request)
        except AmbiguousError as exc:
            return web.json_response(
                {"error": {"code": "ambiguous", "message": str(exc), "candidates": exc.candidates}},
                status=409,
            )
        except SwarmshareError as exc:
            return error_response(400, "refused", str(exc))

    def _authorized(self, request: web.Request) -> bool:
        """The token, as a Bearer header (the CLI) or the page's cookie (the browser)."""
        expected = self.daemon.token.encode()
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].encode(), expected):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), expected)

    # ---- the web page ----------------------------------------------------------------------

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return _static_file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return _static_file(request.match_info["name"])

    async def _login(self, request: web.Request) -> web.StreamResponse:
        """Trade the token (from `swarmshare open`) for a cookie the page's requests carry."""
        token = request.query.get("token", "")
        if not hmac.compare_digest(token.encode(), self.daemon.token.encode()):
            return error_response(401, "bad_token", "open the page with `swarmshare open`")
        response = web.HTTPFound("/")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a snapshot of everything whenever something changes."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        sent = ""
        try:
            await response.prepare(request)
            while True:
                changed = self.daemon.change_event
                body = json.dumps(self.snapshot(), separators=(",", ":"))
                if body != sent:
                    await response.write(f"data: {body}\n\n".encode())
                    sent = body
                else:
                    await response.write(b": keep-alive\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), EVENT_KEEPALIVE_SECONDS)
                await asyncio.sleep(EVENT_MIN_GAP_SECONDS)  # at most a few snapshots a second
        except ConnectionError:  # the page was closed or reloaded: nothing went wrong
            _log.debug("a page closed its event stream")
        return response

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows."""
        daemon = self.daemon
        swarm, library, db = daemon.swarm, daemon.library, daemon.db
        assert swarm is not None and library is not None and db is not None
        held = set(daemon.catalog().by_id())
        network = [item.as_json() | {"here": item.id in held} for item in swarm.network()]
        peers = [peer_json(p) for p in swarm.table.live()]
        if daemon.legacy is not None:
            network += [c.as_json() | {"here": False} for c in daemon.legacy.live_contents()]
            peers += daemon.legacy.peers()
        status = daemon.status()
        return {
            "status": {
                k: status[k] for k in ("name", "peer_id", "address", "port", "peers", "items")
            },
            "network": network,
            "peers": peers,
            "library": [r.as_json() for r in library.contents()],
            "downloads": [d.stats.as_json() for d in daemon.downloads.all()],
            "log": [dict(row) for row in reversed(db.transfers(50))],
            "settings": {"downloads_dir": str(daemon.downloads_dir())},
        }

    async def _settings(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        folder = body.get("downloads_dir")
        if not isinstance(folder, str) or not folder.strip():
            return error_response(400, "bad_request", "give downloads_dir: a folder path")
        self.daemon.set_downloads_dir(folder.strip())
        return web.json_response({"downloads_dir": str(self.daemon.downloads_dir())})

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.daemon.status())

    async def _peers(self, _request: web.Request) -> web.Response:
        swarm = self.daemon.swarm
        assert swarm is not None
        peers = [peer_json(p) for p in swarm.table.live()]
        if self.daemon.legacy is not None:
            peers += self.daemon.legacy.peers()
        return web.json_response(peers)

    async def _network(self, _request: web.Request) -> web.Response:
        swarm = self.daemon.swarm
        assert swarm is not None
        held = set(self.daemon.catalog().by_id())
        items = [item.as_json() | {"here": item.id in held} for item in swarm.network()]
        if self.daemon.legacy is not None:
            items += [c.as_json() | {"here": False} for c in self.daemon.legacy.live_contents()]
        return web.json_response(items)

    async def _library(self, _request: web.Request) -> web.Response:
        assert self.daemon.library is not None
        return web.json_response([r.as_json() for r in self.daemon.library.contents()])

    async def _reload(self, _request: web.Request) -> web.Response:
        self.daemon.reload()
        return web.json_response({"items": len(self.daemon.catalog().items)})

    async def _share(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        paths = body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return error_response(400, "bad_request", "give paths: a list of strings")
        home = self.daemon.settings.home

        def work() -> list[dict[str, object]]:
            db = Database.open_home(home)
            try:
                library = Library(db)
                results: list[dict[str, object]] = []
                for path in paths:
                    try:
                        result = library.share(path)
                        results.append(result.record.as_json() | {"skipped": result.skipped})
                    except SwarmshareError as exc:
                        results.append({"path": path, "error": str(exc)})
                return results
            finally:
                db.close()

        results = await asyncio.to_thread(work)
        self.daemon.reload()
        return web.json_response(results)

    async def _unshare(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ref = body.get("ref")
        if not isinstance(ref, str):
            return error_response(400, "bad_request", "give ref: an ID prefix or a name")
        assert self.daemon.library is not None
        record = self.daemon.library.unshare(ref)
        self.daemon.reload()
        return web.json_response(record.as_json())

    async def _log(self, request: web.Request) -> web.Response:
        assert self.daemon.db is not None and self.daemon.translog is not None
        self.daemon.translog.flush()
        try:
            limit = max(1, min(100_000, int(request.query.get("limit", "1000"))))
        except ValueError:
            return error_response(400, "bad_request", "limit must be a number")
        rows = self.daemon.db.transfers(limit)
        return web.json_response([dict(row) for row in rows])

    async def _downloads(self, _request: web.Request) -> web.Response:
        return web.json_response([d.stats.as_json() for d in self.daemon.downloads.all()])

    async def _download(self, request: web.Request) -> web.Response:
        download = self.daemon.downloads.get(request.match_info["id"])
        return web.json_response(download.stats.as_json())

    async def _start_download(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ref, output, dest_dir = body.get("ref"), body.get("output"), body.get("dest_dir")
        force, wait = bool(body.get("force", False)), body.get("wait", 5.0)
        if not isinstance(ref, str) or not ref:
            return error_response(400, "bad_request", "give ref: a name, ID prefix or ID")
        if output is not None and not isinstance(output, str):
            return error_response(400, "bad_request", "output must be a path")
        if not isinstance(wait, int | float) or not 0 <= wait <= 600:
            return error_response(400, "bad_request", "wait must be 0..600 seconds")
        folder = Path(dest_dir) if isinstance(dest_dir, str) else self.daemon.downloads_dir()
        started = await self.daemon.start_download(ref, output, folder, force, float(wait))
        return web.json_response(started)

    async def _download_action(self, request: web.Request) -> web.Response:
        ref, action = request.match_info["id"], request.match_info["action"]
        manager = self.daemon.downloads
        if action == "pause":
            download = manager.pause(ref)
        elif action == "resume":
            download = manager.resume(ref)
        elif action == "cancel":
            download = await manager.cancel(ref)
        else:
            return error_response(404, "not_found", "actions: pause, resume, cancel")
        return web.json_response(download.stats.as_json())


def _port_is_free(port: int) -> bool:
    """Whether a listening socket could be bound to CONTROL_HOST:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((CONTROL_HOST, port))
        except OSError:
            return False
    return True


def _static_file(name: str) -> web.StreamResponse:
    """One of the page's own files, by exact name (nothing else is served)."""
    if name not in STATIC_FILES:
        return error_response(404, "not_found", "no such file")
    data = resources.files("swarmshare.web").joinpath("static", name).read_bytes()
    return web.Response(
        body=data,
        content_type=STATIC_FILES[name],
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise DaemonError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise DaemonError("the request body must be a JSON object")
    return body
