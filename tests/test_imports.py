"""No import cycles among webaccel's modules, read from the source with ``ast`` (nothing imported).

An edge A -> B is an ``import``/``from ... import`` in A naming module B (or a
module inside B's ``from B import name``).  Excluded, on purpose:

* imports under ``if TYPE_CHECKING:`` (they never run);
* the implicit import of a package's ``__init__`` when one of its modules is
  imported (every package would otherwise be a cycle with its own modules),
  ``from pkg import module`` included; ``from pkg import name`` is an edge to pkg.

Imports inside functions *are* edges in the strict check: the cycles this
test was written against (registry <-> model families, launching <->
launchers, content store <-> fetcher) all went through deferred imports, so
a check of module-level imports alone passed while they existed.  The
module-level check is kept separately, since a cycle there breaks importing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "webaccel"


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, *, deferred: bool) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if deferred or isinstance(node, ast.ClassDef):
                    visit(node.body)
            else:  # try/with/for/while/match: their statements run at the same time
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])
                    elif isinstance(child, ast.ExceptHandler | ast.match_case):
                        visit(child.body)

    visit(tree.body)
    return found


def import_graph(root: Path = PACKAGE, *, deferred: bool) -> dict[str, set[str]]:
    mods = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text()), deferred=deferred):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names} & mods.keys()
            deps |= subs
            # ``from pkg import mod`` needs pkg only as a parent (not an edge);
            # ``from pkg import name`` reads pkg's namespace (an edge).
            if target in mods and len(subs) < len(node.names):
                deps.add(target)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _describe(graph: dict[str, set[str]], found: list[list[str]]) -> str:
    lines = []
    for comp in found:
        members = set(comp)
        lines += [f"{m} -> {sorted(graph[m] & members)}" for m in comp]
    return "\n".join(lines)


@pytest.mark.parametrize("deferred", [False, True], ids=["module-level", "with-deferred"])
def test_no_import_cycles(deferred: bool) -> None:
    graph = import_graph(deferred=deferred)
    assert "webaccel.models.registry" in graph  # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles:\n" + _describe(graph, found)


def test_the_checker_sees_a_cycle_through_a_deferred_import(tmp_path: Path) -> None:
    pkg = tmp_path / "webaccel"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from webaccel.sub import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from webaccel import c\n"
        "def f():\n    from .. import a\n"
    )
    (pkg / "c.py").write_text("import webaccel.sub.b\n")
    assert cycles(import_graph(pkg, deferred=False)) == []
    assert cycles(import_graph(pkg, deferred=True)) == [["webaccel.a", "webaccel.sub.b"]]
