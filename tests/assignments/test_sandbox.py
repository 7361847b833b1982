"""The grader's machinery on its own: choosing the sandbox (and degrading loudly), the judge, safe
writes, copying a student's package, the plugin's one rule. The instructor's file: ``make`` leaves it out."""

from __future__ import annotations

import base64
import csv
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minise import assignments as A
from minise.assignments import judge as J
from minise.assignments import plugin, sandbox

from .test_assignments import reference_copy, tiny_tests, unconfined_box
from .test_attacks import append_to_init, processes_with


# ------------------------------------------------------------------ choosing the sandbox
def test_an_unknown_sandbox_or_user_is_a_clear_error():
    with pytest.raises(A.AssignmentError, match="unknown sandbox 'docker'"):
        A.choose_sandbox("docker")
    if os.geteuid() == 0:
        with pytest.raises(A.AssignmentError, match="no user 'no-such-user-here'"):
            A.choose_sandbox("auto", user="no-such-user-here")
        with pytest.raises(A.AssignmentError, match="not root"):
            A.choose_sandbox("auto", user="root")


def test_without_bubblewrap_the_grader_refuses(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    for mode in ("auto", "bwrap"):
        with pytest.raises(A.AssignmentError, match=f"--sandbox {mode}: bubblewrap \\(bwrap\\) is not installed"):
            A.choose_sandbox(mode)


def test_without_pytorch_the_grader_says_in_one_line_what_to_install(tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    student = reference_copy(tmp_path / "student")
    assert A.main(["grade", str(student), "--tests", str(tiny_tests(tmp_path / "instructor"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.endswith("pip install torch --index-url https://download.pytorch.org/whl/cpu")


# ------------------------------------------------------------------ fault injection: the grader fails closed
REAL_BWRAP = sandbox.shutil.which("bwrap")
NEEDS_BWRAP = pytest.mark.skipif(REAL_BWRAP is None or sandbox._bwrap_works() is not None,
                                 reason="needs a working bubblewrap (apt-get install bubblewrap)")
NO_SPACE = "bwrap: Creating new namespace failed: No space left on device"


def fake_bwrap(monkeypatch, folder: Path, body: str) -> Path:
    """A ``bwrap`` script first on PATH; ``body`` is its shell code. Returns the file counting its calls."""
    folder.mkdir(parents=True, exist_ok=True)
    calls = folder / "calls"
    script = folder / "bwrap"
    script.write_text(f'#!/bin/sh\necho x >> "{calls}"\nn=$(wc -l < "{calls}")\n{body}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return calls


def marked_student(root: Path, marker: Path) -> Path:
    """The reference package whose ``__init__`` leaves ``marker`` behind wherever it runs unconfined."""
    student = reference_copy(root)
    append_to_init(student, f"""
        try:
            open({str(marker)!r}, "w").close()
        except OSError:
            pass
        """)
    return student


def test_a_bwrap_that_fails_at_once_is_an_error_and_runs_no_student_code(tmp_path, monkeypatch, capsys):
    calls = fake_bwrap(monkeypatch, tmp_path / "bin", f'echo "{NO_SPACE}" >&2\nexit 1')
    marker = tmp_path / "student-code-ran"
    student = marked_student(tmp_path / "student", marker)
    tests = tiny_tests(tmp_path / "instructor")
    assert A.main(["grade", str(student), "--tests", str(tests), "--only", "autograd,se"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "refusing to grade without the sandbox" in err
    assert not (student / "grades.json").exists()
    # grade-all: that student is an error (no score), the batch exits non-zero, and the probe ran per student
    subs = tmp_path / "subs"
    for name in ("ann", "ben"):
        marked_student(subs / name, marker)
    out = tmp_path / "book.csv"
    before = len(calls.read_text().splitlines())
    assert A.main(["grade-all", str(subs), "--out", str(out), "--tests", str(tests), "--only", "autograd"]) == 1
    rows = list(csv.DictReader(out.open()))
    assert [(r["student"], r["status"], r["score"]) for r in rows] == [("ann", "error", ""), ("ben", "error", "")]
    assert all("No space left on device" in r["reason"] for r in rows)
    assert len(calls.read_text().splitlines()) - before == 2  # one probe per student: nothing cached
    assert not marker.exists()


@NEEDS_BWRAP
def test_a_bwrap_that_passes_its_probe_then_fails_is_retried_once_then_an_error(tmp_path, monkeypatch, capsys):
    fake_bwrap(monkeypatch, tmp_path / "bin",
               f'[ "$n" -le 1 ] && exec {REAL_BWRAP} "$@"\necho "{NO_SPACE}" >&2\nexit 1')
    marker = tmp_path / "student-code-ran"
    student = marked_student(tmp_path / "student", marker)
    tests = tiny_tests(tmp_path / "instructor")
    assert A.main(["grade", str(student), "--tests", str(tests), "--only", "autograd,se"]) == 2
    err = capsys.readouterr().err
    assert "sandbox did not start (tried twice)" in err and "No space left on device" in err
    assert not (student / "grades.json").exists() and not marker.exists()


@NEEDS_BWRAP
def test_one_failed_sandbox_start_is_retried_and_the_grade_stands(tmp_path, monkeypatch):
    # the probe (call 1) passes, the first run's start (call 2) fails, every later start works
    calls = fake_bwrap(monkeypatch, tmp_path / "bin",
                       f'[ "$n" -eq 2 ] && {{ echo "{NO_SPACE}" >&2; exit 1; }}\nexec {REAL_BWRAP} "$@"')
    result = A.grade(reference_copy(tmp_path / "student"), tests_dir=tiny_tests(tmp_path / "instructor"),
                     only={"autograd", "se"})
    assert result["sandbox"]["kind"] == "bwrap"
    assert result["assignments"]["autograd"]["score"] == 1.0 and result["assignments"]["se"]["score"] == 1.0
    assert len(calls.read_text().splitlines()) >= 3


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the grader drops to another uid only as root)")
def test_a_uid_that_cannot_run_python_is_refused_never_run_as_root(tmp_path, monkeypatch, capsys):
    # the interpreter behind a folder only root may enter, as a virtual environment in root's home is
    hidden = tmp_path / "root-only"
    hidden.mkdir(mode=0o700)
    python = hidden / "python"
    python.symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setattr(sandbox.sys, "executable", str(python))
    marker = tmp_path / "student-code-ran"
    student = marked_student(tmp_path / "student", marker)
    tests = tiny_tests(tmp_path / "instructor")
    for mode in ("none", "auto"):
        if mode == "auto":  # where bwrap cannot start, the refusal is the sandbox's; never a run as root
            monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
        code = A.main(["grade", str(student), "--tests", str(tests), "--only", "autograd", "--sandbox", mode,
                       "--user", "54321"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert ("cannot drop to uid 54321" in err and "refusing to run student code as root" in err) \
            if mode == "none" else "refusing to grade without the sandbox" in err
    assert not marker.exists() and not (student / "grades.json").exists()


def test_the_degraded_mode_still_grades_and_kills_what_it_started(tmp_path):
    token = f"minise-degraded-{os.getpid()}-{time.monotonic_ns()}"
    student = reference_copy(tmp_path / "student")
    append_to_init(student, f"""
        import subprocess as _subprocess, sys as _sys
        _subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(600)", "{token}"])
        """)
    box = unconfined_box()
    result = A.grade(student, tests_dir=tiny_tests(tmp_path), sandbox=box)
    assert result["sandbox"]["kind"] == "none" and result["sandbox"]["warnings"] == box.warnings
    assert result["assignments"]["autograd"]["score"] == 1.0 and result["assignments"]["se"]["score"] == 1.0
    time.sleep(0.5)
    assert not processes_with(token), "the process group was not killed"


@pytest.mark.skipif(os.geteuid() != 0 or sandbox._bwrap_works() is not None, reason="needs root and bubblewrap")
def test_the_bwrap_command_drops_to_the_user_and_hides_the_reference(tmp_path):
    box = A.choose_sandbox("bwrap", user="nobody")
    assert box.kind == "bwrap" and box.user == (65534, 65534) and not box.warnings
    cmd = box.command(tmp_path, ["-q"], {"A": "1"}, A.Limits(), [])
    assert cmd[0] == REAL_BWRAP and "--unshare-net" in cmd and "--unshare-pid" in cmd and "--die-with-parent" in cmd
    assert cmd[cmd.index("--user") + 1] == "65534:65534"
    assert "/work" not in [cmd[i + 2] for i, a in enumerate(cmd) if a == "--ro-bind" and cmd[i + 1] == "/work"]
    binds = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--ro-bind"]
    repo = str(Path(A.__file__).resolve().parents[2])
    assert not any(b == repo or b.startswith(repo + "/minise") or b.startswith(repo + "/tests") for b in binds), binds


# ------------------------------------------------------------------ the judge
def enc(a) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def obs(what, kind, value, **options) -> dict:
    return {"what": what, "kind": kind, "value": value, "options": options}


def test_the_judge_compares_with_the_references_tolerances():
    ref = [obs("y", "close", enc(np.array([1.0, 2.0])), rtol=1e-6, atol=0.0)]
    assert J.judge(ref, [obs("y", "close", enc(np.array([1.0, 2.0 + 1e-9])), rtol=1.0, atol=1.0)]) is None
    why = J.judge(ref, [obs("y", "close", enc(np.array([1.0, 2.1])), rtol=1.0, atol=1.0)])
    assert "1 of 2 values differ" in why  # the student's own (loose) tolerance counts for nothing
    assert "first at index (1,): expected 2, got 2.1" in why  # one element, said plainly
    assert "dtype float32" in J.judge(ref, [obs("y", "close", enc(np.array([1.0, 2.0], np.float32)))])
    assert "shape (3,)" in J.judge(ref, [obs("y", "close", enc(np.zeros(3)))])
    assert "got None" in J.judge(ref, [obs("y", "close", {"json": None})])
    assert "never computed" in J.judge(ref, [])
    assert "more values" in J.judge(ref, ref + ref)
    assert "reported 'z'" in J.judge(ref, [obs("z", "close", enc(np.array([1.0, 2.0])))])
    assert J.judge([obs("n", "equal", {"json": [1, 2]})], [obs("n", "equal", {"json": [1, 2]})]) is None
    assert "expected [1, 2]" in J.judge([obs("n", "equal", {"json": [1, 2]})], [obs("n", "equal", {"json": [2, 1]})])


def test_the_judge_refuses_malformed_or_dangerous_arrays():
    ref = [obs("y", "close", enc(np.zeros(2)), rtol=0, atol=0)]
    bad = [{"dtype": "|O", "shape": [2], "b64": base64.b64encode(b"x" * 16).decode()},
           {"dtype": "<f8", "shape": [3], "b64": base64.b64encode(b"x" * 16).decode()},
           {"dtype": "<f8", "shape": [2], "b64": "not base64!"},
           {"dtype": "<f8", "shape": [-2], "b64": ""},
           "a string"]
    for value in bad:
        assert "malformed" in J.judge(ref, [obs("y", "close", value)]), value


def test_the_judge_checks_an_order_against_the_reference_graph():
    # 0 consumes 1 and 2; 1 consumes 2: the only valid order is 0, 1, 2
    ref = [obs("order", "order", {"json": [0, 1, 2]}, nodes=3, edges=enc(np.array([[1, 0], [2, 0], [2, 1]])))]
    assert J.judge(ref, [obs("order", "order", {"json": [0, 1, 2]})]) is None
    assert "comes before" in J.judge(ref, [obs("order", "order", {"json": [0, 2, 1]})])
    assert "each exactly once" in J.judge(ref, [obs("order", "order", {"json": [0, 1, 1]})])
    assert "not a list" in J.judge(ref, [obs("order", "order", {"json": None})])


# ------------------------------------------------------------------ files
def test_write_atomically_never_follows_a_link(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    A.write_atomically(link, "new")
    assert target.read_text() == "precious"
    assert link.read_text() == "new" and not link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.txt", "out.json"]
    with pytest.raises(A.AssignmentError, match="is a folder"):
        A.write_atomically(tmp_path, "x")


def test_copying_a_package_takes_folders_and_regular_files_only(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.py").write_text("a = 1\n")
    (src / "sub" / "b.py").write_text("b = 2\n")
    (src / "link.py").symlink_to("/etc/passwd")
    (src / "linkdir").symlink_to("/etc")
    os.mkfifo(src / "pipe")
    from minise.assignments.grader import copy_package

    notes = copy_package(src, tmp_path / "dst")
    assert sorted(str(p.relative_to(tmp_path / "dst")) for p in (tmp_path / "dst").rglob("*")) == \
        ["a.py", "sub", "sub/b.py"]
    assert len(notes) == 3 and all("left out" in n for n in notes)


def test_the_first_marker_part_chooses_the_assignment():
    assert plugin.assignment_of(["conv/forward", "autograd/relu"]) == "conv"
    assert A.assignment_of(("se/excite",)) == "se"


def test_a_student_grading_their_own_copy_gets_a_self_check(tmp_path):
    """In a student's copy the grader runs from the student's package: there is no reference to judge
    against, so the tests' own comparisons decide (and the result says so)."""
    student = reference_copy(tmp_path / "student")
    result = A.grade(student, tests_dir=tiny_tests(tmp_path), reference_dir=student / "minise")
    assert result["judged_by"].startswith("the test process")
    assert result["assignments"]["autograd"]["score"] == 1.0 and result["assignments"]["se"]["score"] == 1.0
