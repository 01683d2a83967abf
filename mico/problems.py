"""Bad input found in several places at once: every place listed, then one line.

A check that stops at the first problem makes a user fix a 600-folder bundle one rerun at a
time.  :class:`ProblemsError` carries the whole list; :func:`mico.cli.run_cli` prints it on
stderr, one problem a line, before the usual ``error:`` line that says what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Problems printed before "... and N more".
SHOWN = 50


class ProblemsError(ValueError):
    """A ``ValueError`` whose message is the one-line summary and ``problems`` the details."""

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
