"""Resolving what a user typed (a full ID, a unique ID prefix, or a name) to one item."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from swarmshare.errors import AmbiguousError, NotFoundError

T = TypeVar("T")
MIN_PREFIX_CHARS = 4
_HEX = re.compile(r"[0-9a-f]+")


def resolve_ref(
    ref: str, items: Sequence[T], ident: Callable[[T], tuple[str, str]], where: str
) -> T:
    """The one item whose ID is `ref`, whose name is `ref`, or whose ID starts with `ref`.

    A full ID wins over a name, and a name over a prefix. Several matches raise AmbiguousError
    (with the candidates), none NotFoundError.
    """
    lowered = ref.lower()
    exact = [item for item in items if ident(item)[0] == lowered]
    if exact:
        return exact[0]
    named = _unique_by_id([item for item in items if ident(item)[1] == ref], ident)
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise AmbiguousError(
            f"{ref!r} names {len(named)} different contents in {where}; use an ID prefix",
            [f"{ident(i)[0][:12]}  {ident(i)[1]}" for i in named],
        )
    if len(lowered) >= MIN_PREFIX_CHARS and _HEX.fullmatch(lowered):
        prefixed = _unique_by_id([i for i in items if ident(i)[0].startswith(lowered)], ident)
        if len(prefixed) == 1:
            return prefixed[0]
        if len(prefixed) > 1:
            raise AmbiguousError(
                f"ID prefix {ref!r} matches {len(prefixed)} contents in {where}; type more of it",
                [f"{ident(i)[0][:12]}  {ident(i)[1]}" for i in prefixed],
            )
    raise NotFoundError(f"nothing called {ref!r} in {where}")


def _unique_by_id(items: list[T], ident: Callable[[T], tuple[str, str]]) -> list[T]:
    seen: dict[str, T] = {}
    for item in items:
        seen.setdefault(ident(item)[0], item)
    return list(seen.values())
