"""Formatting for people: sizes, rates, durations, and the consoles the CLI writes to."""

from __future__ import annotations

import builtins
import os
import sys
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
        """Whether this stream is a terminal (as rich decides it; a stream that plainly is not
        one is told without importing rich)."""
        if self._console is None and self._plainly_not_terminal():
            return False
        return self.console.is_terminal

    def print(self, *objects: Any, **options: Any) -> None:
        """rich's Console.print. Plain text to a stream that plainly is no terminal, before
        anything needed rich, is written as rich would write it, without importing rich."""
        if self._console is None and self._print_plain(objects, options):
            return
        self.console.print(*objects, **options)

    def print_error(self, message: object) -> None:
        """'error: MESSAGE' (see error_line); without rich on a stream that is no terminal."""
        if self._console is None and self._print_plain(("error: " + shown(message),), {}):
            return
        self.console.print(error_line(message))

    def _stream(self) -> Any:
        return sys.stderr if self._stderr else sys.stdout

    def _plainly_not_terminal(self) -> bool:
        """True when rich's Console would surely say this stream is no terminal: no variable
        forces one (TTY_COMPATIBLE, FORCE_COLOR), no notebook, and the stream is no tty.
        False means "ask rich"."""
        tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
        if tty_compatible == "0":
            return True
        force_color = os.environ.get("FORCE_COLOR")
        if tty_compatible == "1" or force_color or hasattr(builtins, "get_ipython"):
            return False
        if force_color == "":
            return True
        isatty = getattr(self._stream(), "isatty", None)
        try:
            return isatty is None or not isatty()
        except ValueError:  # a closed stream, which rich counts as no terminal too
            return True

    def _print_plain(self, objects: tuple[Any, ...], options: dict[str, Any]) -> bool:
        """Write `objects` as one line, as rich would to a stream that is no terminal, when
        they are plain strings rich would not change (no markup, tabs, control characters
        rich drops, or trailing spaces); False (nothing written) otherwise."""
        if (
            not objects
            or set(options) - _PLAIN_OPTIONS
            or options.get("markup", False)
            or not options.get("soft_wrap", True)
        ):
            return False
        if not all(type(o) is str for o in objects):
            return False
        text = " ".join(objects)
        if _RICH_CHANGES.intersection(text) or any(
            line != line.rstrip() for line in text.split("\n")
        ):
            return False
        stream = self._stream()
        if stream is None or not self._plainly_not_terminal():
            return False
        stream.write(text + "\n")
        stream.flush()
        return True


_PLAIN_OPTIONS = frozenset({"markup", "highlight", "soft_wrap"})
"""Options of print that change nothing for plain text on a stream that is no terminal
(markup only when off, soft_wrap only when on, as the consoles are made; highlighting shows no
colour there)."""
_RICH_CHANGES = frozenset("\t\a\b\v\f\r")
"""Characters rich changes in printed text: tabs are expanded, these controls dropped."""


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
