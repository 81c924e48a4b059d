"""The transfer log: every chunk served or fetched (the seed's upload and download logs).

Rows are buffered and written in one transaction every FLUSH_SECONDS, so logging a chunk never
costs a disk sync on the transfer path. The log is bounded: the database keeps the newest
MAX_TRANSFER_LOG_ROWS rows, and a refusal repeated by the same peer for the same content (a
flood of requests for content we do not hold) is one row per REFUSAL_WINDOW_SECONDS whose
`count` says how many times it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from swarmshare.limits import MAX_REFUSAL_KEYS, MAX_TRANSFER_LOG_ROWS, REFUSAL_WINDOW_SECONDS
from swarmshare.store.db import Database, TransferRow, transfer_row

FLUSH_SECONDS = 0.5


class TransferLog:
    """Buffered writer of transfer-log rows; use as `async with TransferLog(db) as log:`."""

    def __init__(
        self,
        db: Database,
        *,
        max_rows: int = MAX_TRANSFER_LOG_ROWS,
        refusal_window: float = REFUSAL_WINDOW_SECONDS,
        max_refusal_keys: int = MAX_REFUSAL_KEYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._rows: list[TransferRow] = []
        self._refusals: dict[tuple[str, str, str, str], _Refusal] = {}
        self._recounts: list[tuple[int, int]] = []  # (row id, count) of settled refusals
        self._max_rows = max_rows
        self._window = refusal_window
        self._max_keys = max_refusal_keys
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.on_flush: Callable[[], None] | None = None

    async def __aenter__(self) -> TransferLog:
        self._task = asyncio.create_task(self._flusher())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()

    def add(
        self,
        direction: str,
        peer: str,
        content_id: str,
        name: str,
        chunk: int,
        nbytes: int,
        result: str,
        *,
        legacy: bool = False,
    ) -> None:
        """Log one chunk transfer ('up' or 'down'); a repeated refusal only counts."""
        now = self._clock()
        if result != "ok":
            key = (direction, peer, content_id, result)
            refusal = self._refusals.get(key)
            if refusal is not None:
                if now - refusal.since < self._window:
                    refusal.count += 1
                    return
                self._settle(refusal)
            if len(self._refusals) >= self._max_keys:
                self.flush()
                self._refusals.clear()
            self._refusals[key] = _Refusal(now, len(self._rows))
        self._rows.append(
            transfer_row(
                direction, peer, content_id, name, chunk, nbytes, result, legacy=legacy, now=now
            )
        )

    def flush(self) -> None:
        """Write buffered rows and the counts of repeated refusals now."""
        rows, self._rows = self._rows, []
        recounts, self._recounts = self._recounts, []
        fresh: list[_Refusal] = []
        for refusal in self._refusals.values():
            if refusal.row_id is None:  # first seen since the last flush: its row is buffered
                rows[refusal.position] = (*rows[refusal.position][:-1], refusal.count)
                fresh.append(refusal)
            elif refusal.count != refusal.written:
                recounts.append((refusal.row_id, refusal.count))
            refusal.written = refusal.count
        ids = self._db.log_transfers(rows, recounts, self._max_rows)
        for refusal in fresh:
            refusal.row_id = ids[refusal.position]
        now = self._clock()
        self._refusals = {
            key: refusal
            for key, refusal in self._refusals.items()
            if now - refusal.since < self._window
        }
        if (rows or recounts) and self.on_flush is not None:
            self.on_flush()

    def _settle(self, refusal: _Refusal) -> None:
        """A refusal's window closed: its final count goes out with the next flush."""
        if refusal.row_id is None:
            row = self._rows[refusal.position]
            self._rows[refusal.position] = (*row[:-1], refusal.count)
        elif refusal.count != refusal.written:
            self._recounts.append((refusal.row_id, refusal.count))

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if self._rows or self._refusals:
                self.flush()


@dataclass(slots=True)
class _Refusal:
    """One refusal being counted: when first seen, its row (its place in the buffer, then its
    id once written), how many times so far and how many the database has."""

    since: float
    position: int
    count: int = 1
    written: int = 0
    row_id: int | None = None
