"""The errors minise reports to a person in one line (the ``minise`` command exits with code 2).

Every such error derives from :class:`MiniseError`, so a caller can catch them all at once and
tell them from a bug (any other exception). Each keeps the built-in base it has always had
(``RuntimeError`` for data, checkpoint and device errors), so older ``except`` clauses still work.
"""

from __future__ import annotations

__all__ = ["MiniseError", "UserError", "one_line"]


class MiniseError(Exception):
    """Something a user can fix: bad options, missing or corrupt files, an unusable device."""


class UserError(MiniseError):
    """A mistake in what was asked for (options, paths): reported in one line, exit code 2."""


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line (newlines folded), cut to ``limit`` characters: safe to put in a message."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
