"""Print the import graph of ``services/`` and its import cycles (issue 12: "no cycle").

Usage: ``python -m tools.import_graph [--modules] [--package services]``

Per package (``services.core``, ``services.ingest``, ... and the top-level modules such as
``services.cli``) it prints which other packages of ``services`` it imports, then either
``no cycles`` or every cycle between modules (module level), one per strongly connected
component of the module graph: its modules, then its shortest cycle (``a.b -> a.c -> a.b``).
With ``--modules`` it prints every module's direct imports instead of the package summary.
Exit status: 0 without cycles, 1 with.

The graph is grimp's (the library import-linter is built on): every ``import`` statement counts,
including those inside functions and under ``TYPE_CHECKING``. grimp reads the syntax and does not
see ``importlib.import_module("services.x.y")``; such calls with a literal name of a module in the
graph are added here as imports too (marked ``(dynamic)`` in ``--modules``), so a cycle hidden
behind them shows. Cycles are the strongly connected components (Tarjan, 1972) of that graph; for
each, the shortest cycle through its first module is shown (breadth-first search).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import grimp


def package_of(module: str, root: str) -> str:
    """``services.core.stage`` -> ``services.core``; ``services.cli`` -> ``services.cli``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else root


def module_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """``{module: modules it imports directly}`` within the graph's packages."""
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}


def source_path(module: str, root: str) -> Path | None:
    """The file of ``module`` (a module of package ``root``), found without importing it."""
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def dynamic_imports(module: str, root: str, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``module`` imports by ``importlib.import_module("<literal>")``."""
    path = source_path(module, root)
    if path is None:
        return set()
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str) and node.args[0].value in known
                and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "import_module"):
            found.add(node.args[0].value)
    return found


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of size > 1 (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def shortest_cycle(start: str, edges: dict[str, set[str]], within: Iterable[str]) -> list[str]:
    """The shortest path ``start -> ... -> start`` inside ``within`` (breadth-first)."""
    allowed = set(within)
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges.get(v, ())):
            if w not in allowed:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    return []


def report(root: str, show_modules: bool) -> tuple[list[str], list[list[str]]]:
    """The printed lines and the cycles (each a list of modules) of package ``root``."""
    graph = grimp.build_graph(root, cache_dir=None)
    edges = module_edges(graph)
    dynamic = {m: dynamic_imports(m, root, set(edges)) - edges[m] for m in edges}
    for module, imported in dynamic.items():
        edges[module] |= imported
    lines = [f"import graph of {root} (module level, grimp {grimp.__version__}): {len(edges)} modules, "
             f"{sum(len(v) for v in edges.values())} imports ({sum(map(len, dynamic.values()))} dynamic)"]
    if show_modules:
        for module, imported in edges.items():
            names = [m + (" (dynamic)" if m in dynamic[module] else "") for m in sorted(imported)]
            lines.append(f"{module} -> {', '.join(names) or '-'}")
    else:
        packages: dict[str, set[str]] = {}
        for module, imported in edges.items():
            mine = package_of(module, root)
            packages.setdefault(mine, set()).update(package_of(m, root) for m in imported)
        for package, imported in sorted(packages.items()):
            others = sorted(imported - {package})
            lines.append(f"{package} -> {', '.join(others) or '-'}")
    components = strongly_connected(edges)
    cycles = [shortest_cycle(component[0], edges, component) for component in components]
    if cycles:
        lines.append(f"{len(cycles)} import cycle(s) (modules that import each other, and the shortest cycle):")
        for component, cycle in zip(components, cycles, strict=True):
            lines.append(f"  {', '.join(component)}")
            lines.append(f"    {' -> '.join(cycle)}")
    else:
        lines.append("no cycles")
    return lines, cycles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default="services", help="top-level package to graph (default: services)")
    parser.add_argument("--modules", action="store_true", help="every module's direct imports")
    args = parser.parse_args(argv)
    lines, cycles = report(args.package, args.modules)
    print("\n".join(lines))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
