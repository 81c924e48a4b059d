"""Token buckets: how many datagrams or requests one address may send per second, and how many
bytes all uploads together may send per second.

Time is passed in; the table of sources is bounded (the least recently seen is forgotten).
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    """`allow(source, now)` is True while `source` stays under `rate` per second (with `burst`)."""

    def __init__(self, rate: float, burst: float, max_sources: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.refused = 0
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        """Take one token for `source`; False (and counted) when it has none left."""
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        else:
            self.refused += 1
        self._buckets[source] = (tokens, now)
        if len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)
        return allowed


class ByteBucket:
    """A token bucket of bytes shared by every upload: `delay(nbytes, now)` reserves `nbytes` and
    says how many seconds the caller must wait before sending them, so that all uploads together
    stay under `rate` bytes per second (after a first `burst` of bytes)."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a byte bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def delay(self, nbytes: int, now: float) -> float:
        """Reserve `nbytes`; the seconds to wait before sending them (0.0: send now)."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        # Reservations may run the bucket into debt: whoever reserves next waits for it too.
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
