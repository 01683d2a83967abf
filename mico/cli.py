"""What the four scripts share: directory flags, logging, and turning errors into one line.

Conventions: ``--root DIR`` holds the ``<challenge>/`` bundle (default ``.``); ``--data-dir DIR``
holds the base datasets (default ``<root>/data``).  A user error (bad path, malformed file,
unknown flag value) prints ``error: <what is wrong and what to do>`` on stderr and exits 2; a
traceback means a bug in this project.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mico.devices import resolve_device
from mico.layout import data_root, preds_root
from mico.problems import ProblemsError
from mico.tasks import TASKS

__all__ = [
    "add_common_args",
    "add_preds_dir_arg",
    "data_dir",
    "preds_dir",
    "resolve_device",
    "run_cli",
    "setup_logging",
]

#: Exceptions that describe bad input or environment, reported without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, OSError)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--challenge``, ``--root``, ``--data-dir`` and ``--quiet``, the same in every script."""
    parser.add_argument("--challenge", required=True, choices=sorted(TASKS), help="MICO track")
    parser.add_argument(
        "--root", type=Path, default=Path("."), help="folder holding <challenge>/ (default: .)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the base datasets (default: <root>/data)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def data_dir(args: argparse.Namespace) -> Path:
    """``--data-dir`` or its default ``<root>/data``."""
    return data_root(args.root, args.data_dir)


def add_preds_dir_arg(parser: argparse.ArgumentParser) -> None:
    """``--preds-dir``, shared by save_preds.py (writes) and run_lira_mia.py (reads)."""
    parser.add_argument(
        "--preds-dir",
        type=Path,
        default=None,
        help="where model outputs are stored (default: <root>/preds)",
    )


def preds_dir(args: argparse.Namespace) -> Path:
    """``<preds-dir>/<challenge>``, defaulting to ``<root>/preds/<challenge>``."""
    return preds_root(args.root, args.challenge, args.preds_dir)


def setup_logging(quiet: bool) -> None:
    """Plain ``level: message`` lines on stderr; progress bars stay on stderr too."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s: %(message)s",
        force=True,
    )


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; report user errors and Ctrl-C in one line instead of a traceback
    (a :class:`~mico.problems.ProblemsError` lists its problems first)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        if isinstance(exc, ProblemsError):
            print(exc.listing(), file=sys.stderr)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
