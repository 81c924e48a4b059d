"""The one SQLite database of a swarmshare home (WAL mode), and its schema.

The home and everything swarmshare writes in it are this user's alone (0700 and 0600): the
database lists every shared path and every peer that fetched from us.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from swarmshare.errors import StoreError
from swarmshare.limits import MAX_TRANSFER_LOG_ROWS

SCHEMA_VERSION = 4
DB_FILE = "swarmshare.db"
OPEN_TIMEOUT_SECONDS = 10.0  # how long opening waits for another process holding the file
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

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
    legacy INTEGER NOT NULL DEFAULT 0,
    count INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS downloads (
    content_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    dest TEXT NOT NULL,
    manifest BLOB NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    torrent BLOB NOT NULL DEFAULT x''
);
"""


_log = logging.getLogger("swarmshare")

# Schema changes from each older version to the next.
_MIGRATIONS = {
    1: "ALTER TABLE transfers ADD COLUMN count INTEGER NOT NULL DEFAULT 1;",
    # Content IDs became BitTorrent v2 infohashes: older records name nothing any peer knows.
    2: "DELETE FROM chunk_index; DELETE FROM files; DELETE FROM contents; DELETE FROM downloads;",
    # A download started from a torrent remembers it (magnet link or .torrent), to rejoin its
    # BitTorrent swarm when resumed.
    3: "ALTER TABLE downloads ADD COLUMN torrent BLOB NOT NULL DEFAULT x'';",
}


class Database:
    """A connection to `swarmshare.db` in a home directory; one per thread that uses it.

    A damaged file raises StoreError (one line naming the file and the way out), at open or at
    any later query, never sqlite3's own exception."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _create_private(path)
        self.conn = sqlite3.connect(
            path, isolation_level=None, timeout=OPEN_TIMEOUT_SECONDS, factory=_connection_for(path)
        )
        try:
            self.conn.row_factory = sqlite3.Row
            _use_wal(self.conn, time.monotonic() + OPEN_TIMEOUT_SECONDS)
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            version = self._version()
            if version == 0:
                self.conn.executescript(_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
            while 0 < version < SCHEMA_VERSION:
                version += 1
                if version == 3:
                    _log_dropped_contents(self.conn, path)
                if version == 4 and self._has_column("downloads", "torrent"):
                    self.conn.execute(f"PRAGMA user_version={version}")
                    continue
                self.conn.executescript(
                    f"BEGIN; {_MIGRATIONS[version - 1]} PRAGMA user_version={version}; COMMIT;"
                )
        except BaseException:
            self.conn.close()
            raise
        for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode; older homes
            with contextlib.suppress(OSError):
                os.chmod(f"{path}{suffix}", PRIVATE_FILE_MODE)

    @classmethod
    def open_home(cls, home: Path) -> Database:
        """Open (creating if needed) the database of the home directory `home`; the home is
        made private to this user (0700), the database files too (0600)."""
        make_private_dir(home)
        return cls(home / DB_FILE)

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

    def log_transfers(
        self,
        rows: Sequence[TransferRow],
        recounts: Sequence[tuple[int, int]] = (),
        max_rows: int = MAX_TRANSFER_LOG_ROWS,
    ) -> list[int]:
        """Append rows to the transfer log and set the count of earlier rows (id, count), in
        one transaction; the oldest rows beyond `max_rows` are dropped. The new rows' ids."""
        if not rows and not recounts:
            return []
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO transfers(ts, direction, peer, content_id, name, chunk, bytes,"
                " result, legacy, count) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            # In one write transaction an INTEGER PRIMARY KEY without AUTOINCREMENT gives
            # each new row the largest id so far plus one: the rows just written are the last.
            last = int(conn.execute("SELECT max(id) FROM transfers").fetchone()[0] or 0)
            conn.executemany(
                "UPDATE transfers SET count = ? WHERE id = ?",
                [(count, row_id) for row_id, count in recounts],
            )
            conn.execute("DELETE FROM transfers WHERE id <= ?", (last - max_rows,))
        return list(range(last - len(rows) + 1, last + 1))

    def transfer_rows(self) -> int:
        """How many rows the transfer log holds."""
        return int(self.conn.execute("SELECT count(*) FROM transfers").fetchone()[0])

    def transfers(self, limit: int = 1000) -> list[sqlite3.Row]:
        """The newest `limit` rows of the transfer log, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM transfers ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return rows[::-1]

    def _has_column(self, table: str, column: str) -> bool:
        return any(row[1] == column for row in self.conn.execute(f"PRAGMA table_info({table})"))

    def _version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])


TransferRow = tuple[float, str, str, str, str, int, int, str, int, int]


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
    count: int = 1,
) -> TransferRow:
    """One transfer-log row: who, what, when, how many bytes, how it ended (and, for repeated
    refusals folded into one row, how many times)."""
    ts = time.time() if now is None else now
    return (ts, direction, peer, content_id, name, chunk, nbytes, result, int(legacy), count)


def make_private_dir(path: Path) -> None:
    """Create `path` (and its parents) if missing; make it this user's alone (0700)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            path.chmod(PRIVATE_DIR_MODE)


def _create_private(path: Path) -> None:
    """Create the database file as 0600 before SQLite does (it would follow the umask), and
    tighten one made by an older version.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX
    lock this process holds on it, SQLite's too, so another connection of this process (the
    daemon's, while a worker thread opens its own) would lose its locks and could corrupt it."""
    if not path.exists():
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            path.chmod(PRIVATE_FILE_MODE)


def damaged(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """One clear line for a database file that is not a usable SQLite database."""
    return StoreError(
        f"{path} is damaged ({exc}); move it aside (for example to {path.name}.damaged)"
        " and share your files again: swarmshare rebuilds the library from what you share"
    )


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Corruption or not a database at all, as opposed to a busy or misused database."""
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return type(exc) is sqlite3.DatabaseError


def _use_wal(conn: sqlite3.Connection, deadline: float) -> None:
    """Put the database in WAL mode (kept in the file: a no-op once done). Two processes opening
    a new home at once can get "database is locked" here at once, without the busy timeout
    (SQLite refuses a lock that could deadlock): try again until `deadline`."""
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _connection_for(path: Path) -> type[sqlite3.Connection]:
    """A connection class that turns damage met by any statement into StoreError."""

    class _Connection(sqlite3.Connection):
        def execute(self, *args: Any) -> sqlite3.Cursor:
            try:
                return super().execute(*args)
            except sqlite3.DatabaseError as exc:
                if _is_damage(exc):
                    raise damaged(path, exc) from None
                raise

        def executemany(self, *args: Any) -> sqlite3.Cursor:
            try:
                return super().executemany(*args)
            except sqlite3.DatabaseError as exc:
                if _is_damage(exc):
                    raise damaged(path, exc) from None
                raise

        def executescript(self, *args: Any) -> sqlite3.Cursor:
            try:
                return super().executescript(*args)
            except sqlite3.DatabaseError as exc:
                if _is_damage(exc):
                    raise damaged(path, exc) from None
                raise

    return _Connection


def _log_dropped_contents(conn: sqlite3.Connection, path: Path) -> None:
    """One line for the records the move to v2 content IDs drops."""
    shared = int(conn.execute("SELECT count(*) FROM contents").fetchone()[0])
    downloads = int(conn.execute("SELECT count(*) FROM downloads").fetchone()[0])
    if shared or downloads:
        _log.warning(
            "%s: content IDs are BitTorrent v2 infohashes now; %d shared content(s) and %d"
            " download(s) recorded in the old format were dropped: share them again",
            path,
            shared,
            downloads,
        )
