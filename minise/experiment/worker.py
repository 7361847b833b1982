"""One run of an experiment in its own process: ``python -m minise.experiment.worker < task.json``.

``minise experiment run --jobs N`` starts one per run, with the thread pools (or the GPU) of its
share set in the environment before NumPy is imported. Exit codes: 0 the run ended (done or
diverged: see its result.json), 2 an error every run would meet (bad options, no data, no device:
the last line says which), 1 anything else.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from ..errors import MiniseError, one_line  # noqa: PLC0415
    from ..speed import keep_freed_memory  # noqa: PLC0415
    from .runner import execute  # noqa: PLC0415

    keep_freed_memory()  # each step reuses the memory the last one freed (no page faults per step)

    task = json.loads(sys.stdin.read())
    try:
        execute(task, log=print)
    except MiniseError as exc:
        print(f"minise: {one_line(exc)}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
