"""No import cycles in lmgc_core or the built-in plugins, function-level imports included.

A cycle hidden behind an import inside a function still ties two modules together: neither can
be understood, tested or moved without the other. The graph is read from the source (``ast``),
so an import that only runs on some path counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.paths import ROOT_DIR

ROOT = ROOT_DIR


def modules(roots: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under each package root."""
    found = {}
    for package, root in roots.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _target(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _extension(found: dict[str, Path], package: str, name: str) -> bool:
    """``name`` is a compiled module of ``package`` (its C source or a built ``.so`` beside it)."""
    if package not in found:
        return False
    folder = found[package].parent
    return (folder / f"{name}.c").exists() or any(folder.glob(f"{name}.*.so"))


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``found`` it imports anywhere in its source. ``from pkg import
    sub`` is an import of ``pkg.sub`` (a module, or a compiled extension beside the package),
    not of ``pkg`` itself."""
    graph: dict[str, set[str]] = {m: set() for m in found}
    for module, path in found.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[module].update(a.name for a in node.names if a.name in found)
            elif isinstance(node, ast.ImportFrom):
                base = _target(module, path, node)
                rest = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in found:
                        graph[module].add(sub)
                    elif not _extension(found, base, alias.name):
                        rest.append(alias.name)
                if base in found and rest:
                    graph[module].add(base)
    for module in graph:
        graph[module].discard(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _roots() -> dict[str, Path]:
    roots = {"lmgc_core": ROOT / "lmgc_core"}
    roots.update({p.name: p for p in sorted((ROOT / "plugins").iterdir()) if p.is_dir()})
    return roots


def test_no_import_cycles_in_the_core_or_the_plugins():
    graph = import_graph(modules(_roots()))
    assert len(graph) > 60  # the whole tree was read
    assert cycles(graph) == []


def test_a_cycle_behind_a_function_level_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import g\n")
    (pkg / "c.py").write_text("from pkg.a import x\n")
    (pkg / "d.py").write_text("from . import a, c\n")  # imports both, is in no cycle
    found = cycles(import_graph(modules({"pkg": pkg})))
    assert found == [["pkg.a", "pkg.b", "pkg.c"]]
