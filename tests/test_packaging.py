"""What ``pip install .`` promises: every library the code imports is a declared dependency,
and ``pyproject.toml`` and ``requirements.txt`` name the same ones with the same ranges.

A dependency the code imports but the package does not declare installs fine and fails at the
first run (issue 21: scikit-learn, imported by the ``combine`` attack, was listed as test-only).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = (
    "download_files.py",
    "save_preds.py",
    "run_lira_mia.py",
    "save_zip.py",
    "train_shadows.py",
)

#: What requirements.txt adds for development: the test runner and its workers, property tests,
#: the linter.
DEVELOPMENT_ONLY = {"pytest", "pytest-xdist", "hypothesis", "ruff"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (``Foo_Bar>=1`` -> ``foo-bar``)."""
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared() -> dict[str, str]:
    """``{name: requirement}`` of pyproject.toml's runtime dependencies."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_name(line): line.replace(" ", "") for line in project["dependencies"]}


def requirements() -> dict[str, str]:
    """``{name: requirement}`` of requirements.txt (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").open())
    return {_name(line): line.replace(" ", "") for line in lines if line}


def imported_distributions() -> dict[str, set[str]]:
    """``{distribution: files}`` of every third-party module imported anywhere in the package
    or the scripts, at module level or inside a function."""
    owners = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    files = [*sorted((REPO / "mico").rglob("*.py")), *(REPO / name for name in SCRIPTS)]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "mico":
                    continue
                for distribution in owners.get(top, [top]):
                    found.setdefault(_name(distribution), set()).add(path.name)
    return found


def test_every_imported_library_is_a_declared_dependency() -> None:
    names = declared()
    missing = {dist: sorted(files) for dist, files in imported_distributions().items()}
    assert {dist: files for dist, files in missing.items() if dist not in names} == {}


def test_pyproject_and_requirements_agree() -> None:
    runtime, pinned = declared(), requirements()
    assert {name: pinned.get(name) for name in runtime} == runtime
    assert set(pinned) - set(runtime) == DEVELOPMENT_ONLY
