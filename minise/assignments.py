"""Course assignments: student copies with the solutions taken out, and an autograder.

Marking a solution. Inside a function body of the reference code, wrap the lines a student should
write between two comments, tagged with the assignment and the part they belong to::

    def backward(self, gy):
        (s,) = self.saved
        # BEGIN SOLUTION autograd/sigmoid
        return gy * s * (1 - s)
        # END SOLUTION

The markers are plain comments, so the reference package runs unchanged. ``minise assignments make``
writes a copy of the package, its tests and tutorials in which every marked region becomes
``raise NotImplementedError("assignment 'autograd', part 'sigmoid': ...")``; everything else stays
byte for byte.

Grading. A test that grades a part carries ``@pytest.mark.assignment("autograd/sigmoid")`` (several
parts when it needs all of them). ``minise assignments grade STUDENT_DIR`` runs those tests against
the student's copy alone (a guard in the tests' conftest stops the run if ``minise`` would be imported
from anywhere else), prints a score table per assignment and test, and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ASSIGNMENTS", "Region", "find_regions", "strip_solutions", "make", "grade", "main"]

# name -> what the student builds (the parts are found in the code from the markers)
ASSIGNMENTS: dict[str, str] = {
    "autograd": "reverse-mode autograd and the elementwise ops (backprop order, broadcasting, ReLU, sigmoid)",
    "conv": "conv2d and pooling, forward and backward (im2col, col2im, max and average pooling)",
    "se": "the SE block and the SE-ResNet module (squeeze, excitation, scale, batch norm backward)",
    "training": "a training loop that reaches a stated accuracy on a small dataset within a stated time",
}

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?P<tag>[A-Za-z0-9_]+/[A-Za-z0-9_.]+)\s*$")
END = re.compile(r"^[ \t]*# END SOLUTION\s*$")

# what a student copy contains, relative to the project root
COPIED = ["minise", "tests", "tutorials", "setup.cfg", "pyproject.toml", "README.md"]


class AssignmentError(ValueError):
    """Bad markers, a bad assignment name, or a student folder that cannot be graded."""


@dataclass(frozen=True)
class Region:
    """One marked solution: lines ``begin``..``end`` (0-based, both marker lines included)."""

    path: str
    assignment: str
    part: str
    begin: int
    end: int
    indent: str

    @property
    def tag(self) -> str:
        return f"{self.assignment}/{self.part}"


def find_regions(text: str, path: str = "<text>") -> list[Region]:
    """All marked regions of a source file, checked: no nesting, every BEGIN closed, known assignments."""
    regions, open_at = [], None
    for i, line in enumerate(text.splitlines()):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if open_at is not None:
                raise AssignmentError(
                    f"{path}:{i + 1}: BEGIN SOLUTION inside the region opened at line {open_at[0] + 1}")
            open_at = (i, begin)
        elif end:
            if open_at is None:
                raise AssignmentError(f"{path}:{i + 1}: END SOLUTION without a BEGIN SOLUTION")
            start, m = open_at
            assignment, part = m.group("tag").split("/", 1)
            if assignment not in ASSIGNMENTS:
                raise AssignmentError(f"{path}:{start + 1}: unknown assignment {assignment!r}; "
                                      f"expected one of {', '.join(ASSIGNMENTS)}")
            if not m.group("indent"):
                raise AssignmentError(f"{path}:{start + 1}: a solution region must sit inside a function body")
            regions.append(Region(path, assignment, part, start, i, m.group("indent")))
            open_at = None
        elif "SOLUTION" in line and line.lstrip().startswith("# BEGIN"):
            raise AssignmentError(f"{path}:{i + 1}: malformed marker; write '# BEGIN SOLUTION assignment/part'")
    if open_at is not None:
        raise AssignmentError(f"{path}:{open_at[0] + 1}: BEGIN SOLUTION is never closed")
    return regions


def strip_solutions(text: str, only: set[str] | None = None, path: str = "<text>") -> str:
    """``text`` with each marked region (of the chosen assignments) replaced by one ``raise`` line."""
    lines = text.splitlines(keepends=True)
    for r in reversed(find_regions(text, path)):
        if only is not None and r.assignment not in only:
            continue
        newline = "\n" if lines[r.begin].endswith("\n") else ""
        stub = (f"{r.indent}raise NotImplementedError(\"assignment '{r.assignment}', part '{r.part}': "
                f"replace this line with your solution\"){newline}")
        lines[r.begin:r.end + 1] = [stub]
    return "".join(lines)


def project_root() -> Path:
    """The source checkout this minise was imported from (the folder holding minise/ and tests/)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "tests").is_dir():
        raise AssignmentError(f"no tests/ folder next to the minise package in {root}: making and grading "
                              "assignments needs a source checkout (git clone, then pip install -e .)")
    return root


def _parse_only(only: str | None) -> set[str] | None:
    if not only:
        return None
    names = {n.strip() for n in only.split(",") if n.strip()}
    unknown = names - set(ASSIGNMENTS)
    if unknown:
        raise AssignmentError(f"unknown assignment(s) {', '.join(sorted(unknown))}; "
                              f"expected some of {', '.join(ASSIGNMENTS)}")
    return names


def make(out_dir: str | os.PathLike, only: set[str] | None = None, source: Path | None = None) -> list[Region]:
    """Write a student copy to ``out_dir`` (which must not exist or be empty); returns the stripped regions."""
    source = source or project_root()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise AssignmentError(f"{out} exists and is not empty; choose a new folder (nothing was written)")
    stripped: list[Region] = []
    staging = Path(tempfile.mkdtemp(prefix=".minise-assignment-", dir=out.parent if out.parent.exists() else None))
    try:
        for name in COPIED:
            src = source / name
            if src.is_dir():
                shutil.copytree(src, staging / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif src.is_file():
                shutil.copy2(src, staging / name)
        for py in sorted(staging.rglob("*.py")):
            text = py.read_text(encoding="utf-8")
            rel = str(py.relative_to(staging))
            regions = [r for r in find_regions(text, rel) if only is None or r.assignment in only]
            if regions:
                new = strip_solutions(text, only, rel)
                compile(new, rel, "exec")  # a stripped file must still be valid Python
                py.write_text(new, encoding="utf-8")
                stripped.extend(regions)
        chosen = sorted(only) if only is not None else list(ASSIGNMENTS)
        manifest = {"assignments": {n: ASSIGNMENTS[n] for n in chosen},
                    "parts": sorted({r.tag for r in stripped})}
        (staging / "ASSIGNMENTS.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return stripped


def _run_graded_tests(student: Path, assignment: str, timeout: float) -> list[dict]:
    """Run one assignment's graded tests in a fresh interpreter rooted at the student copy."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MINISE_DEVICE")}
        env.update(PYTHONPATH=str(student), MINISE_GRADE_ROOT=str(student), PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "--assignment", assignment, f"--junitxml={report}"]
        proc = subprocess.run(cmd, cwd=student, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode not in (0, 1) or not report.exists():
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise AssignmentError(f"the graded tests of {assignment!r} could not run (exit {proc.returncode}):\n{tail}")
        results = []
        for case in ET.parse(report).getroot().iter("testcase"):
            if case.find("skipped") is not None:
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            results.append({"test": f"{case.get('classname')}::{case.get('name')}", "passed": not failed})
        return results


def grade(student_dir: str | os.PathLike, only: set[str] | None = None, timeout: float = 900) -> dict:
    """Grade a student copy: {"assignments": {name: {"score", "passed", "total", "tests": [...]}}}."""
    student = Path(student_dir).resolve()
    if not (student / "minise" / "__init__.py").is_file() or not (student / "tests").is_dir():
        raise AssignmentError(f"{student} is not a student copy (expected minise/ and tests/ inside it)")
    result: dict = {"student_dir": str(student), "assignments": {}}
    for name in (sorted(only) if only else ASSIGNMENTS):
        tests = _run_graded_tests(student, name, timeout)
        passed = sum(t["passed"] for t in tests)
        result["assignments"][name] = {"score": passed / len(tests) if tests else 0.0, "passed": passed,
                                       "total": len(tests), "tests": tests}
    return result


def format_table(result: dict) -> str:
    lines = []
    for name, a in result["assignments"].items():
        lines.append(f"{name}: {a['passed']}/{a['total']} tests passed ({100 * a['score']:.0f}%)")
        for t in a["tests"]:
            lines.append(f"  {'PASS' if t['passed'] else 'FAIL'}  {t['test']}")
    total = sum(a["passed"] for a in result["assignments"].values())
    count = sum(a["total"] for a in result["assignments"].values())
    lines.append(f"total: {total}/{count} ({100 * total / count if count else 0:.0f}%)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``minise assignments`` sub-commands (make, grade)."""
    sub = parser.add_subparsers(dest="assignments_command", required=True, metavar="{make,grade}")
    mk = sub.add_parser("make", help="write a student copy with the marked solutions taken out",
                        description="Copy minise, its tests and tutorials to OUT_DIR, replacing every "
                                    "'# BEGIN SOLUTION' ... '# END SOLUTION' region with NotImplementedError.")
    mk.add_argument("out_dir", help="a new (or empty) folder for the student copy")
    mk.add_argument("--only", metavar="NAME,...",
                    help=f"strip only these assignments (of: {', '.join(ASSIGNMENTS)}); default all")
    gr = sub.add_parser("grade", help="run the graded tests against a student copy and print the scores",
                        description="Run each assignment's graded tests against STUDENT_DIR alone (never the "
                                    "installed minise), print a score table and write it as JSON.")
    gr.add_argument("student_dir", nargs="?", default=".", help="the student copy (default: current folder)")
    gr.add_argument("--only", metavar="NAME,...", help="grade only these assignments")
    gr.add_argument("--json", metavar="PATH", help="where to write the scores (default STUDENT_DIR/grades.json)")


def run(args: argparse.Namespace) -> int:
    try:
        only = _parse_only(args.only)
        if args.assignments_command == "make":
            regions = make(args.out_dir, only)
            parts = sorted({r.tag for r in regions})
            print(f"wrote a student copy to {args.out_dir}: {len(regions)} solution regions taken out "
                  f"({', '.join(parts)})")
            return 0
        result = grade(args.student_dir, only)
        print(format_table(result))
        path = Path(args.json) if args.json else Path(args.student_dir) / "grades.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        print(f"scores written to {path}")
        return 0
    except AssignmentError as exc:
        print(f"minise assignments: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minise assignments", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
