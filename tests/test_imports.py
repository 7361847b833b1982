"""The package's import graph: one direction, bottom to top (backend ← autograd ← functional ← nn ← models ← ...).

The graph is read from the source with ``ast``, without importing anything: an edge A → B for every
``import`` or ``from ... import`` in A that names B (``from . import x`` names the submodule x when
there is one). Two graphs are checked:

- module-level imports (those that run when A is imported): no cycle at all;
- with the imports deferred into functions added: the only cycle is the operator overloading of
  ``Tensor`` (``x + y``, ``x.sum()``, ``x.reshape(...)``, ``x[i]``, ``x.to(...)``), whose Functions are
  built on the Tensor they serve.

Imports under ``if TYPE_CHECKING:`` never run and are left out. Parent packages that Python imports
implicitly (``minise.functional`` before ``minise.functional.conv``) are not edges: only what a module names.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import minise

PACKAGE = Path(minise.__file__).resolve().parent

# Tensor's operators import their Functions when first used; those Functions import Tensor
ALLOWED_CYCLE = {"minise.autograd", "minise.functional.arith", "minise.functional.shape"}


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) for every module of minise."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _targets(name: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "minise"]
    if node.level:
        here = name.split(".") if is_package else name.split(".")[:-1]
        base = here[: len(here) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "minise":
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


@functools.cache
def import_graph(deferred: bool) -> dict[str, list[str]]:
    """Module -> the minise modules it imports (at module level; with ``deferred``, inside functions too)."""
    mods = modules()
    known = set(mods)
    graph = {}
    for name, (path, is_package) in mods.items():
        found: set[str] = set()

        def visit(body: list[ast.stmt], top: bool, name: str = name, is_package: bool = is_package,
                  found: set[str] = found) -> None:
            for node in body:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    if top or deferred:
                        found.update(_targets(name, is_package, node, known))
                elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    visit(node.body, False)
                elif isinstance(node, ast.ClassDef):
                    visit(node.body, top)  # a class body runs at import
                else:
                    for field in ("body", "orelse", "finalbody", "handlers"):
                        inner = getattr(node, field, None)
                        if isinstance(inner, list):
                            visit(inner, top)

        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)).body, True)
        graph[name] = sorted(t for t in found if t != name and t in known)
    return graph


def cycles(graph: dict[str, list[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, with a stack)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.add(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def _describe(graph: dict[str, list[str]]) -> str:
    return "\n".join(f"  {m} -> {', '.join(t) or '-'}" for m, t in sorted(graph.items()))


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": ["a"]}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []


def test_the_graph_reads_every_kind_of_import() -> None:
    graph = import_graph(deferred=False)
    assert "minise.backend" in graph["minise.autograd"]                   # from . import backend
    assert "minise.functional.window" in graph["minise.functional.conv"]  # from .window import pair
    assert "minise.nn.module" in graph["minise.nn"]                       # from .module import Module
    assert "minise.functional.arith" not in graph["minise.autograd"]      # deferred into a method
    assert "minise.functional.arith" in import_graph(deferred=True)["minise.autograd"]


def test_module_level_imports_have_no_cycle() -> None:
    graph = import_graph(deferred=False)
    found = cycles(graph)
    assert found == [], "import cycles at module level:\n" + _describe({m: [t for t in graph[m] if t in c]
                                                                        for c in found for m in c})


def test_the_only_cycle_is_tensor_and_its_operators() -> None:
    graph = import_graph(deferred=True)
    found = cycles(graph)
    unexpected = [c for c in found if not c <= ALLOWED_CYCLE]
    edges = [f"  {m} -> {t}" for c in unexpected for m in sorted(c) for t in graph[m] if t in c]
    assert unexpected == [], "import cycles besides Tensor <-> its operators:\n" + "\n".join(edges)


@pytest.mark.parametrize("low, high", [
    ("minise.backend", "minise.autograd"), ("minise.autograd", "minise.nn"), ("minise.functional", "minise.nn"),
    ("minise.nn", "minise.models"), ("minise.models", "minise.train"), ("minise.nn", "minise.train"),
])
def test_a_lower_floor_never_imports_a_higher_one(low: str, high: str) -> None:
    graph = import_graph(deferred=True)
    offenders = [f"{m} -> {t}" for m, targets in graph.items() if m == low or m.startswith(low + ".")
                 for t in targets if t == high or t.startswith(high + ".")]
    assert offenders == []
