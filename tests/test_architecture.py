"""The shape issues #9 and #21 asked for, checked so that it stays: small modules, no argparse in
the library, no import cycles, the layers kept apart (the attacks import no training, download
or torch; the bundle format no torch), track and attack names compared only where they are
defined, and a package and scripts that answer ``--help`` before torch loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from mico.attacks.registry import ATTACKS, VARIANTS
from mico.tracks.registry import TASKS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mico"
MODULES = sorted(PACKAGE.rglob("*.py"))
SCRIPTS = sorted(REPO.glob("*.py"))
MAX_LINES = 500
#: Modules directly in ``mico/`` (the rest live in their stage's subpackage).
MAX_TOP_MODULES = 6
#: What ``import mico`` and a script's ``--help`` must not load: seconds each on a small machine.
HEAVY = ("torch", "numba", "pandas", "ray")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (never run)."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                stack.extend(child.orelse)
            else:
                stack.append(child)
    return nodes


def imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports when it runs (at any level of the file;
    imports for type checkers alone do not run, so they make no cycle)."""
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
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


def compared_strings(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant inside a comparison (``==``, ``in``, ...) or
    a ``match`` case of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare | ast.MatchValue):
            found.extend(
                (node.lineno, c.value)
                for c in ast.walk(node)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("track", sorted(TASKS))
def test_track_names_are_compared_only_in_the_tracks(track: str) -> None:
    """Per-track behaviour lives in the track's entry: no ``== "cifar10"`` branches elsewhere,
    in the scripts neither."""
    offenders = [
        f"{relative(path)}:{line}"
        for path in [*MODULES, *SCRIPTS]
        if path.parent.name != "tracks"
        for line, text in compared_strings(path)
        if text == track
    ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted({**ATTACKS, **VARIANTS}))
def test_attack_names_are_compared_only_in_their_module(name: str) -> None:
    """What an attack or a variant (``--original``) needs or accepts is declared by it
    (``needs_references``, ``cli_flags``, ``shadows``, ...); nothing else branches on its name."""
    attack = {**ATTACKS, **VARIANTS}[name]
    home = {sys.modules[type(attack).__module__].__file__, PACKAGE / "attacks/registry.py"}
    offenders = [
        f"{relative(path)}:{line}"
        for path in [*MODULES, *SCRIPTS]
        if str(path) not in {str(h) for h in home}
        for line, text in compared_strings(path)
        if text == name
    ]
    assert offenders == []


def test_the_package_root_holds_few_modules() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def layer_imports(folder: str) -> dict[str, set[str]]:
    """``{module file: every module it imports}`` under ``mico/<folder>/`` (any level of the
    file, ``TYPE_CHECKING`` blocks included)."""
    return {relative(p): imports_all(p) for p in sorted((PACKAGE / folder).glob("*.py"))}


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("attacks", ("mico.train", "mico.fetch", "torch")),
        ("bundle", ("torch", "mico.train", "mico.fetch", "mico.outputs", "mico.attacks")),
    ],
)
def test_layers_import_only_what_they_may(folder: str, forbidden: tuple[str, ...]) -> None:
    """The attacks are numpy on stored outputs; the bundle format is files.  Neither names the
    stages that train, download or run models (an annotation under ``TYPE_CHECKING`` counts)."""
    offenders = {
        module: sorted(m for m in names if m.split(".")[0] == "torch" or m.startswith(forbidden))
        for module, names in layer_imports(folder).items()
    }
    assert {module: found for module, found in offenders.items() if found} == {}


def loaded_after(code: str) -> list[str]:
    """The :data:`HEAVY` modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_importing_the_package_loads_no_torch() -> None:
    assert loaded_after("import mico") == []


def test_the_attacks_and_the_bundle_format_run_without_torch() -> None:
    """Transitively too: every module of ``mico.attacks`` and ``mico.bundle`` imported at once
    loads none of :data:`HEAVY` but pandas (the attacks' report tables)."""
    names = [module_name(p) for p in MODULES if p.parent.name in ("attacks", "bundle")]
    loaded = loaded_after("\n".join(f"import {name}" for name in names))
    assert loaded in ([], ["pandas"])


@pytest.mark.parametrize("script", [p.stem for p in SCRIPTS])
def test_scripts_answer_help_and_usage_errors_before_heavy_imports(script: str) -> None:
    """``--help`` and a usage error (here a missing ``--challenge``) print before torch, numba,
    pandas or ray load: argparse runs first, the work's imports after it."""
    code = f"""
import contextlib, io
import {script}
for argv in (["--help"], []):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            {script}.main(argv)
        except SystemExit as exit:
            assert exit.code == (0 if argv else 2), exit.code
    if not argv:
        assert "error: the following arguments are required: --challenge" in err.getvalue()
"""
    assert loaded_after(code) == []


def test_the_autocast_choices_are_the_inference_table() -> None:
    """save_preds.py spells out ``--autocast``'s choices so that ``--help`` needs no torch."""
    import save_preds
    from mico.outputs.inference import AUTOCAST

    assert tuple(sorted(AUTOCAST)) == save_preds.AUTOCAST_CHOICES
