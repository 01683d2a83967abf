"""One error path for the scripts: user errors in one line and exit 2, bugs with a traceback."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from mico.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, run_cli
from mico.errors import InputError, ProblemsError, UserError

REPO = Path(__file__).resolve().parents[1]


def raising(exc: BaseException):
    def main(argv: Sequence[str] | None) -> int:
        raise exc

    return main


@pytest.mark.parametrize(
    "exc",
    [
        InputError("--folds must be at least 2"),
        UserError("--folds must be at least 2"),
        FileNotFoundError("--folds must be at least 2"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(exc, capsys):
    assert run_cli(raising(exc)) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: --folds must be at least 2\n"


def test_an_os_error_names_its_path(tmp_path, capsys):
    def main(argv: Sequence[str] | None) -> int:
        (tmp_path / "absent").read_text()
        return 0

    assert run_cli(main) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / "absent") in err and err.count("\n") == 1


def test_problems_are_listed_before_the_line(capsys):
    exc = ProblemsError("2 problems in the bundle; fix them", ["a: missing", "b: missing"])
    assert run_cli(raising(exc)) == EXIT_USER_ERROR
    assert capsys.readouterr().err == (
        "2 problems:\n  a: missing\n  b: missing\nerror: 2 problems in the bundle; fix them\n"
    )


def test_a_bug_keeps_its_traceback():
    """A ``ValueError`` the project did not raise as a user error (here numpy's) is a bug."""

    def main(argv: Sequence[str] | None) -> int:
        np.zeros(2) + np.zeros(3)
        return 0

    with pytest.raises(ValueError, match="broadcast"):
        run_cli(main)
    with pytest.raises(KeyError):
        run_cli(raising(KeyError("bug")))


def test_ctrl_c_is_one_line(capsys):
    assert run_cli(raising(KeyboardInterrupt())) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.startswith("interrupted: ")


def test_input_errors_are_value_errors():
    """Callers (and tests) that catch ``ValueError`` keep working."""
    assert issubclass(InputError, ValueError) and issubclass(ProblemsError, InputError)


def test_the_library_raises_no_bare_value_error():
    """Every ``ValueError`` the project raises on purpose is an :class:`InputError` (its own
    error classes included), so that the CLI can tell it from a bug's."""
    offenders = []
    for path in [*sorted((REPO / "mico").rglob("*.py")), *sorted(REPO.glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and path.name != "errors.py":
                bases = {getattr(base, "id", "") for base in node.bases}
                if "ValueError" in bases:  # a project error must be a UserError to be one line
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
            value = node.exc if isinstance(node, ast.Raise) else getattr(node, "value", None)
            if isinstance(node, ast.Raise | ast.Return) and isinstance(value, ast.Call):
                func = value.func
                if isinstance(func, ast.Name) and func.id == "ValueError":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
