"""The package layers stay acyclic: read every import (function-level ones included)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import nexlify

PACKAGE = Path(nexlify.__file__).parent


def package_imports() -> dict[str, set[str]]:
    """{top-level package or module: top-level packages it imports}, self-imports left out."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        here = parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                bits = name.split(".")
                if bits[0] == "nexlify" and len(bits) > 1 and bits[1] != here:
                    edges[here].add(bits[1])
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_top_level_packages() -> None:
    assert cycles(package_imports()) == []


def test_system_is_a_leaf_of_machine_facts() -> None:
    assert package_imports()["system"] <= {"errors"}


def test_the_lower_layers_import_nothing_above_them() -> None:
    edges = package_imports()
    below = {
        "config": {"errors"},
        "data": {"config", "errors", "io"},
        "market": {"config", "data", "errors", "io"},
    }
    for layer, allowed in below.items():
        assert edges[layer] <= allowed, (layer, edges[layer] - allowed)


def test_no_module_imports_another_modules_private_names() -> None:
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nexlify"):
                names = [alias.name for alias in node.names]
                private += [f"{path.name}: {node.module}.{name}" for name in names
                            if name.startswith("_") and not name.startswith("__")]  # fmt: skip
    assert private == []
