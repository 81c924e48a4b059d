"""Benchmarks time swarmshare as an installed package runs: with its modules' bytecode cached.

pip compiles an installed package's bytecode; an editable install writes it on first use, unless
PYTHONDONTWRITEBYTECODE is set -- then every command would compile every module again, and a
benchmark would time the compiler. Compiling once up front makes the runs alike either way.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import swarmshare


def ensure_bytecode() -> None:
    """Compile the package's modules whose bytecode is missing or stale (quietly; a read-only
    install keeps what it has)."""
    compileall.compile_dir(str(Path(swarmshare.__file__).parent), quiet=2)
