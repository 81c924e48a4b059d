"""Where one chunk lives on disk: the value the library, the downloads and the peer server share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    """Where to read one chunk of a content from: a file, an offset and length, its hash."""

    path: str
    offset: int
    length: int
    sha256: str
