"""One run of an experiment in its own process: ``python -m minise.experiment.worker < task.json``.

``minise experiment run --jobs N`` starts one per run, with the thread pools (or the GPU) of its
share set in the environment before NumPy is imported. Exit codes: 0 the run ended (done or
diverged: see its result.json), 2 an error every run would meet (bad options, no data, no device:
the last line says which), 130/143 stopped by Ctrl-C/SIGTERM (the parent's death sends SIGTERM), 1
anything else.
"""

from __future__ import annotations

import json
import os
import signal
import sys

PARENT_VARIABLE = "MINISE_PARENT_PID"


def die_with_parent() -> bool:
    """Ask the kernel for SIGTERM when the parent (``experiment run``) dies, however it dies (Linux's
    parent-death signal); False when the parent is gone already (then there is nothing to run for)."""
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl here: the run-folder lock still refuses a second writer
            pass
    parent = os.environ.get(PARENT_VARIABLE, "")
    return not (parent.isdigit() and os.getppid() != int(parent))


def main() -> int:
    from ..errors import MiniseError, one_line  # noqa: PLC0415
    from ..speed import keep_freed_memory  # noqa: PLC0415
    from ..train import Interrupted, Terminated, terminate_as_interrupt  # noqa: PLC0415
    from .runner import execute  # noqa: PLC0415

    with terminate_as_interrupt():  # the parent's SIGTERM (or its death) stops the run as Ctrl-C does
        if not die_with_parent():
            print("minise: the `minise experiment run` that started this worker is gone; not starting", flush=True)
            return 143
        keep_freed_memory()  # each step reuses the memory the last one freed (no page faults per step)
        task = json.loads(sys.stdin.read())
        try:
            execute(task, log=print)
        except MiniseError as exc:
            print(f"minise: {one_line(exc)}", flush=True)
            return 2
        except Interrupted as exc:
            print(f"minise: {one_line(exc)}", flush=True)
            return exc.exit_code
        except Terminated:
            print("minise: terminated (SIGTERM)", flush=True)
            return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
