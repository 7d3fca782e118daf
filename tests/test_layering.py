"""The package's layering: no import cycle, no upward import, the library never imports studies.

Imports are read with ``ast`` from the source (nothing is imported). Two graphs:

- module-level imports must form no cycle: such a cycle breaks or depends on import order
  (a package's ``__init__`` importing its own submodules is not one: Python runs it first);
- every import, module-level or inside a function, must point to a lower layer, or stay
  within its own group (a package's modules may use each other). The layers are written
  down in ``docs/DEVELOPING.md``; the list below is the checked copy;
- no module imports another's private (``_name``) names.

One exception: ``from interplab import __version__`` reads a constant the root package defines
before any of its imports, so it may be used from anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "interplab"

# lowest first; a module belongs to the group whose name is its longest matching prefix
LAYERS: list[list[str]] = [
    ["interplab.errors"],
    ["interplab.devices"],
    ["interplab.io", "interplab.numerics"],
    ["interplab.models", "interplab.instrument", "interplab.data", "interplab.lm"],
    ["interplab.runs", "interplab.report", "interplab.tasks"],
    ["interplab.analysis"],
    ["interplab.interventions", "interplab.sae"],
    ["interplab.train"],
    ["interplab.sae.train"],  # the SAE trainer reuses train's checkpoint and metrics helpers
    ["interplab"],  # the package root re-exports the public entry points
    ["interplab.studies", "interplab.sae.cli", "interplab.lm.cli"],
    ["interplab.challenges"],  # generated challenges, solved by the studies' pipelines
    ["interplab.cli"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """``(imported module, at module level, line)`` for every interplab import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level if/try still run at import time
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    package = name if is_package(name, modules) else name.rpartition(".")[0]
    found: list[tuple[str, bool, int]] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == ROOT and [a.name for a in node.names] == ["__version__"]:
                continue
            for a in node.names:  # `from package import submodule` imports the submodule
                sub = f"{base}.{a.name}"
                targets.append(sub if sub in modules else base)
        for t in targets:
            if t == ROOT or t.startswith(ROOT + "."):
                while t not in modules:  # a name inside a module: the module itself
                    t = t.rpartition(".")[0]
                found.append((t, id(node) in top_level, node.lineno))
    return found


def group_of(name: str) -> tuple[int, str]:
    best: tuple[int, str] | None = None
    for level, groups in enumerate(LAYERS):
        for g in groups:
            if (name == g or name.startswith(g + ".")) and (best is None or len(g) > len(best[1])):
                best = (level, g)
    assert best is not None, f"{name} is in no layer: add it to LAYERS and docs/DEVELOPING.md"
    return best


def module_level_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        for t, at_top, _ in imports(m, path, modules):
            if at_top and t != m:
                graph[m].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = GREY
        stack.append(m)
        for t in sorted(graph[m]):
            if colour[t] == GREY:
                return stack[stack.index(t):] + [t]
            if colour[t] == WHITE and (found := visit(t)):
                return found
        stack.pop()
        colour[m] = BLACK
        return None

    for m in sorted(graph):
        if colour[m] == WHITE and (found := visit(m)):
            return found
    return None


def test_every_module_has_a_layer():
    for m in all_modules():
        group_of(m)


def test_no_import_cycle_at_module_level():
    cycle = find_cycle(module_level_graph(all_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_upward_import():
    modules = all_modules()
    bad = []
    for m, path in modules.items():
        level, group = group_of(m)
        for t, _, line in imports(m, path, modules):
            t_level, t_group = group_of(t)
            if t_group != group and t_level >= level:
                bad.append(f"{path.relative_to(SRC)}:{line} {m} (layer {level}) imports {t} (layer {t_level})")
    assert not bad, "imports that point upward or sideways:\n" + "\n".join(sorted(set(bad)))


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for m, path in all_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(ROOT):
                bad += [f"{path.relative_to(SRC)}:{node.lineno} imports {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_the_library_never_imports_studies():
    modules = all_modules()
    above = ("interplab.studies", "interplab.challenges")  # challenges are solved with the studies' pipelines
    bad = [f"{m} imports {t}" for m, path in modules.items() if not m.startswith(above)
           for t, _, _ in imports(m, path, modules) if t.startswith("interplab.studies")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, expected", [
    ("import interplab.runs\n", [("interplab.runs", True)]),
    ("def f():\n    from interplab.models import MLP\n", [("interplab.models", False)]),
    ("from interplab import data, errors\n", [("interplab.data", True), ("interplab.errors", True)]),
    ("from interplab import __version__\n", []),
])
def test_imports_are_read_as_written(tmp_path, monkeypatch, source, expected):
    path = tmp_path / "interplab" / "probe.py"
    path.parent.mkdir()
    path.write_text(source)
    modules = {**all_modules(), "interplab.probe": path}
    assert [(t, top) for t, top, _ in imports("interplab.probe", path, modules)] == expected


def test_a_cycle_and_an_upward_import_are_caught():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert group_of("interplab.io")[0] < group_of("interplab.runs")[0] < group_of("interplab.train")[0]
    assert group_of("interplab.sae.train") == (8, "interplab.sae.train")
