"""Token buckets per source: how many datagrams or requests one address may send per second.

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
