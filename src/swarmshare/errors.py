"""The one exception hierarchy of swarmshare.

What a remote peer sent wrong raises a `RemoteProtocolError` (and never anything else); a hash
mismatch is an `IntegrityError`; a mistake of the user is a `UsageError`, which the CLI prints as
one line with no traceback.
"""

from __future__ import annotations


class SwarmshareError(Exception):
    """Root of every error swarmshare raises on purpose."""


class UsageError(SwarmshareError):
    """The user asked for something that cannot be done (bad path, unknown ID, ...)."""


class NotFoundError(UsageError):
    """A name or ID matches nothing."""


class AmbiguousError(UsageError):
    """A name or ID prefix matches more than one thing."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class RemoteProtocolError(SwarmshareError):
    """A peer sent bytes that break the protocol (malformed, oversized, inconsistent)."""


class IntegrityError(RemoteProtocolError):
    """Bytes do not hash to what the manifest or content ID says."""


class StoreError(SwarmshareError):
    """The local library or a file on disk is not usable (full disk, changed file, ...)."""


class FileChangedError(StoreError):
    """A shared file changed on disk while it was being read."""


class DaemonError(SwarmshareError):
    """The local daemon is not reachable, or cannot start (port busy, already running)."""


class ServeError(SwarmshareError):
    """A request the peer server refuses, with its HTTP status and stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
