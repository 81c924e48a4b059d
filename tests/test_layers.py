"""The package's import graph: no cycle between modules, and no import that points up a layer.

Layers, bottom to top (a module may import its own layer and the layers below it):

    base   errors, limits, settings, the package's __init__
    core   pure values and rules
    store  SQLite and files    net  asyncio adapters    (siblings: neither imports the other)
    app    the daemon, downloads and the control API
    face   cli, web, ui, __main__, demo

Every import counts: at module level, under `if TYPE_CHECKING:`, and inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "swarmshare"

# Cycles known today, each to be removed by the change that breaks it. The app/ composition
# root and its collaborators still reach back into each other (masked by TYPE_CHECKING and a
# deferred import); the rewrite of app/ removes this entry.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()
"""Cycles tolerated while a rewrite removes them: none remain."""

BASE, CORE, STORE, NET, APP, FACE = "base", "core", "store", "net", "app", "face"
# What each layer may import (its own layer included).
MAY_IMPORT: dict[str, frozenset[str]] = {
    BASE: frozenset({BASE}),
    CORE: frozenset({BASE, CORE}),
    STORE: frozenset({BASE, CORE, STORE}),
    NET: frozenset({BASE, CORE, NET}),
    APP: frozenset({BASE, CORE, STORE, NET, APP}),
    FACE: frozenset({BASE, CORE, STORE, NET, APP, FACE}),
}
TOP_LEVEL_LAYER = {
    "errors": BASE,
    "limits": BASE,
    "settings": BASE,
    "config": BASE,
    "core": CORE,
    "store": STORE,
    "net": NET,
    "app": APP,
    "cli": FACE,
    "web": FACE,
    "ui": FACE,
    "__main__": FACE,
    "demo": FACE,
    "service": FACE,
    "logs": FACE,
}


def layer_of(module: str) -> str:
    """The layer of a module of the package; KeyError for a module no layer names."""
    parts = module.split(".")
    if parts == [PACKAGE]:
        return BASE
    return TOP_LEVEL_LAYER[parts[1]]


def package_modules(src: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package under `src`, by dotted name."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(
    module: str, path: Path, modules: Iterable[str], package: str = PACKAGE
) -> Iterator[tuple[int, str]]:
    """(line, module imported) for every import of a package module anywhere in the file."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    yield node.lineno, _nearest_module(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, base] if base else anchor)
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:
                # `from pkg import module` names a module; `from module import name`, its module.
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if candidate in known else _nearest_module(base, known)


def import_graph(src: Path, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {module it imports: the first line importing it}."""
    modules = package_modules(src, package)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for line, target in imports_of(module, path, modules, package):
            if target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import of a layer the importing module's layer may not use, one line each."""
    bad = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if layer_of(target) not in MAY_IMPORT[layer_of(module)]:
                bad.append(
                    f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)}),"
                    f" line {line}"
                )
    return bad


def describe(cycle: frozenset[str], graph: dict[str, dict[str, int]]) -> str:
    """A cycle as the imports that make it."""
    edges = [
        f"{a} -> {b} (line {line})"
        for a in sorted(cycle)
        for b, line in sorted(graph[a].items())
        if b in cycle
    ]
    return "cycle: " + "; ".join(edges)


def _nearest_module(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


# ---- the package ----------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for module in package_modules(SRC):
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert unplaced == [], f"give these modules a layer in TOP_LEVEL_LAYER: {unplaced}"


def test_no_import_points_up() -> None:
    bad = upward_imports(import_graph(SRC))
    assert bad == [], "\n".join(bad)


def test_no_import_cycle_but_the_known_ones() -> None:
    graph = import_graph(SRC)
    found = set(cycles(graph))
    new = [describe(c, graph) for c in found - KNOWN_CYCLES]
    assert new == [], "\n".join(new)
    gone = [sorted(c) for c in KNOWN_CYCLES - found]
    assert gone == [], f"these cycles are gone or changed: update KNOWN_CYCLES: {gone}"


def test_the_walk_sees_deferred_and_type_checking_imports() -> None:
    graph = import_graph(SRC)
    # `run` imports the daemon inside the function; the library imports a core value.
    assert "swarmshare.app.daemon" in graph["swarmshare.cli"]
    assert "swarmshare.core.location" in graph["swarmshare.store.library"]


# ---- the checker itself, on small made-up packages -------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in (tmp_path / PACKAGE).rglob("*.py")}:
        (folder / "__init__.py").touch()
    return tmp_path


def test_a_cycle_masked_by_type_checking_and_a_deferred_import_is_found(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            "app/root.py": "def build():\n    from swarmshare.app.worker import Worker\n",
            "app/worker.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .root import build\n"
            ),
        },
    )
    graph = import_graph(src)
    (cycle,) = cycles(graph)
    assert cycle == {"swarmshare.app.root", "swarmshare.app.worker"}
    assert "swarmshare.app.root -> swarmshare.app.worker (line 2)" in describe(cycle, graph)


@pytest.mark.parametrize(
    ("importer", "statement", "target"),
    [
        ("net/server.py", "from swarmshare.store.library import Where", "swarmshare.store.library"),
        ("store/db.py", "import swarmshare.net.client", "swarmshare.net.client"),
        ("app/demo.py", "from swarmshare.ui import out", "swarmshare.ui"),
        ("core/codec.py", "from ..app import daemon", "swarmshare.app.daemon"),
        ("errors.py", "from swarmshare.core import codec", "swarmshare.core.codec"),
    ],
)
def test_an_import_pointing_up_or_sideways_is_found(
    tmp_path: Path, importer: str, statement: str, target: str
) -> None:
    src = _package(
        tmp_path,
        {
            **dict.fromkeys(
                ["store/library.py", "net/client.py", "ui.py", "app/daemon.py", "core/codec.py"], ""
            ),
            importer: f"def f():\n    {statement}\n",
        },
    )
    (line,) = upward_imports(import_graph(src))
    assert f"imports {target} " in line and line.endswith("line 2")
