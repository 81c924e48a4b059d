"""Logging for people and for the home's log file: one setup, levels from -v/-q, rotation.

Every command logs to standard error (INFO; -v DEBUG; -q WARNING). The daemon (`run`) also
writes a rotating log file in its home. Secrets never reach a handler: a login token in a
line is replaced, and characters that could mislead a terminal are shown escaped.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from io import TextIOWrapper
from pathlib import Path

from swarmshare.ui import shown

LOG_FILE = "swarmshare.log"
LOG_FILE_MAX_BYTES = 1024 * 1024
LOG_FILE_BACKUPS = 3
_LOGIN_LINK = re.compile(r"/login\?token=[^&\s]+(\s+\(or run: swarmshare open\))?")
_TOKEN = re.compile(r"(token=)[^&\s]+")


def level_for(verbosity: int) -> int:
    """The console's level: INFO, DEBUG for -v, WARNING for -q."""
    if verbosity > 0:
        return logging.DEBUG
    return logging.WARNING if verbosity < 0 else logging.INFO


def setup_logging(verbosity: int, log_file: Path | None = None) -> None:
    """Send log records to standard error at the level `verbosity` says and, with `log_file`,
    to that file (rotated at LOG_FILE_MAX_BYTES, LOG_FILE_BACKUPS kept). Calling it again
    replaces what an earlier call set up."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Ours)]:
        root.removeHandler(old)
        old.close()
    console_level = level_for(verbosity)
    console = _ConsoleHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(_ConsoleFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handlers: list[logging.Handler] = [console]
    file_level = min(console_level, logging.INFO)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = _file_handler(log_file)
        to_file.setLevel(file_level)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(to_file)
    for handler in handlers:
        handler.addFilter(_clean)
        root.addHandler(handler)
    root.setLevel(file_level if log_file is not None else console_level)


def _clean(record: logging.LogRecord) -> bool:
    """Hide login tokens and escape misleading characters in the message (not the traceback)."""
    message = _TOKEN.sub(
        r"\1(hidden)", _LOGIN_LINK.sub("/ (log in: swarmshare open)", record.getMessage())
    )
    record.msg, record.args = shown(message), None
    return True


class _Ours:
    """Marks the handlers setup_logging installed."""


class _ConsoleHandler(_Ours, logging.StreamHandler):  # type: ignore[type-arg]
    pass


def _file_handler(log_file: Path) -> logging.Handler:
    """The rotating handler of the log file (logging.handlers is imported here: only the daemon
    writes a file, and a command should not pay for it at every start)."""
    import logging.handlers

    class _FileHandler(_Ours, logging.handlers.RotatingFileHandler):
        def _open(self) -> TextIOWrapper:
            """The file readable by this user alone: it names peers, paths and addresses."""
            return open(
                self.baseFilename,
                "a",  # as RotatingFileHandler always opens it
                encoding=self.encoding,
                errors=self.errors,
                opener=lambda path, flags: os.open(path, flags, 0o600),
            )

    return _FileHandler(log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS)


class _ConsoleFormatter(logging.Formatter):
    """'12:00:01 line'; warnings and errors say so."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if record.levelno >= logging.WARNING:
            time_text, _, rest = line.partition(" ")
            return f"{time_text} {record.levelname.lower()}: {rest}"
        return line
