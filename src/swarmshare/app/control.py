"""The control API: how the CLI (and later the web page) drives a running daemon.

Listens on 127.0.0.1 only. Every /api request must carry the per-home token the daemon wrote
to its home (`Authorization: Bearer TOKEN`), and a Host header naming this loopback address, so
neither another local user nor a web page (DNS rebinding) can drive it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from swarmshare.app.node import Node
from swarmshare.errors import AmbiguousError, DaemonError, NotFoundError, SwarmshareError
from swarmshare.net.server import error_response, start_site
from swarmshare.settings import DEFAULT_CONTROL_PORT

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
    """The control API server; `async with ControlServer(node, token, port) as c:`."""

    def __init__(self, node: Node, token: str, port: int | None) -> None:
        self.node = node
        self.token = token
        self.requested_port = port
        self.port = 0
        app = web.Application(client_max_size=1 << 20, middlewares=[self._guard])
        r = app.router
        r.add_get("/api/status", self._status)
        r.add_get("/api/lan-page-qr.svg", self._lan_page_qr)
        r.add_get("/api/peers", self._peers)
        r.add_get("/api/network", self._network)
        r.add_get("/api/library", self._library)
        r.add_post("/api/reload", self._reload)
        r.add_post("/api/share", self._share)
        r.add_post("/api/unshare", self._unshare)
        r.add_post("/api/torrent", self._torrent)
        r.add_get("/api/log", self._log)
        r.add_get("/", self._index)
        r.add_get("/static/{name}", self._static)
        r.add_get("/login", self._login)
        r.add_get("/api/events", self._events)
        r.add_post("/api/settings", self._settings)
        r.add_get("/api/downloads", self._downloads)
        r.add_post("/api/downloads", self._start_download)
        r.add_get("/api/downloads/{id}", self._download)
        r.add_get("/api/downloads/{id}/watch", self._watch)
        r.add_post("/api/downloads/{id}/{action}", self._download_action)
        r.add_get("/api/inbox", self._inbox)
        r.add_post("/api/inbox/{id}/{action}", self._inbox_action)
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
        except NotFoundError as exc:
            return error_response(404, "not_found", str(exc))
        except SwarmshareError as exc:
            return error_response(400, "refused", str(exc))

    def _authorized(self, request: web.Request) -> bool:
        """The token, as a Bearer header (the CLI) or the page's cookie (the browser)."""
        expected = self.token.encode()
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
        if not hmac.compare_digest(token.encode(), self.token.encode()):
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
        version = -1
        try:
            await response.prepare(request)
            while True:
                body = json.dumps(self.snapshot(), separators=(",", ":"))
                if body != sent:
                    await response.write(f"data: {body}\n\n".encode())
                    sent = body
                else:
                    await response.write(b": keep-alive\n\n")
                version = await self.node.changes.wait(version, EVENT_KEEPALIVE_SECONDS)
                await asyncio.sleep(EVENT_MIN_GAP_SECONDS)  # at most a few snapshots a second
        except ConnectionError:  # the page was closed or reloaded: nothing went wrong
            _log.debug("a page closed its event stream")
        return response

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows."""
        node = self.node
        status = node.status()
        return {
            "status": {
                k: status[k]
                for k in (
                    "name",
                    "peer_id",
                    "address",
                    "port",
                    "peers",
                    "items",
                    "lan_page",
                    "compare_code",
                    "fingerprint",
                    "tls",
                )
            },
            "network": node.network(),
            "peers": node.peers(),
            "library": node.library_list(),
            "downloads": node.downloads(),
            "log": list(reversed(node.log_rows(50))),
            "settings": {"downloads_dir": str(node.downloads_dir())},
            "inbox": [] if node.localsend is None else node.localsend.inbox.list(),
        }

    async def _settings(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        folder = body.get("downloads_dir")
        if not isinstance(folder, str) or not folder.strip():
            return error_response(400, "bad_request", "give downloads_dir: a folder path")
        return web.json_response({"downloads_dir": str(self.node.set_downloads_dir(folder))})

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.status() | {"control_port": self.port})

    async def _lan_page_qr(self, _request: web.Request) -> web.Response:
        url = self.node.lan_page_url()
        if url is None:
            return error_response(404, "no_lan_page", "this peer has no LAN page")
        from swarmshare.app.qr import qr_svg

        return web.Response(
            body=qr_svg(url), content_type="image/svg+xml", headers={"Cache-Control": "no-cache"}
        )

    async def _peers(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.peers())

    async def _network(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.network())

    async def _library(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.library_list())

    async def _reload(self, _request: web.Request) -> web.Response:
        self.node.reload()
        return web.json_response({"items": len(self.node.shelf.shares())})

    async def _share(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        paths = body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return error_response(400, "bad_request", "give paths: a list of strings")
        return web.json_response(await self.node.share(paths))

    async def _unshare(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ref = body.get("ref")
        if not isinstance(ref, str):
            return error_response(400, "bad_request", "give ref: an ID prefix or a name")
        return web.json_response(self.node.unshare(ref))

    async def _torrent(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ref, hybrid = body.get("ref"), body.get("hybrid", False)
        if not isinstance(ref, str) or not isinstance(hybrid, bool):
            return error_response(400, "bad_request", "give ref (a string) and hybrid (bool)")
        return web.json_response(await self.node.torrent(ref, hybrid, 0.0))

    async def _log(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(1_000_000, int(request.query.get("limit", "1000"))))
        except ValueError:
            return error_response(400, "bad_request", "limit must be a number")
        return web.json_response(self.node.log_rows(limit))

    async def _downloads(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.downloads())

    async def _download(self, request: web.Request) -> web.Response:
        return web.json_response(self.node.download(request.match_info["id"]))

    async def _watch(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "-1"))
            timeout = max(0.0, min(60.0, float(request.query.get("timeout", "10"))))
        except ValueError:
            return error_response(400, "bad_request", "after and timeout must be numbers")
        return web.json_response(await self.node.watch(request.match_info["id"], after, timeout))

    async def _start_download(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ref, output, dest_dir = body.get("ref"), body.get("output"), body.get("dest_dir")
        force, wait = bool(body.get("force", False)), body.get("wait")
        if not isinstance(ref, str) or not ref:
            return error_response(400, "bad_request", "give ref: a name, ID prefix or ID")
        if output is not None and not isinstance(output, str):
            return error_response(400, "bad_request", "output must be a path")
        if dest_dir is not None and not isinstance(dest_dir, str):
            return error_response(400, "bad_request", "dest_dir must be a path")
        if wait is not None and (not isinstance(wait, int | float) or not 0 <= wait <= 3600):
            return error_response(400, "bad_request", "wait must be 0..3600 seconds")
        started = await self.node.start_download(
            ref, output, dest_dir, force, None if wait is None else float(wait)
        )
        return web.json_response(started)

    async def _download_action(self, request: web.Request) -> web.Response:
        ref, action = request.match_info["id"], request.match_info["action"]
        if action == "pause":
            return web.json_response(await self.node.pause(ref))
        if action == "resume":
            body = await _json_body(request) if request.can_read_body else {}
            wait = body.get("wait")
            if wait is not None and not isinstance(wait, int | float):
                return error_response(400, "bad_request", "wait must be a number")
            return web.json_response(
                await self.node.resume(ref, None if wait is None else float(wait))
            )
        if action == "cancel":
            return web.json_response(await self.node.cancel(ref))
        return error_response(404, "not_found", "actions: pause, resume, cancel")

    async def _inbox(self, _request: web.Request) -> web.Response:
        return web.json_response(self.node.inbox())

    async def _inbox_action(self, request: web.Request) -> web.Response:
        ref, action = request.match_info["id"], request.match_info["action"]
        if action not in ("accept", "refuse"):
            return error_response(404, "not_found", "actions: accept, refuse")
        return web.json_response(self.node.inbox_decide(ref, action == "accept"))


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
