"""Formatting for people: sizes, rates, durations, and the consoles the CLI writes to."""

from __future__ import annotations

import time

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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
