"""``minise assignments make|check|grade|grade-all|autograder``: the command line of the assignment tools."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .grader import DEFAULT_TIME_LIMIT, DEFAULT_TIMEOUT, MAX_SEED, check_seed, format_table, grade, write_atomically
from .make import make
from .markers import ASSIGNMENTS, AssignmentError, parse_only
from .sandbox import MODES, SandboxWarning

__all__ = ["add_arguments", "run", "main"]


def _grading_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", metavar="NAME,...", help="grade only these assignments")
    p.add_argument("--tests", metavar="DIR",
                   help="the tests folder to grade with (default: the tests of the checkout this minise comes from)")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, metavar="SECONDS",
                   help=f"seconds one graded test may run (default {DEFAULT_TIME_LIMIT:g}; a test's marker may "
                        "set less); a test past it fails and costs nothing else")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"seconds the whole grading of one student may take (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--sandbox", choices=MODES, default="auto",
                   help="auto (default) or bwrap: bubblewrap namespaces, an error if they cannot start; "
                        "none: no namespaces (a self-check on your own machine; warned and recorded)")
    p.add_argument("--user", metavar="NAME|UID",
                   help="the unprivileged user student code runs as when grading as root (default nobody)")
    p.add_argument("--seed", type=_seed, metavar="N",
                   help="the seed the graded tests draw their random inputs from, the same for the reference and "
                        "every student (default: a fresh one, printed and written to the results, so that a grade "
                        "can be reproduced); a self-check without it uses the public inputs")


def _seed(text: str) -> int:
    try:
        seed = int(text)
        check_seed(seed)
    except (ValueError, AssignmentError):
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {text!r}") from None
    return seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``minise assignments`` sub-commands (make, grade, grade-all, autograder)."""
    sub = parser.add_subparsers(dest="assignments_command", required=True,
                                metavar="{make,check,grade,grade-all,autograder}")
    mk = sub.add_parser("make", help="write a student copy with the marked solutions taken out",
                        description="Copy minise, its tests and tutorials to OUT_DIR, replacing every "
                                    "'# BEGIN SOLUTION' ... '# END SOLUTION' region with NotImplementedError.")
    mk.add_argument("out_dir", help="a new (or empty) folder for the student copy")
    mk.add_argument("--only", metavar="NAME,...",
                    help=f"strip only these assignments (of: {', '.join(ASSIGNMENTS)}); default all")
    ck = sub.add_parser("check", help="a student's check of their own copy: one part, one assignment, or all",
                        description="Run the graded tests of PART (e.g. autograd/sigmoid), of one assignment "
                                    "(autograd, conv, se, training) or of all on your own copy, on the public "
                                    "inputs and without a sandbox (your code, your machine). Each failure says "
                                    "what was expected and what came, for one element, and the part's maths. "
                                    "Grading runs the same tests on inputs drawn when it grades, so passing here "
                                    "is needed but not enough: an answer that only fits these inputs fails there. "
                                    "Exit 0 when every test passes, 1 when one fails, 2 when the tests cannot run.")
    ck.add_argument("part", nargs="?", metavar="PART",
                    help="a part (autograd/sigmoid) or an assignment (autograd); default: every assignment")
    ck.add_argument("--dir", default=".", metavar="DIR", help="your copy (default: the current folder)")
    ck.add_argument("--seed", type=_seed, metavar="N",
                    help="check on a grading's inputs instead of the public ones (the seed your grades.json names)")
    ck.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, metavar="SECONDS",
                    help=f"seconds one test may run (default {DEFAULT_TIME_LIMIT:g})")
    ck.add_argument("--sandbox", choices=MODES, default="none",
                    help="none (default: your code runs as you; as root it runs as --user) or bwrap/auto")
    ck.add_argument("--user", metavar="NAME|UID", help="who your code runs as when you are root (default nobody)")
    gr = sub.add_parser("grade", help="run the graded tests against a student copy and print the scores",
                        description="Run each assignment's graded tests (the instructor's copy of them) against "
                                    "the minise package in STUDENT_DIR alone, in a sandbox as an unprivileged "
                                    "user; print a score table and write it as JSON.")
    gr.add_argument("student_dir", nargs="?", default=".", help="the student copy (default: current folder)")
    gr.add_argument("--json", metavar="PATH", help="where to write the scores (default STUDENT_DIR/grades.json)")
    _grading_options(gr)
    ga = sub.add_parser("grade-all", help="grade every submission in a folder into one gradebook",
                        description="Every subfolder or archive (.zip, .tar, .tar.gz, .tgz) of SUBMISSIONS is one "
                                    "student: graded in parallel, one CSV row per student and assignment, and a JSON "
                                    "file per student with the failing tests and their reasons.")
    ga.add_argument("submissions", help="a folder of student folders or archives")
    ga.add_argument("--out", required=True, metavar="CSV", help="the gradebook to write")
    ga.add_argument("--details", metavar="DIR",
                    help="where the per-student JSON files go (default: OUT without .csv, plus _details)")
    ga.add_argument("--jobs", type=int, default=1, metavar="N", help="students graded at the same time (default 1)")
    _grading_options(ga)
    ag = sub.add_parser("autograder", help="build a Gradescope autograder zip",
                        description="Write OUT.zip holding setup.sh, run_autograder and the instructor's checkout; "
                                    "on Gradescope the run grades /autograder/submission and writes "
                                    "/autograder/results/results.json.")
    ag.add_argument("out_zip", help="the zip file to write")
    ag.add_argument("--only", metavar="NAME,...", help="grade only these assignments")
    ag.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, metavar="SECONDS")
    ag.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS")
    ag.add_argument("--points", type=float, default=100.0, metavar="P", help="points per assignment (default 100)")
    # the command Gradescope's run_autograder calls (not for people)
    gs = sub.add_parser("gradescope-run")  # no help: not listed
    gs.add_argument("--root", default="/autograder")
    gs.add_argument("--tests")
    gs.add_argument("--only", metavar="NAME,...")
    gs.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT)
    gs.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    gs.add_argument("--points", type=float, default=100.0)
    gs.add_argument("--sandbox", choices=MODES, default="auto")
    gs.add_argument("--user")
    gs.add_argument("--seed", type=_seed)


def run(args: argparse.Namespace) -> int:
    """Carry out ``minise assignments ...``; returns the exit code (2 for a usage error)."""
    warnings.simplefilter("always", SandboxWarning)
    try:
        only = parse_only(getattr(args, "only", None))
        command = args.assignments_command
        if command == "make":
            regions = make(args.out_dir, only)
            parts = sorted({r.tag for r in regions})
            print(f"wrote a student copy to {args.out_dir}: {len(regions)} solution regions taken out "
                  f"({', '.join(parts)})")
            return 0
        if command == "check":
            return _check(args)
        if command == "grade":
            result = grade(args.student_dir, only, tests_dir=args.tests, time_limit=args.time_limit,
                           timeout=args.timeout, sandbox=args.sandbox, user=args.user, seed=args.seed)
            print(format_table(result))
            path = Path(args.json) if args.json else Path(args.student_dir) / "grades.json"
            write_atomically(path, json.dumps(result, indent=2) + "\n")
            print(f"scores written to {path}")
            ungraded = [n for n, a in result["assignments"].items() if a["score"] is None]
            if ungraded:
                print(f"minise assignments: error: not graded ({', '.join(ungraded)}): the graded tests do not run "
                      "on the reference package; see the table", file=sys.stderr)
                return 2
            return 0
        if command == "grade-all":
            from .batch import grade_all  # noqa: PLC0415 - only this command needs it

            if args.jobs < 1:
                raise AssignmentError(f"--jobs must be at least 1, got {args.jobs}")
            rows = grade_all(args.submissions, args.out, details=args.details, jobs=args.jobs, only=only,
                             tests_dir=args.tests, time_limit=args.time_limit, timeout=args.timeout,
                             sandbox=args.sandbox, user=args.user, progress=print, seed=args.seed)
            print(f"gradebook written to {args.out}: {len(rows)} rows")
            failed = sorted({r["student"] for r in rows if r["status"] == "error" and r["score"] is None})
            if failed:
                print(f"minise assignments: error: {len(failed)} submission(s) could not be graded "
                      f"(status 'error' in the gradebook): {', '.join(failed[:10])}", file=sys.stderr)
                return 1
            return 0
        from . import gradescope  # noqa: PLC0415 - only the Gradescope commands need it

        if command == "autograder":
            gradescope.build_autograder(args.out_zip, only=only, time_limit=args.time_limit, timeout=args.timeout,
                                        points=args.points)
            print(f"wrote the Gradescope autograder {args.out_zip}")
            return 0
        return gradescope.run_autograder(args.root, only=only, tests_dir=args.tests, time_limit=args.time_limit,
                                         timeout=args.timeout, points=args.points, sandbox=args.sandbox,
                                         user=args.user, seed=args.seed)
    except AssignmentError as exc:
        print(f"minise assignments: error: {exc}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> int:
    student = Path(args.dir)
    if not (student / "minise" / "__init__.py").is_file():
        raise AssignmentError(f"{student.resolve()} holds no minise/ package: run this in your copy of the "
                              "assignments (the folder 'minise assignments make' wrote), or give --dir")
    own_tests = student / "tests"
    tests = own_tests if (own_tests / "conftest.py").is_file() else None
    part, only = args.part, None
    if part is not None and "/" not in part:
        only, part = parse_only(part), None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxWarning)  # said once below, not as a warning
        result = grade(student, only, tests_dir=tests, time_limit=args.time_limit, sandbox=args.sandbox, user=args.user,
                       reference_dir=student / "minise", seed=args.seed, part=part)
    print(format_table(result))
    box = "without a sandbox" if result["sandbox"]["kind"] == "none" else f"in the {result['sandbox']['kind']} sandbox"
    print(f"(a self-check: your copy's graded tests on your own code, {box}; the grade comes from the same tests "
          "on inputs drawn when grading)")
    failed = any(a["errors"] or a["passed"] < a["total"] for a in result["assignments"].values())
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m minise.assignments make|grade|grade-all|autograder ...``"""
    parser = argparse.ArgumentParser(prog="minise assignments",
                                     description="Course assignments: student copies and a sandboxed grader.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
