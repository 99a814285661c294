"""No import cycle among the project's modules, lazy (function-level) imports included.

A cycle hidden by a lazy import still ties two modules together: each needs the other to
be importable, and the order in which they load decides whether a name exists yet. The
graph is read from the source (AST), so an import inside a function counts as much as
one at the top; only imports under ``if TYPE_CHECKING:`` are left out, since they never
run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tdx_boot_attest"
PARTS = ("agent", "server", "tdxsim")


def project_modules() -> dict[str, Path]:
    """Every module of the three parts, by its installed name."""
    modules: dict[str, Path] = {}
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            names = list(relative.parts)
            if names[-1] == "__init__":
                names.pop()
            modules[".".join([PACKAGE, *names])] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _import_nodes(node)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` (at ``path``) imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                if not is_package:
                    anchor.pop()
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest cycle through each module that is on one (a path back to its start),
    each cycle once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for component in components:
        for start in sorted(component):
            cycle = _cycle_through(graph, component, start)[:-1]
            first = cycle.index(min(cycle))
            cycle = [*cycle[first:], *cycle[:first], min(cycle)]
            if frozenset(cycle) not in seen:
                seen.add(frozenset(cycle))
                found.append(cycle)
    return found


def _cycle_through(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    # Breadth-first from start's successors back to start, inside the component.
    paths = {target: [start, target] for target in sorted(graph[start] & component)}
    queue = list(paths)
    while queue:
        node = queue.pop(0)
        if start in graph[node]:
            return [*paths[node], start]
        for target in sorted(graph[node] & component):
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no cycle through {start} in its component")


def test_the_walk_sees_the_project() -> None:
    graph = import_graph()
    assert "tdx_boot_attest.agent.protocol" in graph["tdx_boot_attest.server.quote"] | set(
        graph["tdx_boot_attest.server.errors"]
    )
    # A function-level import counts: agent.protocol imports nothing of ours at the top.
    assert len(graph) > 100


def test_cycle_finder_names_a_lazy_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    two = {"app": {"cli", "limit"}, "cli": {"app"}, "limit": {"app"}}
    assert cycles(two) == [["app", "cli", "app"], ["app", "limit", "app"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_function_level_imports_are_edges(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tdx_boot_attest.server import app\n"
        "def f():\n    from . import errors\n    import tdx_boot_attest.server.cli\n"
    )
    modules = {name: source for name in ("p.server.m", "p.server.errors")} | {
        "tdx_boot_attest.server.cli": source,
        "tdx_boot_attest.server.app": source,
    }
    assert imports_of("p.server.m", source, modules) == {
        "p.server.errors",
        "tdx_boot_attest.server.cli",
    }


def describe(found: list[list[str]]) -> str:
    return "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, describe(found)
