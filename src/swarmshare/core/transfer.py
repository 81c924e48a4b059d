"""A download's states, the moves allowed between them, and how it can end.

How it works. A download starts FINDING (looking for holders and fetching the manifest). With
the manifest it is FETCHING while some source sends chunks, and WAITING while no source can send
a missing chunk; with every chunk in it is FINISHING (flush, rename, add to the library), then
DONE. From any active state it can be PAUSED (by the user, by the daemon stopping, or because no
holder was seen for the caller's wait), FAILED (an error it cannot get past) or CANCELLED (the
user threw the part away). PAUSED and FAILED can start again (FINDING); DONE and CANCELLED are
final. Every state change goes through `check_move`, so an impossible one is a bug caught at
once, not a strange line on a screen.

The state values are the words shown to people (`swarmshare status`, the page, `--json`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    """Where a download is."""

    FINDING = "finding peers"
    FETCHING = "downloading"
    WAITING = "waiting for peers"
    FINISHING = "finishing"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Whether a task is (or should be) working on it."""
        return self in _ACTIVE

    @property
    def final(self) -> bool:
        """Whether nothing can happen to it any more."""
        return self in (State.DONE, State.CANCELLED)


_ACTIVE = frozenset({State.FINDING, State.FETCHING, State.WAITING, State.FINISHING})
_STOPS = frozenset({State.PAUSED, State.FAILED, State.CANCELLED})

MOVES: dict[State, frozenset[State]] = {
    State.FINDING: frozenset({State.FETCHING, State.WAITING, State.FINISHING, State.DONE}) | _STOPS,
    State.FETCHING: frozenset({State.WAITING, State.FINISHING}) | _STOPS,
    State.WAITING: frozenset({State.FETCHING, State.FINISHING}) | _STOPS,
    State.FINISHING: frozenset({State.DONE}) | _STOPS,
    State.PAUSED: frozenset({State.FINDING, State.CANCELLED}),
    State.FAILED: frozenset({State.FINDING, State.CANCELLED}),
    State.DONE: frozenset(),
    State.CANCELLED: frozenset(),
}
"""Every allowed move, from -> to (staying in the same state is always allowed)."""


class BadMove(Exception):
    """A state change the table does not allow: a bug, never the user's or a peer's doing."""


def check_move(old: State, new: State) -> State:
    """`new` if the move from `old` is allowed, else BadMove."""
    if new is not old and new not in MOVES[old]:
        raise BadMove(f"a download cannot go from {old.value!r} to {new.value!r}")
    return new


class PauseReason(enum.Enum):
    """Why a download stopped without failing."""

    USER = "paused"
    NO_HOLDER = "no holder"
    SHUTDOWN = "stopping"


class ChunkOutcome(enum.Enum):
    """How one chunk request ended."""

    OK = "ok"
    DUPLICATE = "duplicate"
    BAD_HASH = "bad_hash"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    UNREACHABLE = "unreachable"
    SHORT = "short"
    REFUSED = "refused"
    BUSY = "busy"  # turned away for now (a connection closed unanswered, a 429): not a fault
    DISK = "disk"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run of a download ended: its final state, and the reason in words."""

    state: State
    reason: str = ""
    pause: PauseReason | None = None
