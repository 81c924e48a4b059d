"""The downloads a home knows (running, paused, failed), so that they outlive the process."""

from __future__ import annotations

import time
from dataclasses import dataclass

from swarmshare.store.db import Database


@dataclass(frozen=True, slots=True)
class DownloadRow:
    """One remembered download: what, where to, its manifest once known, how it stands, and the
    torrent it was started from (a magnet link or a .torrent's bytes; empty: none)."""

    content_id: str
    name: str
    dest: str
    manifest: bytes
    state: str
    error: str = ""
    torrent: bytes = b""


class DownloadTable:
    """The `downloads` table of one database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def rows(self) -> list[DownloadRow]:
        """Every remembered download, oldest first."""
        rows = self._db.conn.execute(
            "SELECT content_id, name, dest, manifest, state, error, torrent FROM downloads"
            " ORDER BY created"
        ).fetchall()
        return [DownloadRow(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], bytes(r[6])) for r in rows]

    def save(self, row: DownloadRow) -> None:
        """Insert or update one download (an empty manifest keeps the one already saved)."""
        now = time.time()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO downloads(content_id, name, dest, manifest, state, error, created,"
                " updated, torrent) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(content_id) DO UPDATE"
                " SET name=excluded.name, dest=excluded.dest, state=excluded.state,"
                " error=excluded.error, updated=excluded.updated, torrent=excluded.torrent,"
                " manifest=CASE WHEN length(excluded.manifest) > 0 THEN excluded.manifest"
                " ELSE downloads.manifest END",
                (
                    row.content_id,
                    row.name,
                    row.dest,
                    row.manifest,
                    row.state,
                    row.error,
                    now,
                    now,
                    row.torrent,
                ),
            )

    def forget(self, content_id: str) -> None:
        """Drop a finished or cancelled download."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM downloads WHERE content_id = ?", (content_id,))
