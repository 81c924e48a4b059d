"""Fixed costs of a command: what it waits for besides the work itself (events, never time)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from swarmshare.app import node as node_module
from swarmshare.app.node import Changes, Node
from swarmshare.core.transfer import State


@dataclass
class _Stats:
    state: State = State.FETCHING

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state.value}


@dataclass
class _Download:
    stats: _Stats = field(default_factory=_Stats)

    @property
    def state(self) -> State:
        return self.stats.state


class _Transfers:
    def __init__(self) -> None:
        self.download = _Download()

    def get(self, _ref: str) -> _Download:
        return self.download


class _Watched:
    """What Node.watch reads: the change counter and the downloads."""

    def __init__(self) -> None:
        self.changes = Changes()
        self.transfers = _Transfers()


def test_a_watcher_hears_of_the_end_of_a_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates during a run are spaced out; the end is not (a get waits for it to exit)."""
    monkeypatch.setattr(node_module, "WATCH_MIN_GAP_SECONDS", 3600.0)

    async def run() -> dict[str, Any]:
        watched = _Watched()
        watch = asyncio.ensure_future(Node.watch(watched, "x", 0, 3600.0))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        watched.changes.bump()  # a chunk came in: the watcher holds its answer back
        for _ in range(5):
            await asyncio.sleep(0)
        assert not watch.done()
        watched.transfers.download.stats.state = State.DONE
        watched.changes.bump()  # the run ended: the answer goes now
        return await asyncio.wait_for(watch, 30)

    assert asyncio.run(run())["state"] == "done"
