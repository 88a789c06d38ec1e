"""The layout holds: docs/architecture.md names every module, each module says what it owns, no import circle,
no two modules define one name for different things, docs/configuration.md is current. (`make test` and
`make check` run the layers contract itself: lint-imports.)"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

import grimp
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

PACKAGES = ("rag", "ui", "tools")
MODULES = sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))
PRODUCT = [p for p in MODULES if p.relative_to(REPO).parts[0] in ("rag", "ui")]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def test_every_module_starts_with_a_docstring_saying_what_it_owns():
    missing = [str(p.relative_to(REPO)) for p in MODULES if not ast.get_docstring(_tree(p))]
    assert not missing, f"modules without a docstring: {missing}"


def test_the_architecture_page_names_every_module_of_the_tree_and_no_other():
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:rag|ui|tools)/[\w/]+\.py)`", page))
    on_disk = {p.relative_to(REPO).as_posix() for p in MODULES}
    assert on_disk - named == set(), "modules missing from docs/architecture.md's map"
    assert named - on_disk == set(), "docs/architecture.md names modules that do not exist"


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in _tree(path).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def test_no_two_product_modules_define_a_class_or_function_of_the_same_name():
    homes: dict[str, list[str]] = defaultdict(list)
    for path in PRODUCT:
        for name in _top_level_names(path):
            homes[name].append(path.relative_to(REPO).as_posix())
    shared = {name: where for name, where in homes.items() if len(where) > 1 and name != "main"}
    assert not shared, f"one name for different things: {shared}"


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_circle_between_modules():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    # a package's __init__ re-exporting its modules is not a circle of the code; every other module counts
    modules = {m for m in graph.modules if not (REPO / m.replace(".", "/") / "__init__.py").is_file()}
    assert _cycles(graph, modules) == []

