"""The one session between a face (the CLI) and the app.

`open_session(settings)` decides, in this one place, how a command reaches the app: through the
running daemon's control API when one runs for the home (`RemoteSession`), else by running the
same app objects in this process (`LocalSession`: a `Node` on an event loop in a helper thread).
Both offer the same blocking methods with the same results, errors and messages, so a command
behaves the same either way.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from swarmshare.app.control_client import ControlClient
from swarmshare.app.shares import Json, ShareProgress, library_json, share_json
from swarmshare.errors import DaemonError
from swarmshare.settings import Settings
from swarmshare.store.db import Database
from swarmshare.store.library import Library, share_paths

if TYPE_CHECKING:
    import asyncio

    from swarmshare.app.node import Node

T = TypeVar("T")
FINISHED = ("done", "failed", "cancelled", "paused")
"""Download states in which nothing more happens without a command."""


class Session(Protocol):
    """What a face can ask of swarmshare."""

    daemon: bool
    """True when a running daemon answers (its downloads go on after the command ends)."""

    def network(self, wait: float) -> list[Json]:
        """What the network shares (without a daemon: after asking and waiting up to `wait`)."""

    def peers(self, wait: float) -> list[Json]:
        """The live peers."""

    def library(self) -> list[Json]:
        """What this peer shares."""

    def share(self, paths: list[str], progress: ShareProgress | None) -> list[Json]:
        """Share files or folders: a result (or an `error`) per path."""

    def unshare(self, ref: str) -> Json:
        """Stop sharing one content."""

    def torrent(self, ref: str, hybrid: bool, wait: float) -> Json:
        """A .torrent of a content (see `Node.torrent`)."""

    def log(self, limit: int) -> list[Json]:
        """The newest rows of the transfer log."""

    def status(self) -> Json:
        """The daemon's state (DaemonError without one)."""

    def downloads(self) -> list[Json]:
        """Every download this home knows."""

    def start_download(
        self, ref: str, output: str | None, dest_dir: str, force: bool, wait: float
    ) -> Json:
        """Resolve `ref` and start downloading it."""

    def watch(self, ref: str, after: int, timeout: float) -> Json:
        """A download's state after the next change (at most `timeout` s)."""

    def pause(self, ref: str) -> Json:
        """Pause; returns once nothing more is written."""

    def resume(self, ref: str, wait: float | None) -> Json:
        """Resume."""

    def cancel(self, ref: str) -> Json:
        """Cancel and delete the part file."""

    def inbox(self) -> list[Json]:
        """LocalSend offers waiting for an answer (DaemonError without a daemon)."""

    def inbox_decide(self, ref: str, accept: bool) -> Json:
        """Accept or refuse a LocalSend offer."""

    def close(self) -> None:
        """End the session (a local one pauses what it was downloading)."""


def open_session(settings: Settings) -> Session:
    """The daemon's session when one runs for this home, else one running the app here."""
    client = ControlClient.find(settings.home)
    if client is not None:
        return RemoteSession(client, settings)
    return LocalSession(settings)


class RemoteSession:
    """Calls the running daemon."""

    daemon = True

    def __init__(self, client: ControlClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def network(self, wait: float) -> list[Json]:
        """The daemon's view (it has been listening all along)."""
        result: list[Json] = self.client.get("network")
        return result

    def peers(self, wait: float) -> list[Json]:
        """The daemon's peers."""
        result: list[Json] = self.client.get("peers")
        return result

    def library(self) -> list[Json]:
        """The daemon's library."""
        result: list[Json] = self.client.get("library")
        return result

    def share(self, paths: list[str], progress: ShareProgress | None) -> list[Json]:
        """Hash here (with progress), then have the daemon serve and announce it at once."""
        results = share_json(paths, share_paths(self.settings.home, paths, progress))
        self.client.post("reload", {})
        return results

    def unshare(self, ref: str) -> Json:
        """Through the daemon, which stops serving it at once."""
        result: Json = self.client.post("unshare", {"ref": ref})
        return result

    def torrent(self, ref: str, hybrid: bool, wait: float) -> Json:
        """Made by the daemon, which knows the holders and serves the web seed routes."""
        result: Json = self.client.post("torrent", {"ref": ref, "hybrid": hybrid})
        return result

    def log(self, limit: int) -> list[Json]:
        """The daemon's log (with what it has not written yet)."""
        result: list[Json] = self.client.get(f"log?limit={limit}")
        return result

    def status(self) -> Json:
        """The daemon's state."""
        result: Json = self.client.get("status")
        return result

    def downloads(self) -> list[Json]:
        """The daemon's downloads."""
        result: list[Json] = self.client.get("downloads")
        return result

    def start_download(
        self, ref: str, output: str | None, dest_dir: str, force: bool, wait: float
    ) -> Json:
        """Started by the daemon."""
        body = {"ref": ref, "output": output, "dest_dir": dest_dir, "force": force, "wait": wait}
        result: Json = self.client.post("downloads", body, timeout=wait + 30)
        return result

    def watch(self, ref: str, after: int, timeout: float) -> Json:
        """Long-polls the daemon."""
        result: Json = self.client.get(
            f"downloads/{ref}/watch?after={after}&timeout={timeout}", timeout=timeout + 30
        )
        return result

    def pause(self, ref: str) -> Json:
        """Paused by the daemon, acknowledged."""
        result: Json = self.client.post(f"downloads/{ref}/pause", {})
        return result

    def resume(self, ref: str, wait: float | None) -> Json:
        """Resumed by the daemon."""
        result: Json = self.client.post(f"downloads/{ref}/resume", {"wait": wait})
        return result

    def cancel(self, ref: str) -> Json:
        """Cancelled by the daemon."""
        result: Json = self.client.post(f"downloads/{ref}/cancel", {})
        return result

    def inbox(self) -> list[Json]:
        """The daemon's LocalSend offers."""
        result: list[Json] = self.client.get("inbox")
        return result

    def inbox_decide(self, ref: str, accept: bool) -> Json:
        """Answered by the daemon, whose waiting sender hears at once."""
        action = "accept" if accept else "refuse"
        result: Json = self.client.post(f"inbox/{ref}/{action}", {})
        return result

    def close(self) -> None:
        """Nothing to end: the daemon goes on."""


class LocalSession:
    """Runs a Node in this process, on an event loop in a helper thread.

    The main thread stays free for the face (and for Ctrl-C, which Python delivers there).
    """

    daemon = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._node: Node | None = None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._looked = False

    # ---- the app in a thread -----------------------------------------------------------------

    def _call(self, make: Callable[[Node], Coroutine[Any, Any, T]]) -> T:
        import asyncio

        node = self._start()
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(make(node), self._loop)
        self._pending.add(future)
        try:
            return _result(future)
        finally:
            self._pending.discard(future)

    def _start(self) -> Node:
        if self._node is not None:
            return self._node
        # Here, not at start: `share` and `library` need no event loop, network or downloads.
        import asyncio

        from swarmshare.app.node import Node

        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[Node] = concurrent.futures.Future()
        node = Node(self.settings)

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def enter() -> None:
                try:
                    ready.set_result(await node.__aenter__())
                except BaseException as exc:
                    ready.set_exception(exc)

            loop.run_until_complete(enter())
            if ready.exception() is None:
                loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="swarmshare-session", daemon=True)
        self._thread.start()
        try:
            self._node = _result(ready)
        except BaseException:
            self._thread.join()
            self._thread = None
            raise
        return self._node

    def close(self) -> None:
        """Stop the app: running downloads pause, sockets close, the thread ends."""
        loop, node, thread = self._loop, self._node, self._thread
        if loop is None or thread is None:
            return
        import asyncio

        for future in list(self._pending):
            future.cancel()
        if node is not None:
            future = asyncio.run_coroutine_threadsafe(node.__aexit__(None, None, None), loop)
            concurrent.futures.wait([future])
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._loop = self._node = self._thread = None

    # ---- Session -----------------------------------------------------------------------------

    def _look(self, wait: float) -> None:
        if not self._looked:
            self._looked = True

            async def look(node: Node) -> None:
                await node.look(wait)

            self._call(look)

    def network(self, wait: float) -> list[Json]:
        """Ask the network, wait for answers, list what it shares."""
        self._look(wait)
        return self._call(_sync(lambda n: n.network()))

    def peers(self, wait: float) -> list[Json]:
        """Ask the network, wait for answers, list the peers."""
        self._look(wait)
        return self._call(_sync(lambda n: n.peers()))

    def library(self) -> list[Json]:
        """Straight from the database: no network."""
        db = Database.open_home(self.settings.home)
        try:
            return library_json(Library(db))
        finally:
            db.close()

    def share(self, paths: list[str], progress: ShareProgress | None) -> list[Json]:
        """Hash and add to the library: no network."""
        return share_json(paths, share_paths(self.settings.home, paths, progress))

    def unshare(self, ref: str) -> Json:
        """From the database: no network."""
        return self._call(_sync(lambda n: n.unshare(ref)))

    def torrent(self, ref: str, hybrid: bool, wait: float) -> Json:
        """Ask the network for holders (waiting up to `wait` s), then make it here."""
        return self._call(lambda n: n.torrent(ref, hybrid, wait))

    def log(self, limit: int) -> list[Json]:
        """From the database."""
        return self._call(_sync(lambda n: n.log_rows(limit)))

    def status(self) -> Json:
        """Only a daemon has a state to show."""
        raise DaemonError(
            f"no swarmshare daemon runs for {self.settings.home} (start: swarmshare run)"
        )

    def inbox(self) -> list[Json]:
        """Only a daemon receives LocalSend offers."""
        raise DaemonError(
            f"no swarmshare daemon runs for {self.settings.home}"
            " (start: swarmshare run --localsend)"
        )

    def inbox_decide(self, ref: str, accept: bool) -> Json:
        """Only a daemon receives LocalSend offers."""
        return self.inbox()[0]

    def downloads(self) -> list[Json]:
        """The downloads remembered in this home."""
        return self._call(_sync(lambda n: n.downloads()))

    def start_download(
        self, ref: str, output: str | None, dest_dir: str, force: bool, wait: float
    ) -> Json:
        """Started here, in the helper thread's app."""
        return self._call(lambda n: n.start_download(ref, output, dest_dir, force, wait))

    def watch(self, ref: str, after: int, timeout: float) -> Json:
        """Waits for the next change."""
        return self._call(lambda n: n.watch(ref, after, timeout))

    def pause(self, ref: str) -> Json:
        """Paused, acknowledged."""
        return self._call(lambda n: n.pause(ref))

    def resume(self, ref: str, wait: float | None) -> Json:
        """Resumed here (it runs while this process does)."""
        return self._call(lambda n: n.resume(ref, wait))

    def cancel(self, ref: str) -> Json:
        """Cancelled, part file removed."""
        return self._call(lambda n: n.cancel(ref))


def _sync(fn: Callable[[Node], T]) -> Callable[[Node], Coroutine[Any, Any, T]]:
    async def call(node: Node) -> T:
        return fn(node)

    return call


def _result(future: concurrent.futures.Future[T]) -> T:
    """The future's result, waiting in short steps so that Ctrl-C reaches the main thread."""
    while True:
        try:
            return future.result(timeout=0.5)
        except concurrent.futures.TimeoutError:
            continue
