"""The dependency directions of the three packages, checked on their source (an AST walk).

Data flows one way: datasets -> extractors -> cache -> tasks -> probes -> records -> reports.

- ``extractors/`` and ``probes/`` import from ``featkit`` only its leaf helpers
  (:data:`LEAF_HELPERS`); ``probes/`` imports nothing from ``extractors/`` (probes are pure
  functions over arrays and callables);
- ``featkit/tasks/`` imports probes and extractors, never a command; the data, extraction,
  cache and record layers (:data:`LOWER`) import no task, analysis, report or command;
- ``featkit/commands/`` call tasks: they import no probe (but for the plotting helpers in
  :data:`COMMAND_PROBE_ALLOWED`), and nothing below the commands imports a command;
- no import cycle anywhere, counting imports inside functions and under ``TYPE_CHECKING``
  too (a cycle there is still two modules that each need the other).

Every import statement is read, wherever it stands; relative imports are resolved.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("featkit", "extractors", "probes")
#: What extractors/ and probes/ may import from featkit.
LEAF_HELPERS = ("featkit.errors", "featkit._imports", "featkit._device")
#: probes/ modules a command may import (figures of a probe's own result, no computation).
COMMAND_PROBE_ALLOWED = ("probes.perturb_plot",)
#: featkit's layers below the tasks: data, extraction, cache and records.
LOWER = ("featkit.cache", "featkit.cache_files", "featkit.featureset", "featkit.extraction", "featkit.datasets",
         "featkit.inventory",
         "featkit.distributed", "featkit.results", "featkit.errors", "featkit._imports",
         "featkit._device", "featkit._version")
#: What the lower layers never import.
UPPER = ("featkit.tasks", "featkit.analysis", "featkit.reporting", "featkit.plots",
         "featkit.stats", "featkit.commands")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(path: Path, root: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in one file; ``from pkg import sub`` counts
    as importing ``pkg.sub`` when that is a module of the tree."""
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES
                 ) -> dict[str, dict[str, int]]:
    """module -> {imported module of the tree: first line}, for every module under root."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    known = set(files)
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(path, root, known):
            while target and target not in known:
                target = target.rpartition(".")[0]  # a name inside a module
            if target and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import that goes against the declared directions, as ``module:line -> target``."""
    bad = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            where = f"{module}:{line} -> {target}"
            if (_in(module, "extractors") or _in(module, "probes")) and _in(target, "featkit"):
                if target not in LEAF_HELPERS:
                    bad.append(f"{where} (extractors/ and probes/ import only featkit's helpers)")
            if _in(module, "probes") and _in(target, "extractors"):
                bad.append(f"{where} (probes/ are pure: no extractor objects)")
            if _in(target, "featkit.commands") and not _in(module, "featkit.commands") \
                    and module not in ("featkit.cli", "featkit.__main__"):
                bad.append(f"{where} (only the CLI imports commands)")
            if any(_in(module, low) for low in LOWER) and any(_in(target, up) for up in UPPER):
                bad.append(f"{where} (data, cache and records sit below tasks and reports)")
            if _in(module, "featkit.commands") and _in(target, "probes") \
                    and target not in COMMAND_PROBE_ALLOWED:
                bad.append(f"{where} (commands call tasks, not probes)")
    return bad


def test_the_tree_keeps_the_dependency_directions():
    graph = import_graph(ROOT)
    assert "featkit.tasks.linear" in graph and "probes" in graph  # the walk sees the tree
    violations = layer_violations(graph)
    assert not violations, "\n".join(violations)


def test_the_tree_has_no_import_cycle():
    cycles = find_cycles(import_graph(ROOT))
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_deliberate_cycle_and_a_wrong_direction_are_caught(tmp_path):
    """The checks fail on a tree with a cycle (one side a lazy import inside a function, the
    other a relative import) and with a probe that imports the cache."""
    _write(tmp_path, {
        "featkit/__init__.py": "",
        "featkit/errors.py": "",
        "featkit/cache.py": "from featkit import errors\n",
        "featkit/plots.py": "def f():\n    from featkit.reporting import x\n",
        "featkit/reporting.py": "from .plots import f\n",
        "extractors/__init__.py": "from featkit.errors import E\n",
        "probes/__init__.py": "",
        "probes/knn.py": "import featkit.cache\nfrom featkit.errors import E\n",
    })
    graph = import_graph(tmp_path)
    assert graph["featkit.reporting"] == {"featkit.plots": 1}
    assert find_cycles(graph) == [["featkit.plots", "featkit.reporting"]]
    assert layer_violations(graph) == [
        "probes.knn:1 -> featkit.cache (extractors/ and probes/ import only featkit's helpers)"
    ]


@pytest.mark.parametrize("module, level, target, expected", [
    ("featkit.tasks.linear", 1, "loading", "featkit.tasks.loading"),
    ("featkit.tasks.linear", 2, "errors", "featkit.errors"),
    ("featkit.tasks", 1, "registry", "featkit.tasks.registry"),  # from a package __init__
])
def test_relative_imports_resolve(module, level, target, expected):
    assert _resolve(module, module == "featkit.tasks", level, target) == expected
