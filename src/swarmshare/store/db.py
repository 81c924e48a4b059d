"""The one SQLite database of a swarmshare home (WAL mode), and its schema."""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    root TEXT NOT NULL,
    manifest BLOB NOT NULL,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS contents_root ON contents(root);
CREATE TABLE IF NOT EXISTS files (
    content_id TEXT NOT NULL REFERENCES contents(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    PRIMARY KEY (content_id, idx)
);
CREATE TABLE IF NOT EXISTS chunk_index (
    sha256 TEXT NOT NULL,
    content_id TEXT NOT NULL REFERENCES contents(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunk_index_sha ON chunk_index(sha256);
CREATE INDEX IF NOT EXISTS chunk_index_content ON chunk_index(content_id);
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    direction TEXT NOT NULL,
    peer TEXT NOT NULL,
    content_id TEXT NOT NULL,
    name TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    result TEXT NOT NULL,
    legacy INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS downloads (
    content_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    dest TEXT NOT NULL,
    manifest BLOB NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


class Database:
    """A connection to `swarmshare.db` in a home directory; one per thread that uses it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        if self._version() < SCHEMA_VERSION:
            self.conn.executescript(_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")

    @classmethod
    def open_home(cls, home: Path) -> Database:
        """Open (creating if needed) the database of the home directory `home`."""
        home.mkdir(parents=True, exist_ok=True)
        return cls(home / "swarmshare.db")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def peer_id(self) -> str:
        """This home's stable peer ID (random, made on first use)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='peer_id'").fetchone()
        if row:
            return str(row[0])
        new = secrets.token_hex(8)
        self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('peer_id', ?)", (new,))
        row = self.conn.execute("SELECT value FROM meta WHERE key='peer_id'").fetchone()
        return str(row[0])

    def meta(self, key: str) -> str | None:
        """A stored setting (e.g. the download folder), or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key)"
                " DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def log_transfers(self, rows: list[TransferRow]) -> None:
        """Append rows to the transfer log in one transaction."""
        if not rows:
            return
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO transfers(ts, direction, peer, content_id, name, chunk, bytes,"
                " result, legacy) VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )

    def transfers(self, limit: int = 1000) -> list[sqlite3.Row]:
        """The newest `limit` rows of the transfer log, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM transfers ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return rows[::-1]

    def _version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])


TransferRow = tuple[float, str, str, str, str, int, int, str, int]


def transfer_row(
    direction: str,
    peer: str,
    content_id: str,
    name: str,
    chunk: int,
    nbytes: int,
    result: str,
    *,
    legacy: bool = False,
    now: float | None = None,
) -> TransferRow:
    """One transfer-log row: who, what, when, how many bytes, and how it ended."""
    ts = time.time() if now is None else now
    return (ts, direction, peer, content_id, name, chunk, nbytes, result, int(legacy))
