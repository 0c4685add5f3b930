"""The project's import graph, read from the sources with `ast` (nothing is imported or run).

    python -m tests.import_graph              # arrows between the top-level packages
    python -m tests.import_graph --modules    # every arrow between modules

Every `import` counts, at module level or inside a function. Importing
`a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`; `reachable` follows
those implicit arrows too, `cycles` only the written ones.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from typing import Dict, Iterable, List, Optional, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("captioner", "pipelines", "trainer", "tools")

Graph = Dict[str, Set[str]]


def project_modules(root: str = ROOT, packages: Iterable[str] = PACKAGES) -> Dict[str, str]:
    """{dotted module name: file path} of every .py file in the packages (a package is its __init__)."""
    modules = {}
    for package in packages:
        for folder, subfolders, files in os.walk(os.path.join(root, package)):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    modules[".".join(parts)] = os.path.join(folder, name)
    return modules


def _resolve(name: str, modules: Dict[str, str]) -> Optional[str]:
    """The project module `name` refers to: itself, or its longest prefix that is a module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def build_graph(root: str = ROOT, packages: Iterable[str] = PACKAGES) -> Graph:
    """{module: the project modules it imports}."""
    modules = project_modules(root, packages)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def imports_of(module: str, path: str, modules: Dict[str, str]) -> Set[str]:
    """The project modules one file imports, anywhere in it (`from a import b, c` counts b and c)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [_resolve(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [_resolve(f"{base}.{alias.name}", modules) for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t and t != module)
    return found


def _parents(module: str) -> List[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def reachable(graph: Graph, start: str) -> Set[str]:
    """Every module that importing `start` runs (its imports, theirs, and the packages they sit in)."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(graph.get(module, ()))
        todo.extend(parent for parent in _parents(module) if parent in graph)
    seen.discard(start)
    return seen


def package_edges(graph: Graph) -> Dict[str, Set[str]]:
    """{top-level package: the other top-level packages its modules import}."""
    edges: Dict[str, Set[str]] = {module.split(".")[0]: set() for module in graph}
    for module, targets in graph.items():
        edges[module.split(".")[0]].update(t.split(".")[0] for t in targets)
    for package, targets in edges.items():
        targets.discard(package)
    return edges


def cycles(graph: Graph) -> List[List[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's components)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.import_graph", description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="print every module's arrows, not only packages'")
    args = parser.parse_args(argv)
    graph = build_graph()
    for package, targets in sorted(package_edges(graph).items()):
        print(f"{package} -> {', '.join(sorted(targets)) or '(nothing)'}")
    if args.modules:
        for module, targets in sorted(graph.items()):
            print(f"  {module} -> {', '.join(sorted(targets)) or '(nothing)'}")
    found = cycles(graph)
    print("import cycles: " + ("; ".join(" <-> ".join(group) for group in found) if found else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
