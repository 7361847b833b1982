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
byte for byte. The instructor's own material (the bank of known-wrong solutions and the tests that
prove the tooling, :data:`INSTRUCTOR_ONLY`) is left out of the copy.

Grading. A test that grades a part carries ``@pytest.mark.assignment("autograd/sigmoid")``. The first
part names what the test grades (it counts for that part's assignment); any further parts are the
other solutions it needs to pass, so that a test fails exactly until all its parts are written::

    @pytest.mark.assignment("se/forward", "se/excite", "se/scale_forward")

An optional ``time_limit=SECONDS`` sets how long the grader lets that test run (default
:data:`DEFAULT_TIME_LIMIT`). ``minise assignments grade STUDENT_DIR`` copies the student's ``minise``
package next to a copy of the instructor's tests (those of the checkout the grader runs from, or
``--tests DIR``) in a fresh folder and runs the graded tests there in one pytest process. The
student cannot change the tests, and ``minise`` cannot come from anywhere else: the run reports where
it imported minise from, and the tests' conftest stops a run that imports it from outside. The
grader prints a score table per assignment and test and writes the same as JSON. A student's code
that hangs or crashes costs the tests it affects, never the whole grading run.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ASSIGNMENTS", "INSTRUCTOR_ONLY", "DEFAULT_TIME_LIMIT", "AssignmentError", "Region", "find_regions",
           "strip_solutions", "graded_files", "make", "grade", "format_table", "add_arguments", "run", "main"]

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

# the instructor's material, never handed out: near-miss solutions, and the tests that use them
INSTRUCTOR_ONLY = ["tests/assignments/wrong", "tests/assignments/test_assignments.py"]

DEFAULT_TIME_LIMIT = 300.0
"""Seconds one graded test may run before the grader stops it (a marker's ``time_limit`` overrides)."""

_MARKER_USE = re.compile(r"mark\.assignment\b")


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


def _comment_lines(text: str, path: str) -> set[int]:
    """0-based numbers of the lines that hold a comment (a marker inside a string is no marker)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise AssignmentError(f"{path}: cannot be read as Python ({exc})") from None
    return {tok.start[0] - 1 for tok in tokens if tok.type == tokenize.COMMENT}


def find_regions(text: str, path: str = "<text>") -> list[Region]:
    """All marked regions of a source file, checked: no nesting, every BEGIN closed, known assignments."""
    regions, open_at = [], None
    comments = _comment_lines(text, path) if "SOLUTION" in text else set()
    for i, line in enumerate(text.splitlines()):
        if i not in comments:
            continue
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


def _ignore_caches(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith(".pyc")]


def _remove_instructor_only(root: Path) -> None:
    for rel in INSTRUCTOR_ONLY:
        p = root / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def make(out_dir: str | os.PathLike, only: set[str] | None = None, source: Path | None = None) -> list[Region]:
    """Write a student copy to ``out_dir`` (which must not exist or be empty); returns the stripped regions.

    ``only``: the assignments to take out (default all); the others stay solved in the copy.
    Every chosen assignment must have at least one marked region, or nothing is written.
    """
    source = Path(source) if source is not None else project_root()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AssignmentError(f"{out} exists and is not an empty folder; choose a new folder (nothing was written)")
    out.parent.mkdir(parents=True, exist_ok=True)
    stripped: list[Region] = []
    staging = Path(tempfile.mkdtemp(prefix=".minise-assignment-", dir=out.parent))
    try:
        for name in COPIED:
            src = source / name
            if src.is_dir():
                shutil.copytree(src, staging / name, ignore=_ignore_caches)
            elif src.is_file():
                shutil.copy2(src, staging / name)
        _remove_instructor_only(staging)
        for py in sorted(staging.rglob("*.py")):
            text = py.read_text(encoding="utf-8")
            rel = py.relative_to(staging).as_posix()
            regions = [r for r in find_regions(text, rel) if only is None or r.assignment in only]
            if regions:
                new = strip_solutions(text, only, rel)
                compile(new, rel, "exec")  # a stripped file must still be valid Python
                py.write_text(new, encoding="utf-8")
                stripped.extend(regions)
        chosen = sorted(only) if only is not None else list(ASSIGNMENTS)
        empty = [n for n in chosen if not any(r.assignment == n for r in stripped)]
        if empty:
            raise AssignmentError(f"no solution regions are marked for assignment(s) {', '.join(empty)}; "
                                  "a copy without them would hand out the solutions (nothing was written)")
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


# ---------------------------------------------------------------------------------------- grading
def graded_files(tests_dir: str | os.PathLike) -> list[str]:
    """The test files (relative to the folder above ``tests_dir``) that use the assignment marker."""
    tests = Path(tests_dir)
    skip = {(tests.parent / rel).resolve() for rel in INSTRUCTOR_ONLY}
    found = []
    for py in sorted(tests.rglob("test_*.py")):
        if any(py.resolve() == s or s in py.resolve().parents for s in skip):
            continue
        if _MARKER_USE.search(py.read_text(encoding="utf-8")):
            found.append(Path("tests", py.relative_to(tests)).as_posix())
    return found


# The pytest plugin of a grading run. It lives in a file of its own, outside minise, so that it
# works even when the student's package cannot be imported.
_PLUGIN = '''\
"""Written by minise.assignments for one grading run: selects the graded tests, limits their time,
and records what happened to each of them (one JSON object per line)."""
import json
import os
import signal
import sys

import pytest

_OUT = os.environ["MINISE_GRADE_RESULTS"]
_CHOSEN = set(os.environ["MINISE_GRADE_ASSIGNMENTS"].split(","))
_DEFAULT_LIMIT = float(os.environ["MINISE_GRADE_TIME_LIMIT"])


def _record(**entry):
    with open(_OUT, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\\n")


def _parts(item):
    return [str(p) for m in item.iter_markers("assignment") for p in m.args]


def _limit(item):
    for m in item.iter_markers("assignment"):
        if "time_limit" in m.kwargs:
            return float(m.kwargs["time_limit"])
    return _DEFAULT_LIMIT


def _short(text, lines=4, chars=600):
    text = "\\n".join(str(text).strip().splitlines()[:lines])
    return text if len(text) <= chars else text[:chars] + " ..."


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    keep = [it for it in items if _parts(it) and _parts(it)[0].split("/")[0] in _CHOSEN]
    kept = {id(it) for it in keep}
    config.hook.pytest_deselected(items=[it for it in items if id(it) not in kept])
    items[:] = keep
    if "minise" not in sys.modules:
        try:
            import minise  # noqa: F401
        except Exception:
            pass
    module = sys.modules.get("minise")
    _record(event="minise", file=getattr(module, "__file__", None))
    for it in keep:
        _record(event="selected", test=it.nodeid, parts=_parts(it))


def pytest_collectreport(report):
    if report.failed:
        _record(event="collect_error", where=report.nodeid, message=_short(report.longrepr, lines=30, chars=3000))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    limit = _limit(item)
    alarm = limit > 0 and hasattr(signal, "SIGALRM")
    if alarm:
        def stop(signum, frame):
            raise TimeoutError(f"the test ran longer than the grader's limit of {limit:g} s")

        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return (yield)
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    entry = {"event": "report", "test": item.nodeid, "when": report.when, "outcome": report.outcome}
    if call.excinfo is not None and not report.passed:
        entry["error_type"] = call.excinfo.typename
        entry["message"] = _short(call.excinfo.exconly())
    _record(**entry)
    return report
'''


def _copy_for_grading(student: Path, tests: Path, root: Path) -> None:
    """The grading folder: the student's minise package and the instructor's tests, nothing else."""
    shutil.copytree(student / "minise", root / "minise", ignore=_ignore_caches)
    shutil.copytree(tests, root / "tests", ignore=_ignore_caches)
    _remove_instructor_only(root)
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # root is pytest's rootdir; no addopts


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash
            pass
    return events


def grade(student_dir: str | os.PathLike, only: set[str] | None = None, tests_dir: str | os.PathLike | None = None,
          time_limit: float = DEFAULT_TIME_LIMIT, timeout: float = 3600.0) -> dict[str, Any]:
    """Grade a student copy; returns ``{"assignments": {name: {"score", "passed", "total", "tests", "errors"}}}``.

    ``tests_dir``: the tests to grade with (default: the ``tests`` folder of the checkout this minise
    comes from, i.e. the instructor's); only the student's ``minise`` package is taken from
    ``student_dir``. ``time_limit``: seconds per test (a marker's ``time_limit`` overrides);
    ``timeout``: seconds for the whole run. An assignment whose graded tests could not all be
    loaded scores 0, with the reason in its ``errors``.
    """
    student = Path(student_dir).resolve()
    if not (student / "minise" / "__init__.py").is_file():
        raise AssignmentError(f"{student} is not a student copy (expected the minise package inside it)")
    tests = Path(tests_dir).resolve() if tests_dir is not None else project_root() / "tests"
    if not (tests / "conftest.py").is_file():
        raise AssignmentError(f"{tests} holds no conftest.py: expected minise's tests folder")
    files = graded_files(tests)
    if not files:
        raise AssignmentError(f"no graded tests (marked @pytest.mark.assignment) in {tests}")
    chosen = sorted(only) if only else list(ASSIGNMENTS)
    with tempfile.TemporaryDirectory(prefix="minise-grade-") as tmp:
        root, plugin_dir, results = Path(tmp, "run"), Path(tmp, "plugin"), Path(tmp, "results.jsonl")
        _copy_for_grading(student, tests, root)
        plugin_dir.mkdir()
        (plugin_dir / "_minise_grader.py").write_text(_PLUGIN, encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "MINISE_DEVICE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
        env.update(PYTHONPATH=os.pathsep.join([str(root), str(plugin_dir)]), MINISE_GRADE_ROOT=str(root),
                   PYTHONDONTWRITEBYTECODE="1", MINISE_GRADE_RESULTS=str(results),
                   MINISE_GRADE_ASSIGNMENTS=",".join(chosen), MINISE_GRADE_TIME_LIMIT=str(float(time_limit)))
        cmd = [sys.executable, "-m", "pytest", "-q", "--tb=no", "-p", "no:cacheprovider", "-p", "_minise_grader",
               "-o", "addopts=", "--continue-on-collection-errors", *files]
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
            returncode, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            returncode = None
            output = f"the grading run was stopped after {timeout:g} s\n" + _text(exc.stdout) + _text(exc.stderr)
        events = _read_events(results)
        _check_isolation(events, output, returncode, root, student)
    return _scores(events, output, returncode, chosen, tests, student)


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _check_isolation(events: list[dict[str, Any]], output: str, returncode: int | None, root: Path,
                     student: Path) -> None:
    """Refuse to grade when the tests imported minise from anywhere but the student's copy."""
    where = [e["file"] for e in events if e["event"] == "minise"]
    inside = os.path.realpath(root) + os.sep
    if where and where[0] is not None and not os.path.realpath(where[0]).startswith(inside):
        raise AssignmentError(f"grading {student}, but the tests imported minise from {where[0]}: "
                              "refusing to grade anything but the student's own package")
    guard = re.search(r"grading .*, but minise was imported from .*", output)
    if guard:
        raise AssignmentError(f"grading {student}: {guard.group(0)}; refusing to grade anything but the "
                              "student's own package")


def _scores(events: list[dict[str, Any]], output: str, returncode: int | None, chosen: list[str], tests: Path,
            student: Path) -> dict[str, Any]:
    selected: dict[str, list[str]] = {}
    outcome: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["event"] == "selected":
            selected[e["test"]] = e["parts"]
        elif e["event"] == "report":
            r = outcome.setdefault(e["test"], {"passed": None, "skipped": False})
            if e["outcome"] == "skipped":
                r["skipped"] = True
            elif e["outcome"] == "failed":
                if r["passed"] is not False:  # keep the first failure's reason
                    r.update(passed=False, error_type=e.get("error_type"), message=e.get("message", ""))
            elif e["when"] == "call" and r["passed"] is None:
                r["passed"] = True
    errors: dict[str, list[str]] = {name: [] for name in chosen}
    for e in events:
        if e["event"] == "collect_error":
            where = Path(e["where"].split("::")[0]) if e["where"] else None
            owners = _owners_in(tests.joinpath(*where.parts[1:])) if where is not None else set()
            for name in (owners or set(chosen)) & set(chosen):  # unknown owners: every assignment
                errors[name].append(f"{e['where'] or 'the test session'} could not be loaded:\n{e['message']}")
    if not selected and returncode not in (0, 1, 5):
        tail = "\n".join(output.strip().splitlines()[-30:])
        for name in chosen:
            errors[name].append(f"the graded tests could not run (pytest exit code {returncode}):\n{tail}")
    stopped = "" if returncode is not None else "the grading run was stopped (time out)"
    result: dict[str, Any] = {"student_dir": str(student), "tests_dir": str(tests), "assignments": {}}
    for name in chosen:
        rows = []
        for test, parts in selected.items():
            if parts[0].split("/")[0] != name:
                continue
            r = outcome.get(test)
            if r is not None and r["skipped"] and r["passed"] is not False:
                continue  # e.g. a GPU test on a machine without one: not counted
            if r is None or r["passed"] is None:
                rows.append({"test": test, "parts": parts, "passed": False, "error_type": None,
                             "message": f"not run: {stopped or 'the test process ended early'}"})
            else:
                rows.append({"test": test, "parts": parts, "passed": r["passed"],
                             "error_type": r.get("error_type"), "message": r.get("message", "")})
        if not rows and not errors[name]:
            errors[name].append(f"no graded tests of {name!r} were found")
        passed = sum(t["passed"] for t in rows)
        score = passed / len(rows) if rows and not errors[name] else 0.0
        result["assignments"][name] = {"description": ASSIGNMENTS[name], "score": score, "passed": passed,
                                       "total": len(rows), "tests": rows, "errors": errors[name]}
    return result


def _owners_in(path: Path) -> set[str]:
    """The assignments whose graded tests a test file holds: the first part of each
    ``assignment(...)`` marker, read from the source (the file could not be imported)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return set()
    constants: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            constants[node.targets[0].id] = node.value

    def first_part(arg: ast.expr, depth: int = 0) -> str | None:
        if depth > 5:
            return None
        if isinstance(arg, ast.Starred):
            arg = arg.value
        if isinstance(arg, ast.Name) and arg.id in constants:
            return first_part(constants[arg.id], depth + 1)
        if isinstance(arg, (ast.Tuple, ast.List)) and arg.elts:
            return first_part(arg.elts[0], depth + 1)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        return None

    owners = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "assignment"
                and node.args):
            part = first_part(node.args[0])
            if part and "/" in part:
                owners.add(part.split("/")[0])
    return owners


def format_table(result: dict[str, Any]) -> str:
    """The score table: one line per assignment, then PASS/FAIL per test (with the reason of a FAIL)."""
    lines = []
    for name, a in result["assignments"].items():
        note = "  (could not be graded completely: scored 0)" if a["errors"] else ""
        lines.append(f"{name}: {a['passed']}/{a['total']} tests passed, score {100 * a['score']:.0f}%{note}")
        for err in a["errors"]:
            lines.extend("  ! " + ln for ln in err.splitlines())
        for t in a["tests"]:
            lines.append(f"  {'PASS' if t['passed'] else 'FAIL'}  {t['test']}")
            if not t["passed"] and t["message"]:
                first = t["message"].splitlines()[0]
                lines.append(f"        {first[:160]}")
    total = sum(a["passed"] for a in result["assignments"].values())
    count = sum(a["total"] for a in result["assignments"].values())
    lines.append(f"total: {total}/{count} tests passed")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- command line
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
                        description="Run each assignment's graded tests (the instructor's copy of them) against "
                                    "the minise package in STUDENT_DIR alone, never the installed one; print a "
                                    "score table and write it as JSON.")
    gr.add_argument("student_dir", nargs="?", default=".", help="the student copy (default: current folder)")
    gr.add_argument("--only", metavar="NAME,...", help="grade only these assignments")
    gr.add_argument("--json", metavar="PATH", help="where to write the scores (default STUDENT_DIR/grades.json)")
    gr.add_argument("--tests", metavar="DIR",
                    help="the tests folder to grade with (default: the tests of the checkout this minise comes from)")
    gr.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, metavar="SECONDS",
                    help=f"seconds one graded test may run (default {DEFAULT_TIME_LIMIT:g}; "
                         "a test's marker may set its own)")


def run(args: argparse.Namespace) -> int:
    """Carry out ``minise assignments make|grade``; returns the exit code (2 for a usage error)."""
    try:
        only = _parse_only(args.only)
        if args.assignments_command == "make":
            regions = make(args.out_dir, only)
            parts = sorted({r.tag for r in regions})
            print(f"wrote a student copy to {args.out_dir}: {len(regions)} solution regions taken out "
                  f"({', '.join(parts)})")
            return 0
        result = grade(args.student_dir, only, tests_dir=args.tests, time_limit=args.time_limit)
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
    """``python -m minise.assignments make|grade ...``"""
    parser = argparse.ArgumentParser(prog="minise assignments", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
