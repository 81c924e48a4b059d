"""When this peer announces itself: a schedule that is given `now` and says when it is next due.

How it works: the first announcement goes out at once and asks everyone to answer (solicit).
After that one goes out every `interval`, and CHANGE_ANNOUNCE_DELAY_SECONDS after the
catalogue changes (several changes in that window make one announcement; it also restarts the
interval). A solicit heard from another peer is answered by unicast after a small delay that the
caller draws (up to SOLICIT_REPLY_MAX_DELAY_SECONDS, so that a whole LAN does not answer in the
same instant); one answer per address is pending at a time, and at most
MAX_PENDING_SOLICIT_ANSWERS in all, so a solicit flood costs one small datagram per asker.
No clock and no sockets here: the adapter calls `due(now)` at `next_deadline()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmshare.limits import (
    CHANGE_ANNOUNCE_DELAY_SECONDS,
    MAX_PENDING_SOLICIT_ANSWERS,
    SOLICIT_REPLY_MAX_DELAY_SECONDS,
)

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send the announcement to every target (asking for answers when `solicit`)."""

    solicit: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """Send the announcement to one peer that solicited it."""

    address: Address


Send = Broadcast | Answer


class AnnouncePacer:
    """The announcement schedule of one peer."""

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self._periodic = now
        self._first = True
        self._change: float | None = None
        self._answers: dict[Address, float] = {}

    def changed(self, now: float) -> None:
        """The catalogue changed at `now`: announce shortly."""
        if self._change is None:
            self._change = now + CHANGE_ANNOUNCE_DELAY_SECONDS

    def solicited(self, address: Address, now: float, delay: float) -> None:
        """A peer at `address` asked for answers; answer after `delay` (drawn by the caller)."""
        if address in self._answers or len(self._answers) >= MAX_PENDING_SOLICIT_ANSWERS:
            return
        self._answers[address] = now + min(max(delay, 0.0), SOLICIT_REPLY_MAX_DELAY_SECONDS)

    def due(self, now: float) -> list[Send]:
        """What to send at `now` (empty if nothing is due yet)."""
        sends: list[Send] = []
        if now >= self._periodic or (self._change is not None and now >= self._change):
            sends.append(Broadcast(self._first))
            self._first = False
            self._periodic = now + self.interval
            self._change = None
        for address, when in list(self._answers.items()):
            if when <= now:
                del self._answers[address]
                sends.append(Answer(address))
        return sends

    def next_deadline(self) -> float:
        """When `due` next has something to send."""
        deadline = self._periodic if self._change is None else min(self._periodic, self._change)
        return min(deadline, *self._answers.values()) if self._answers else deadline
