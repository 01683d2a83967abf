"""The project's user errors: what is wrong and what to do, in one line, never a traceback.

:class:`UserError` is what :func:`mico.cli.run_cli` reports as ``error: <message>`` with exit
code 2; the operating system's own errors (``OSError``: a missing path, a full disk, a refused
permission) are reported the same way, since they name the path and what failed.  Any other
exception is a bug in this project and keeps its traceback, a ``ValueError`` from numpy or a
library included.

:class:`InputError` is also a ``ValueError`` (a bad value: a flag, a file's content, sizes that
do not fit), so code and tests that catch ``ValueError`` see it as before.

Bad input found in several places at once is listed, every place, then one line: a check that
stops at the first problem makes a user fix a 600-folder bundle one rerun at a time.
:class:`ProblemsError` carries the whole list; :func:`mico.cli.run_cli` prints it on stderr, one
problem a line, before the usual ``error:`` line that says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Problems printed before "... and N more".
SHOWN = 50


class UserError(Exception):
    """Bad input or environment, with a message that says what is wrong and what to do."""


class InputError(UserError, ValueError):
    """A bad value: a flag, a combination of flags, a file's content, sizes that do not fit."""


class ProblemsError(InputError):
    """An :class:`InputError` whose message is the one-line summary and ``problems`` the
    details."""

    def __init__(self, message: str, problems: Sequence[str]) -> None:
        super().__init__(message)
        self.problems = [str(problem) for problem in problems]

    def listing(self) -> str:
        """``N problems:`` and one indented line per problem (the first :data:`SHOWN`)."""
        shown = "\n".join(f"  {problem}" for problem in self.problems[:SHOWN])
        more = len(self.problems) - SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return f"{plural(len(self.problems), 'problem')}:\n{shown}{tail}"


def plural(count: int, noun: str) -> str:
    """``1 problem``, ``2 problems``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
