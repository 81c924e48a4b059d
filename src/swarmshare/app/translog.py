"""The transfer log: every chunk served or fetched (the seed's upload and download logs).

Rows are buffered and written in one transaction every FLUSH_SECONDS, so logging a chunk never
costs a disk sync on the transfer path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from swarmshare.store.db import Database, TransferRow, transfer_row

FLUSH_SECONDS = 0.5


class TransferLog:
    """Buffered writer of transfer-log rows; use as `async with TransferLog(db) as log:`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._rows: list[TransferRow] = []
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
        """Log one chunk transfer ('up' or 'down')."""
        self._rows.append(
            transfer_row(direction, peer, content_id, name, chunk, nbytes, result, legacy=legacy)
        )

    def flush(self) -> None:
        """Write buffered rows now."""
        rows, self._rows = self._rows, []
        self._db.log_transfers(rows)
        if rows and self.on_flush is not None:
            self.on_flush()

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if self._rows:
                self.flush()
