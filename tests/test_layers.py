"""The library's sub-packages import one way: no cycle between them, counting the imports inside
functions (a function-level import that only dodges a cycle at load time is still a cycle in the
design). Imports under ``if TYPE_CHECKING:`` are annotations, never run, and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"


def _module(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every ``inat_cnn`` module ``tree`` imports (relative ones resolved), with its line, at any depth."""
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for node in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = module.split(".")[: len(module.split(".")) - (node.level - (1 if is_package else 0))] if node.level else []
            found.append((".".join([*base, *([node.module] if node.module else [])]), node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.split(".")[0] == "inat_cnn"]


def subpackage_edges(src: Path) -> dict[tuple[str, str], str]:
    """(importing sub-package, imported sub-package) -> one place it happens (``path:line``)."""
    edges: dict[tuple[str, str], str] = {}
    for path in sorted(src.rglob("*.py")):
        module = _module(path, src)
        for name, line in _imported(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            a, b = (module.split(".") + [""])[1], (name.split(".") + [""])[1]
            if a != b and a and b:
                edges.setdefault((a, b), f"{path.relative_to(src)}:{line}")
    return edges


def cycles(edges: dict[tuple[str, str], str]) -> list[list[str]]:
    """Every cycle's sub-packages (depth-first search; each cycle reported once per starting node)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    found = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its smallest node
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_no_import_cycle_between_subpackages_even_through_function_level_imports():
    edges = subpackage_edges(SRC)
    assert ("evaluation", "models") in edges  # the scan sees imports (function-level ones included)
    found = cycles(edges)
    assert found == [], [" -> ".join(c) + f" (first: {edges[(c[0], c[1])]})" for c in found]


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path: Path):
    pkg = tmp_path / "inat_cnn"
    for sub, body in (("core", "def f():\n    from ..viz import draw\n"), ("viz", "from ..core import x\n")):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
        (pkg / sub / "m.py").write_text(body)
    (pkg / "__init__.py").write_text("")
    edges = subpackage_edges(tmp_path)
    assert set(edges) == {("core", "viz"), ("viz", "core")}
    assert cycles(edges) == [["core", "viz", "core"]]
    (pkg / "core" / "m.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..viz import draw\n")
    assert cycles(subpackage_edges(tmp_path)) == []
