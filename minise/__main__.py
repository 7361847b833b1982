"""``python -m minise`` and the ``minise`` command (see :mod:`minise.cli`): ``minise train``, ``minise eval``, ..."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see :func:`minise.cli.main`)."""
    from .cli import main as run  # noqa: PLC0415 - keep `import minise` light

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
