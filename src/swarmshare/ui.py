"""Formatting for people: sizes, rates, durations, and the consoles the CLI writes to."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

# Characters that can make a terminal or a page show something other than what is there:
# controls (C0, DEL, C1 such as U+009B, the terminal's escape sequence introducer), format
# characters (bidi overrides such as U+202E, zero-width characters), line and paragraph
# separators, and lone surrogates (undecodable bytes of a file name).
_MISLEADING_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


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

            self._console = Console(
                stderr=self._stderr, highlight=False, soft_wrap=True, emoji=False, markup=False
            )
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


def shown(value: object) -> str:
    """`value` as text safe to show: every character that could mislead a reader (a control,
    a bidi override, a zero-width character) is written as its escape, such as \\u202e."""
    text = str(value)
    if text.isprintable():  # the common case: nothing to escape (spaces are printable)
        return text
    return "".join(_escape(char) for char in text)


def plain(value: object, style: str = "") -> Text:
    """`value` as a rich Text that is never read as markup, misleading characters escaped."""
    from rich.text import Text

    return Text(shown(value), style=style)


def table(columns: Iterable[str], right: Iterable[str] = ()) -> Table:
    """A borderless table with these column headings (`right`: the right-aligned ones)."""
    from rich.table import Table

    aligned = set(right)
    grid = Table(box=None, pad_edge=False)
    for column in columns:
        grid.add_column(column, justify="right" if column in aligned else "left")
    return grid


def add_row(grid: Table, *cells: object) -> None:
    """One row of `grid`; each cell shown as text (a Text keeps its own styles)."""
    from rich.text import Text

    grid.add_row(*(cell if isinstance(cell, Text) else plain(cell) for cell in cells))


def error_line(message: object) -> Text:
    """'error: MESSAGE', the message shown as text."""
    line = plain("error:", style="bold red")
    line.append(" " + shown(message))
    return line


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


def _escape(char: str) -> str:
    if char == " " or unicodedata.category(char) not in _MISLEADING_CATEGORIES:
        return char
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )
