"""Gradescope: ``minise assignments autograder OUT.zip`` and the results.json its run writes.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once when it builds the
image, and for each submission puts the student's files in ``/autograder/submission``, runs
``/autograder/run_autograder`` and reads ``/autograder/results/results.json``:

    {"score": 87.5, "execution_time": 41, "output": "...", "visibility": "visible",
     "stdout_visibility": "hidden",
     "tests": [{"name": "...", "score": 0.5, "max_score": 0.5, "status": "passed",
                "output": "...", "visibility": "visible", "tags": ["conv", "conv/forward"]}, ...]}

Each assignment is worth ``points``, shared equally by its graded tests; an assignment that could
not be graded is one failed entry worth its points, with the reason as output. The run itself is
:func:`.grader.grade` in the sandbox, as everywhere else.
"""

from __future__ import annotations

import json
import os
import shlex
import time
import zipfile
from pathlib import Path
from typing import Any

from .grader import DEFAULT_TIME_LIMIT, DEFAULT_TIMEOUT, find_package, format_table, grade, write_atomically
from .make import KIT, course_files, ignore_caches, project_root
from .markers import ASSIGNMENTS, AssignmentError

__all__ = ["build_autograder", "run_autograder", "gradescope_results", "SOURCE_FILES"]

# what of the instructor's checkout goes into /autograder/source (the graded tests included)
SOURCE_FILES = ["minise", "tests", "pyproject.toml", "README.md", "LICENSE"]

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu).
set -euo pipefail
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-pip bubblewrap
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
# torch is the graded tests' oracle: the CPU build is enough
/autograder/venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/pip install "/autograder/source[test]"
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission: grade /autograder/submission in the sandbox and write
# /autograder/results/results.json. (MINISE_AUTOGRADER_ROOT and MINISE_AUTOGRADER_PYTHON exist for
# testing this script outside Gradescope.)
set -uo pipefail
ROOT="${{MINISE_AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{MINISE_AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
cd "$ROOT/source"   # python -m then grades with this checkout: its package is the reference, its tests the tests
exec "$PYTHON" -m minise.assignments gradescope-run --root "$ROOT" --tests "$ROOT/source/tests" {options}
"""


def build_autograder(out_zip: str | os.PathLike, only: set[str] | None = None,
                     time_limit: float = DEFAULT_TIME_LIMIT, timeout: float = DEFAULT_TIMEOUT,
                     points: float = 100.0, source: Path | None = None) -> Path:
    """Write the autograder zip: setup.sh, run_autograder and the checkout (package and tests) under source/."""
    source = Path(source) if source is not None else project_root()
    out = Path(out_zip)
    if out.suffix != ".zip":
        raise AssignmentError(f"{out}: the autograder must be a .zip file")
    if points <= 0:
        raise AssignmentError(f"--points must be positive, got {points:g}")
    options = ["--time-limit", f"{time_limit:g}", "--timeout", f"{timeout:g}", "--points", f"{points:g}"]
    if only:
        options += ["--only", ",".join(sorted(only))]
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "x", zipfile.ZIP_DEFLATED) as z:
            _add_script(z, "setup.sh", SETUP_SH)
            _add_script(z, "run_autograder", RUN_AUTOGRADER.format(options=shlex.join(options)))
            files = course_files(source)
            for name in SOURCE_FILES:
                src = files.get(name)
                if src is not None and src.is_file():
                    z.write(src, f"{name}")
                elif src is not None and src.is_dir():
                    for path in sorted(src.rglob("*")):
                        rel = Path(name) / path.relative_to(src)
                        if path.is_file() and not path.is_symlink() and not ignore_caches("", [path.name]) \
                                and "__pycache__" not in rel.parts and rel.parts[:2] != ("minise", KIT):
                            z.write(path, rel.as_posix())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _add_script(z: zipfile.ZipFile, name: str, text: str) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = 0o100755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, text)


def gradescope_results(result: dict[str, Any], points: float = 100.0, seconds: float | None = None) -> dict[str, Any]:
    """A grading result (:func:`.grader.grade`) as Gradescope's results.json."""
    tests: list[dict[str, Any]] = []
    for name, a in result["assignments"].items():
        if a["errors"] or not a["total"]:
            tests.append({"name": f"{name}: could not be graded", "score": 0.0, "max_score": float(points),
                          "status": "failed", "output": "\n\n".join(a["errors"]) or "no graded tests ran",
                          "visibility": "visible", "tags": [name]})
            continue
        each = points / a["total"]
        for t in a["tests"]:
            output = "" if t["passed"] else f"{t['error_type'] or 'failed'}: {t['message']}".strip()
            tests.append({"name": t["test"], "score": each if t["passed"] else 0.0, "max_score": each,
                          "status": "passed" if t["passed"] else "failed", "output": output,
                          "visibility": "visible", "tags": [name, *t["parts"]]})
    summary = "\n".join(line for line in format_table(result).splitlines() if not line.startswith("  "))
    out: dict[str, Any] = {"score": round(sum(t["score"] for t in tests), 6), "output": summary,
                           "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}
    if seconds is not None:
        out["execution_time"] = int(round(seconds))
    return out


def run_autograder(root: str | os.PathLike = "/autograder", only: set[str] | None = None,
                   tests_dir: str | os.PathLike | None = None, time_limit: float = DEFAULT_TIME_LIMIT,
                   timeout: float = DEFAULT_TIMEOUT, points: float = 100.0, sandbox: str = "auto",
                   user: str | None = None, seed: int | None = None) -> int:
    """Grade ``root/submission`` and write ``root/results/results.json`` (always, with the reason when
    the submission cannot be graded); returns 0 once the results are written. ``seed``: the graded
    tests' inputs (default fresh for each submission; printed in the run's log)."""
    started = time.monotonic()
    root = Path(root)
    tests = Path(tests_dir) if tests_dir is not None else root / "source" / "tests"
    chosen = sorted(only) if only else list(ASSIGNMENTS)
    try:
        found = find_package(root / "submission") if (root / "submission").is_dir() else None
        if found is None:
            raise AssignmentError("no minise/ package (with __init__.py) in the submission: upload the minise "
                                  "folder of your copy (or a zip of your copy)")
        result = grade(found, only, tests_dir=tests, time_limit=time_limit, timeout=timeout, sandbox=sandbox,
                       user=user, seed=seed)
        results = gradescope_results(result, points, time.monotonic() - started)
        print(format_table(result))
        for warning in result.get("sandbox", {}).get("warnings", []):
            print(f"WARNING: {warning}")
    except AssignmentError as exc:
        results = {"score": 0.0, "output": f"The submission could not be graded: {exc}", "visibility": "visible",
                   "stdout_visibility": "hidden", "execution_time": int(round(time.monotonic() - started)),
                   "tests": [{"name": f"{name}: could not be graded", "score": 0.0, "max_score": float(points),
                              "status": "failed", "output": str(exc), "visibility": "visible", "tags": [name]}
                             for name in chosen]}
    (root / "results").mkdir(parents=True, exist_ok=True)
    write_atomically(root / "results" / "results.json", json.dumps(results, indent=2) + "\n")
    return 0
