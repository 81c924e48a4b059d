"""The library and what sharing gave, as JSON for a face.

Apart from node.py so that a command that only shares or lists the library without a daemon
(which needs no network) does not load the network and download parts to answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swarmshare.errors import SwarmshareError
from swarmshare.store.library import Library, ShareResult

Json = dict[str, Any]
ShareProgress = Callable[[str, int], Callable[[int], None]]


def share_json(paths: list[str], results: list[ShareResult | SwarmshareError]) -> list[Json]:
    """What sharing each path gave, as JSON: the content, or an `error`."""
    out: list[Json] = []
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, SwarmshareError):
            out.append({"path": path, "error": str(result)})
        else:
            extra = {"unchanged": result.unchanged, "skipped": result.skipped}
            out.append(result.record.as_json() | extra)
    return out


def library_json(library: Library) -> list[Json]:
    """The library as JSON, each content with whether its files are intact."""
    return [r.as_json() | {"intact": library.is_intact(r.id)} for r in library.contents()]
