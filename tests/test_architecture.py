"""The shape issue #9 asked for, checked so that it stays: small modules, no argparse in the
library, no import cycles, and no track names outside the track registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mico.tracks.registry import TASKS

PACKAGE = Path(__file__).resolve().parents[1] / "mico"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports (at any level of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mico"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mico"))
    return found


def test_modules_are_small() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in MODULES}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_only_the_cli_helper_imports_argparse() -> None:
    users = [module_name(p) for p in MODULES if "argparse" in imports_all(p)]
    assert users == ["mico.cli"]


def imports_all(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_import_cycles() -> None:
    names = {module_name(p): p for p in MODULES}
    graph = {
        name: {m for m in imports(path) if m in names and m != name} for name, path in names.items()
    }
    # A package's __init__ re-exporting its children is not a cycle of behaviour.
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack, node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize("track", sorted(TASKS))
def test_track_names_appear_only_in_the_registry(track: str) -> None:
    """Per-track behaviour lives in the track's entry: no ``== "cifar10"`` branches elsewhere."""
    offenders = []
    for path in MODULES:
        if path.parent.name == "tracks":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(
                isinstance(c, ast.Constant) and c.value == track for c in node.comparators
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
