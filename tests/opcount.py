"""Counting work instead of timing it: how many Python frames a call enters or resumes.

A cost that grows with the size of a content shows as a count that grows with it, whatever the
machine's speed or load, so tests can assert it without depending on timing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any


def python_steps(fn: Callable[[], Any]) -> int:
    """How many times `fn()` entered or resumed a Python frame (calls and generator steps)."""
    count = 0

    def profile(_frame: FrameType, event: str, _arg: object) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count
