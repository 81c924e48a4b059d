"""Formatting for people: sizes, rates, durations, and the consoles the CLI writes to."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A rich Console made on first use: commands that print nothing through rich (`get
    --json`, `share` in a script) do not pay for importing it at every start."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        """The rich Console itself (for progress bars)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        return self._console

    @property
    def is_terminal(self) -> bool:
        """Whether this stream is a terminal."""
        return self.console.is_terminal

    def print(self, *objects: Any, **options: Any) -> None:
        """rich's Console.print."""
        self.console.print(*objects, **options)


out = LazyConsole(stderr=False)
err = LazyConsole(stderr=True)


def fmt_size(nbytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_rate(bytes_per_second: float) -> str:
    """Bytes per second as '12.3 MiB/s'."""
    return fmt_size(bytes_per_second) + "/s"


def fmt_ago(then: float, now: float | None = None) -> str:
    """How long ago a unix time was: '3s ago', '2m ago'."""
    delta = max(0.0, (time.time() if now is None else now) - then)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"


def fmt_time(ts: float) -> str:
    """A unix time as local 'YYYY-MM-DD HH:MM:SS'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
