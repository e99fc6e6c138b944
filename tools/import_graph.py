"""Print the import graph of ``ocrstream/`` and ``services/`` and its import cycles (issues 12, 23: "no cycle").

Usage: ``python -m tools.import_graph [--modules] [--package ocrstream --package services]``

Per package (``ocrstream.streaming``, ``services.ingest``, ... and the top-level modules such as
``ocrstream.settings``) it prints which other packages it imports, then either ``no cycles`` or
every cycle, at two levels: between modules (one per strongly connected component of the module
graph: its modules, then its shortest cycle ``a.b -> a.c -> a.b``) and between packages
(``ocrstream.ocr -> ocrstream.streaming -> ocrstream.ocr``: two rooms that import each other
through different modules, which the module level does not see).
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


def package_of(module: str) -> str:
    """``ocrstream.streaming.stage`` -> ``ocrstream.streaming``; ``ocrstream.settings`` -> itself."""
    return ".".join(module.split(".")[:2])


def module_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """``{module: modules it imports directly}`` within the graph's packages."""
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}


def source_path(module: str) -> Path | None:
    """The file of ``module``, found without importing it."""
    root = module.split(".")[0]
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def dynamic_imports(module: str, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``module`` imports by ``importlib.import_module("<literal>")``."""
    path = source_path(module)
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


def report(roots: list[str], show_modules: bool) -> tuple[list[str], list[list[str]]]:
    """The printed lines and the cycles (each a list of modules or packages) of packages ``roots``."""
    graph = grimp.build_graph(*roots, cache_dir=None)
    edges = module_edges(graph)
    dynamic = {m: dynamic_imports(m, set(edges)) - edges[m] for m in edges}
    for module, imported in dynamic.items():
        edges[module] |= imported
    lines = [f"import graph of {', '.join(roots)} (module level, grimp {grimp.__version__}): {len(edges)} modules, "
             f"{sum(len(v) for v in edges.values())} imports ({sum(map(len, dynamic.values()))} dynamic)"]
    packages: dict[str, set[str]] = {}
    for module, imported in edges.items():
        mine = package_of(module)
        packages.setdefault(mine, set()).update(package_of(m) for m in imported if package_of(m) != mine)
    if show_modules:
        for module, imported in edges.items():
            names = [m + (" (dynamic)" if m in dynamic[module] else "") for m in sorted(imported)]
            lines.append(f"{module} -> {', '.join(names) or '-'}")
    else:
        for package, imported in sorted(packages.items()):
            lines.append(f"{package} -> {', '.join(sorted(imported)) or '-'}")
    cycles = []
    for level, level_edges in (("module", edges), ("package", packages)):
        components = strongly_connected(level_edges)
        found = [shortest_cycle(component[0], level_edges, component) for component in components]
        if found:
            lines.append(f"{len(found)} {level}-level import cycle(s) (members that import each other, "
                         "and the shortest cycle):")
            for component, cycle in zip(components, found, strict=True):
                lines.append(f"  {', '.join(component)}")
                lines.append(f"    {' -> '.join(cycle)}")
        cycles += found
    if not cycles:
        lines.append("no cycles (module level and package level)")
    return lines, cycles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", action="append", dest="packages",
                        help="top-level package to graph, repeatable (default: ocrstream and services)")
    parser.add_argument("--modules", action="store_true", help="every module's direct imports")
    args = parser.parse_args(argv)
    lines, cycles = report(args.packages or ["ocrstream", "services"], args.modules)
    print("\n".join(lines))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
