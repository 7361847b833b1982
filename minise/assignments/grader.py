"""``minise assignments grade``: run the instructor's graded tests against one student's package.

The grader copies the student's ``minise`` package (regular files only) next to a copy of the
instructor's tests and the plugin (:mod:`.plugin`) into a fresh folder, and runs pytest there in a
sandbox (:mod:`.sandbox`) as an unprivileged user. The test process reports each test on a pipe
whose other end only the grader holds; the grader itself enforces every time limit (a test that
outlives its limit is killed with the whole sandbox and the run resumes with the tests after it),
decides what a crash or a kill means, and writes the results (safely: :func:`write_atomically`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import plugin
from .judge import judge
from .make import INSTRUCTOR_ONLY, ignore_caches, project_root, remove_instructor_only
from .markers import ASSIGNMENTS, AssignmentError, assignment_of, find_parts, manifest_parts, read_regular
from .sandbox import Limits, Sandbox, choose_sandbox

__all__ = ["DEFAULT_TIME_LIMIT", "DEFAULT_TIMEOUT", "SEED_ENV", "graded_files", "grade", "format_table",
           "write_atomically", "find_package", "copy_package", "new_seed", "check_seed"]

DEFAULT_TIME_LIMIT = 300.0
"""Seconds one graded test may run before it fails (a marker's ``time_limit`` may set less)."""
DEFAULT_TIMEOUT = 3600.0
"""Seconds a whole grading run (all assignments of one student) may take."""
START_LIMIT = 300.0      # seconds for pytest to start and collect the tests (the student's imports included)
GRACE = 10.0             # seconds past a test's limit before the grader kills the sandbox
MAX_EVENT_BYTES = 1 << 20     # one report line
MAX_REPORT_BYTES = 256 << 20  # all the reports of one session
MAX_PACKAGE_FILES = 2000
MAX_PACKAGE_BYTES = 64 << 20

_MARKER_USE = re.compile(r"mark\.assignment\b")


def graded_files(tests_dir: str | os.PathLike) -> list[str]:
    """The test files (relative to the folder above ``tests_dir``, as ``tests/...``) that use the marker."""
    tests = Path(tests_dir)
    skip = {(tests / Path(rel).relative_to("tests")).resolve() for rel in INSTRUCTOR_ONLY}
    found = []
    for py in sorted(tests.rglob("test_*.py")):
        if any(py.resolve() == s or s in py.resolve().parents for s in skip):
            continue
        text = read_regular(py)  # a student's own tests in a check: never a pipe
        if text is not None and _MARKER_USE.search(text):
            found.append(Path("tests", py.relative_to(tests)).as_posix())
    return found


# ------------------------------------------------------------------ files
def write_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a new temporary file in the same folder (created with
    O_EXCL|O_NOFOLLOW, so never through a link or onto an existing file), then rename it onto ``path``
    (a rename replaces a link at ``path`` itself; it never writes where the link points)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise AssignmentError(f"{path} is a folder; expected a file name to write")
    folder = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
    tmp = f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=folder)
            except OSError:
                pass
            raise
    finally:
        os.close(folder)
    return path


def find_package(folder: Path) -> Path | None:
    """The folder holding a student's ``minise/`` package: ``folder`` itself, or its only subfolder
    (an archive of a folder); never through a link."""
    for candidate in [folder] + [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.is_symlink()][:1]:
        pkg = candidate / "minise"
        if pkg.is_dir() and not pkg.is_symlink() and (pkg / "__init__.py").is_file() \
                and not (pkg / "__init__.py").is_symlink():
            return candidate
        if candidate is folder and len([p for p in folder.iterdir() if not p.name.startswith(".")]) != 1:
            return None
    return None


def copy_package(src: Path, dst: Path) -> list[str]:
    """Copy a student's package: folders and regular files only (links, devices and pipes are left out,
    and listed in the returned notes), at most MAX_PACKAGE_FILES files and MAX_PACKAGE_BYTES bytes."""
    notes: list[str] = []
    count = total = 0
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for d in list(dirnames):
            if d == "__pycache__" or os.path.islink(os.path.join(dirpath, d)):
                if d != "__pycache__":
                    notes.append(f"left out the link {rel / d}")
                dirnames.remove(d)
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                notes.append(f"left out the link {rel / name}")
                continue
            if not stat.S_ISREG(st.st_mode):
                notes.append(f"left out {rel / name} (not a regular file)")
                continue
            if name.endswith(".pyc"):
                continue
            count, total = count + 1, total + st.st_size
            if count > MAX_PACKAGE_FILES or total > MAX_PACKAGE_BYTES:
                raise AssignmentError(f"the student's package is too large (more than {MAX_PACKAGE_FILES} files "
                                      f"or {MAX_PACKAGE_BYTES >> 20} MiB)")
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # swapped for a pipe since: no hang
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    notes.append(f"left out {rel / name} (not a regular file)")
                    continue
                with open(dst / rel / name, "xb") as out:
                    shutil.copyfileobj(f, out)
    return notes


def _readable_by_all(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


class SandboxStartError(AssignmentError):
    """The sandbox did not start, twice: the submission is an error, never a score."""


# ------------------------------------------------------------------ one sandboxed pytest run
@dataclass
class _Session:
    events: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""
    returncode: int | None = None
    collected: bool = False
    launched: bool = False             # the launcher ran inside the sandbox (before any student code)
    finished: set[str] = field(default_factory=set)
    killed: str | None = None          # why the grader ended the run early
    lost_test: str | None = None       # the test running when the run was killed or died


def _run_session(box: Sandbox, run_dir: Path, work: Path, files: list[str], chosen: list[str], time_limit: float,
                 limits: Limits, deadline: float, only: list[str] | None, mode: str, seed: int | None) -> _Session:
    inside = box.root_inside(run_dir)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "PYTHONPATH": f"{inside}:{inside}/_grader", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MINISE_FAST": "0",  # the textbook code in both runs (docs/instructors.md)
           plugin.ENV_ROOT: inside, plugin.ENV_ASSIGNMENTS: ",".join(chosen), plugin.ENV_MODE: mode,
           plugin.ENV_TIME_LIMIT: str(float(time_limit))}
    if seed is not None:  # the graded tests draw their inputs from it (tests/assignments/checks.py)
        env[SEED_ENV] = str(seed)
    if box.kind == "none":
        private = work / f"tmp{secrets.token_hex(4)}"
        private.mkdir(mode=0o700)
        if box.user is not None:
            os.chown(private, *box.user)
        env.update(HOME=str(private), TMPDIR=str(private))
    if only is not None:
        only_file = run_dir / "_grader" / f"only-{secrets.token_hex(4)}.txt"
        only_file.write_text("\n".join(only) + "\n", encoding="utf-8")
        only_file.chmod(0o644)
        env[plugin.ENV_ONLY] = f"{inside}/_grader/{only_file.name}"
    read_end, write_end = os.pipe()
    env[plugin.ENV_FD] = str(write_end)
    pytest_args = ["-q", "--tb=no", "-p", "no:cacheprovider", "-p", "_minise_grader", "-o", "addopts=",
                   "--continue-on-collection-errors", *files]
    cmd = box.command(run_dir, pytest_args, env, limits, [write_end])
    out_path = work / f"output-{secrets.token_hex(4)}.txt"
    out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    s = _Session()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_fd, stderr=out_fd, pass_fds=[write_end],
                                cwd=run_dir, env=env if box.kind == "none" else {"PATH": env["PATH"]},
                                start_new_session=True)
    finally:
        os.close(write_end)
        os.close(out_fd)
    os.set_blocking(read_end, False)
    limit_of: dict[str, float] = {}
    buffer, current, since, received, exited_at = b"", None, time.monotonic(), 0, None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now  # its children may still hold the pipe open: read what is there, then stop
            if exited_at is not None and now - exited_at > 2.0:
                break
            if not s.collected:
                until, why = since + START_LIMIT, f"pytest did not start and collect the tests within {START_LIMIT:g} s"
            elif current is not None:
                test_limit = min(limit_of.get(current, time_limit), time_limit)
                until = since + test_limit + GRACE
                why = f"the test ran longer than the grader's limit of {test_limit:g} s"
            else:
                until, why = since + time_limit + GRACE, "the test process stopped between tests"
            if deadline < until:
                until, why = deadline, "the grading run reached its overall time limit"
            ready, _, _ = select.select([read_end], [], [], min(1.0, max(0.0, until - now)))
            if not ready:
                if time.monotonic() >= until:
                    s.killed, s.lost_test = why, current
                    break
                continue
            try:
                chunk = os.read(read_end, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            received += len(chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_EVENT_BYTES or received > MAX_REPORT_BYTES:
                s.killed, s.lost_test = "the test process wrote oversized reports", current
                break
            for line in lines:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(e, dict) or not isinstance(e.get("event"), str):
                    continue
                kind = e["event"]
                if kind == "launched" and not s.events:
                    s.launched = True
                    continue
                s.events.append(e)
                if kind == "collected":
                    s.collected, since = True, time.monotonic()
                elif kind == "selected" and isinstance(e.get("test"), str):
                    try:
                        limit_of[e["test"]] = float(e.get("limit", time_limit))
                    except (TypeError, ValueError):
                        pass
                elif kind == "start" and isinstance(e.get("test"), str):
                    current, since = e["test"], time.monotonic()
                elif kind == "finish" and e.get("test") == current:
                    s.finished.add(current)
                    current, since = None, time.monotonic()
        if s.killed is None and current is not None:
            s.lost_test = current
    finally:
        os.close(read_end)
        _kill(proc)
    s.returncode = proc.returncode
    s.output = _tail(out_path)
    return s


def _kill(proc: subprocess.Popen) -> None:
    """End the sandbox and everything in its process group (bwrap's PID namespace takes the rest)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _tail(path: Path, chars: int = 20000) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - chars))
        return f.read().decode(errors="replace")


# ------------------------------------------------------------------ grading
@dataclass
class _Run:
    """The sessions of one package's run over the graded tests, and what the grader made of them."""

    sessions: list[_Session]
    events: list[dict[str, Any]]
    selected: dict[str, list[str]]
    package: str          # the package as the test process saw it
    notes: list[str]


def _run_package(pkg: Path, tests: Path, files: list[str], chosen: list[str], mode: str, box: Sandbox,
                 time_limit: float, limits: Limits, deadline: float, seed: int | None) -> _Run:
    """Copy ``pkg`` next to the tests and run the graded tests on it, in the sandbox, resuming after a
    test that was killed or took the process down with it."""
    with tempfile.TemporaryDirectory(prefix="minise-grade-") as tmp:
        work = Path(tmp)
        work.chmod(0o711)  # the unprivileged uid may pass through (to its run folder), not list it
        run_dir = work / "run"
        run_dir.mkdir()
        notes = copy_package(pkg, run_dir / "minise")
        shutil.copytree(tests, run_dir / "tests", ignore=ignore_caches, symlinks=False)
        remove_instructor_only(run_dir)
        (run_dir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # the rootdir; no addopts
        (run_dir / "_grader").mkdir()
        shutil.copy(Path(plugin.__file__), run_dir / "_grader" / "_minise_grader.py")
        _readable_by_all(run_dir)

        def session(only: list[str] | None) -> _Session:
            # a sandbox that does not start (bwrap out of namespaces under load) is tried once more, then
            # the grading stops with an error: a run that never started is not a score of 0
            for _attempt in (1, 2):
                s = _run_session(box, run_dir, work, files, chosen, time_limit, limits, deadline, only, mode, seed)
                if s.launched:
                    return s
            first = next((line for line in s.output.splitlines() if line.strip()), f"exit code {s.returncode}")
            raise SandboxStartError(f"the {box.kind} sandbox did not start (tried twice): {first.strip()[:300]}")

        sessions = [session(None)]
        selected = {e["test"]: [str(p) for p in e["parts"]] for e in sessions[0].events
                    if e["event"] == "selected" and isinstance(e.get("test"), str)
                    and isinstance(e.get("parts"), list) and e["parts"]}
        while sessions[-1].lost_test is not None and time.monotonic() < deadline:
            done = set().union(*(s.finished for s in sessions)) | {s.lost_test for s in sessions}
            remaining = [t for t in selected if t not in done]
            if not remaining:
                break
            sessions.append(session(remaining))
        package = box.root_inside(run_dir) + "/minise"
    events: list[dict[str, Any]] = []
    for i, s in enumerate(sessions):
        # a session after the first runs only the remaining tests: its selection is not the grading's
        events.extend(e for e in s.events if i == 0 or e["event"] not in ("selected", "collect_error"))
        if s.lost_test is not None:
            why = s.killed or f"the test process ended during this test (exit code {s.returncode})"
            events.append({"event": "report", "test": s.lost_test, "when": "call", "outcome": "failed",
                           "error_type": "TimeoutError" if s.killed and "limit" in s.killed else "Crash",
                           "message": f"{why} (decided by the grader)", "grader": True})
    return _Run(sessions, events, selected, package, notes)


SEED_ENV = "MINISE_GRADE_SEED"  # read by tests/assignments/checks.py
MAX_SEED = 2**63 - 1


def new_seed() -> int:
    """A fresh grading seed (63 random bits)."""
    return secrets.randbits(63)


def check_seed(seed: int | None) -> None:
    """A grading seed is None (choose one) or an int in 0..2**63-1; anything else is one clear error."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise AssignmentError(f"the grading seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")


_REFERENCE_CACHE: dict[tuple[str, ...], list[tuple[frozenset[str], dict[str, Any]]]] = {}


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _reference(reference_pkg: Path, tests: Path, files: list[str], chosen: list[str], box: Sandbox,
               time_limit: float, limits: Limits, deadline: float, seed: int) -> dict[str, Any]:
    """The reference package's run over the graded tests of ``chosen`` (cached per contents of the tests
    the reference and the seed, so a batch with one seed runs it once):
    ``{"tests": {id: {"passed", "skipped", "message", "observations"}}, "errors": [...], "collect_errors"}``."""
    key = (_fingerprint(tests), _fingerprint(reference_pkg), box.kind, str(time_limit), str(seed))
    for covered, cached in _REFERENCE_CACHE.get(key, []):
        if covered >= set(chosen):
            return cached
    run = _run_package(reference_pkg, tests, files, chosen, "reference", box, time_limit, limits, deadline, seed)
    outcome = _outcomes(run.events)
    observations = _observations(run.events)
    errors: list[str] = []
    if not run.sessions[0].collected:
        errors.append("the graded tests could not run on the reference package:\n"
                      + "\n".join(run.sessions[0].output.strip().splitlines()[-30:]))
    tests_of: dict[str, Any] = {}
    for test in run.selected:
        r = outcome.get(test, {"passed": None})
        tests_of[test] = {"parts": run.selected[test], "passed": r["passed"] is True, "skipped": bool(r.get("skipped")),
                          "message": r.get("message") or ("not run" if r["passed"] is None else ""),
                          "observations": observations.get(test, [])}
    collect_errors = [e for e in run.events if e["event"] == "collect_error"]
    result = {"tests": tests_of, "errors": errors, "collect_errors": collect_errors}
    if not errors and not collect_errors and all(t["passed"] or t["skipped"] for t in tests_of.values()):
        _REFERENCE_CACHE.setdefault(key, []).append((frozenset(chosen), result))  # a failed one is not kept
    return result


def grade(student_dir: str | os.PathLike, only: set[str] | None = None, tests_dir: str | os.PathLike | None = None,
          time_limit: float = DEFAULT_TIME_LIMIT, timeout: float = DEFAULT_TIMEOUT,
          sandbox: Sandbox | str = "auto", user: str | int | None = None,
          limits: Limits | None = None, reference_dir: str | os.PathLike | None = None,
          seed: int | None = None, part: str | None = None) -> dict[str, Any]:
    """Grade a student copy; returns ``{"assignments": {name: {"score", "passed", "total", "tests", "errors"}}}``.

    ``tests_dir``: the tests to grade with (default: the ``tests`` folder of the checkout this minise
    comes from, i.e. the instructor's; any folder name); only the student's ``minise`` package is
    taken from ``student_dir``. The graded tests also run on ``reference_dir`` (default: the minise
    package the grader itself is), and a student's test passes only if the values it computed match
    the reference's (:mod:`.judge`). ``time_limit``: seconds per test (a marker's ``time_limit`` may
    set less); ``timeout``: seconds for the whole run. ``sandbox``: "auto", "bwrap", "none" or a
    :class:`Sandbox`; ``user``: who student code runs as when the grader is root (default nobody).
    An assignment whose graded tests could not all be loaded scores 0, with the reason in its ``errors``;
    when they cannot load or pass on the reference package (the instructor's side), its score is None.
    ``seed``: the graded tests' random inputs, shared by the reference run and the student's (default:
    fresh randomness, :func:`new_seed`); recorded as the result's ``"seed"`` so the grade can be
    reproduced. A self-check (no reference) uses the public inputs of the student's own ``pytest`` run
    (``"seed"`` None) unless a seed is given: then it runs on a grading's inputs. ``part``: grade only the
    tests that count for this part (``"autograd/sigmoid"``), under its assignment. The result's
    ``"parts"`` says, for each part with a failing test, where it is written and its maths (the docstring).
    """
    started = time.monotonic()
    student = Path(student_dir).resolve()
    pkg = student / "minise"
    if not pkg.is_dir() or pkg.is_symlink() or not (pkg / "__init__.py").is_file():
        raise AssignmentError(f"{student} is not a student copy (expected the minise package inside it)")
    tests = Path(tests_dir).resolve() if tests_dir is not None else project_root() / "tests"
    if not (tests / "conftest.py").is_file():
        raise AssignmentError(f"{tests} holds no conftest.py: expected minise's tests folder")
    files = graded_files(tests)
    if not files:
        raise AssignmentError(f"no graded tests (marked @pytest.mark.assignment) in {tests}")
    reference_pkg = Path(reference_dir).resolve() if reference_dir is not None else Path(__file__).resolve().parents[1]
    if importlib.util.find_spec("torch") is None:  # the graded tests' oracle; without it they could not even load
        raise AssignmentError(f"the graded tests compare with PyTorch, which {sys.executable} does not have; "
                              "install its CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu")
    chosen = sorted(only) if only else list(ASSIGNMENTS)
    # the parts (where each is written, its maths): a self-check's copy names them in its manifest
    known = find_parts(reference_pkg)
    if reference_pkg == pkg.resolve():
        known = manifest_parts(student) | known
    selection = chosen
    if part is not None:
        if part not in known:
            raise AssignmentError(f"unknown part {part!r}; the parts are: {', '.join(sorted(known))}")
        chosen, selection = [part.split("/", 1)[0]], [part]
    check_seed(seed)
    box = sandbox if isinstance(sandbox, Sandbox) else choose_sandbox(sandbox, user)
    limits = limits or Limits(cpu_seconds=int(timeout) + 60)
    # a student checking their own copy has no reference: their tests compare with the oracle themselves
    self_check = reference_pkg == pkg.resolve()
    if seed is None and not self_check:
        seed = new_seed()
    reference = None if self_check else _reference(reference_pkg, tests, files, selection, box, time_limit,
                                                   limits, time.monotonic() + timeout, seed)
    started = time.monotonic()  # the reference run (once per batch) does not eat the student's time
    run = _run_package(pkg, tests, files, selection, "self" if self_check else "student", box, time_limit, limits,
                       started + timeout, seed)
    _check_isolation(run.events, run.sessions[0].output, run.package, student)
    result = _scores(run, reference, chosen, tests, student)
    failing = sorted({t["parts"][0] for a in result["assignments"].values() for t in a["tests"] if not t["passed"]})
    result["parts"] = {tag: {"file": known[tag].file, "function": known[tag].function, "line": known[tag].line,
                             "maths": known[tag].maths} for tag in failing if tag in known}
    result["sandbox"] = {"kind": box.kind, "user": box.user[0] if box.user else None, "warnings": box.warnings,
                         "runs": len(run.sessions)}
    result["seed"] = seed
    result["judged_by"] = "the test process (a self-check)" if self_check else "the grader, against the reference"
    result["notes"] = run.notes + _review_notes(pkg)
    return result


def _review_notes(pkg: Path) -> list[str]:
    """Things for a person to look at: the package imports torch outside minise/interop (a solution may call
    PyTorch, an equivalent library, instead of computing; the grader cannot tell the difference)."""
    found = []
    for py in sorted(pkg.rglob("*.py")):
        rel = py.relative_to(pkg).as_posix()
        if rel.startswith("interop/"):
            continue
        text = read_regular(py)  # never a pipe, a device or a link (a FIFO would hang here)
        if text is not None and _IMPORTS_TORCH.search(text):
            found.append(rel)
    return [f"for review: minise/{rel} imports torch (outside minise/interop)" for rel in found]


_IMPORTS_TORCH = re.compile(r"^\s*(import|from)\s+torch\b|__import__\(\s*['\"]torch|import_module\(\s*['\"]torch",
                            re.MULTILINE)


def _check_isolation(events: list[dict[str, Any]], output: str, package: str, student: Path) -> None:
    """Refuse to grade when the tests imported minise (or any module of it) from anywhere but the
    student's copy (``package``: that copy as the test process sees it)."""
    files = [e.get("file") for e in events if e["event"] == "minise"]
    files += [p for e in events if e["event"] == "minise" for p in (e.get("path") or [])]
    files += [m[1] for e in events if e["event"] == "done" for m in (e.get("modules") or [])
              if isinstance(m, list) and len(m) == 2]
    for f in files:
        if f and not (str(f) == package or str(f).startswith(package + "/")):
            raise AssignmentError(f"grading {student}, but the tests imported minise from {f}: "
                                  "refusing to grade anything but the student's own package")
    guard = re.search(r"grading .*, but minise was imported from .*", output)
    if guard:
        raise AssignmentError(f"grading {student}: {guard.group(0)}; refusing to grade anything but the "
                              "student's own package")


def _outcomes(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """test id -> {"passed": True/False/None, "skipped", "error_type", "message"}: what the test process
    reported (a claim), with the grader's own findings (kills, crashes) taking precedence."""
    outcome: dict[str, dict[str, Any]] = {}
    for e in events:
        test = e.get("test")
        if e["event"] != "report" or not isinstance(test, str):
            continue
        r = outcome.setdefault(test, {"passed": None, "skipped": False})
        if e.get("outcome") == "skipped":
            r["skipped"] = True
        elif e.get("outcome") == "failed":
            if r["passed"] is not False or e.get("grader"):  # the first failure's reason; the grader's wins
                r.update(passed=False, error_type=e.get("error_type"), message=str(e.get("message", "")))
        elif e.get("when") == "call" and e.get("outcome") == "passed" and r["passed"] is None:
            r["passed"] = True
    return outcome


def _observations(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["event"] == "observe" and isinstance(e.get("test"), str):
            found.setdefault(e["test"], []).append(e)
    return found


def _scores(run: _Run, reference: dict[str, Any] | None, chosen: list[str], tests: Path,
            student: Path) -> dict[str, Any]:
    """The score of each assignment. A test passes only if the student's process says it passed AND every
    value it observed matches the reference run's (judged here, in the grader's process). Without a
    reference (a student grading their own copy) the test process's word is taken."""
    first = run.sessions[0]
    stopped = next((s.killed for s in run.sessions if s.killed and s.lost_test is None), None)
    outcome = _outcomes(run.events)
    observed = _observations(run.events)
    errors: dict[str, list[str]] = {name: [] for name in chosen}
    # the instructor's side failed (the graded tests do not load or pass on the reference): no score at all
    ungradable: dict[str, bool] = {name: False for name in chosen}
    for e, whose in [(e, "") for e in run.events] + [(e, " on the reference package")
                                                     for e in (reference or {}).get("collect_errors", [])]:
        if e["event"] == "collect_error":
            where = Path(str(e.get("where") or "").split("::")[0]) if e.get("where") else None
            owners = _owners_in(tests.joinpath(*where.parts[1:])) if where is not None and where.parts else set()
            for name in (owners or set(chosen)) & set(chosen):  # unknown owners: every assignment
                errors[name].append(f"{e.get('where') or 'the test session'} could not be loaded{whose}:\n"
                                    f"{e.get('message')}")
                ungradable[name] = ungradable[name] or bool(whose)
    if not first.collected:
        tail = "\n".join(first.output.strip().splitlines()[-30:])
        for name in chosen:
            why = stopped or f"pytest exit code {first.returncode}"
            errors[name].append(f"the graded tests could not run ({why}):\n{tail}")
    for message in (reference or {}).get("errors", []):
        for name in chosen:
            errors[name].append(f"the instructor's graded tests are broken: {message}")
            ungradable[name] = True
    result: dict[str, Any] = {"student_dir": str(student), "tests_dir": str(tests), "assignments": {}}
    # the graded tests are those of the reference run (the student's process could leave some out);
    # without a reference (a self-check), those the test process selected
    graded = ({t: r["parts"] for t, r in reference["tests"].items()} if reference is not None else run.selected)
    for name in chosen:
        rows = []
        for test, parts in graded.items():
            if assignment_of(parts) != name:
                continue
            ref = reference["tests"].get(test) if reference is not None else {"passed": True, "skipped": False,
                                                                              "observations": None}
            if ref is None or not (ref["passed"] or ref["skipped"]) or (ref["passed"] and ref["observations"] == []):
                why = ("it is not a graded test of the reference run" if ref is None else
                       f"it fails on the reference package: {ref['message']}" if not ref["passed"] else
                       "it observes no value, so the grader cannot judge it (use the checks of "
                       "tests/assignments/checks.py)")
                errors[name].append(f"{test}: {why}")
                ungradable[name] = True
                continue
            r = outcome.get(test)
            if ref["skipped"] or (reference is None and r is not None and r["skipped"] and r["passed"] is not False):
                continue  # e.g. a GPU test on a machine without one: not counted
            row = {"test": test, "parts": parts, "passed": False, "error_type": None, "message": ""}
            if r is not None and r["skipped"] and r["passed"] is not False:
                row["message"] = "skipped in the student's run, though the reference ran it"
            elif r is None or r["passed"] is None:
                row["message"] = f"not run: {stopped or 'the test process ended early'}"
            elif r["passed"] is False:
                row.update(error_type=r.get("error_type"), message=r.get("message", ""))
            elif ref["observations"] is None:
                row["passed"] = True
            else:
                why = judge(ref["observations"], observed.get(test, []))
                if why is None:
                    row["passed"] = True
                else:
                    row.update(error_type="AssertionError", message=f"{why} (judged by the grader)")
            rows.append(row)
        if not rows and not errors[name]:
            errors[name].append(f"no graded tests of {name!r} were found")
        passed = sum(t["passed"] for t in rows)
        score = None if ungradable[name] else passed / len(rows) if rows and not errors[name] else 0.0
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
                owners.add(assignment_of([part]))
    return owners


def _maths(doc: str, most: int = 14) -> list[str]:
    """A part's docstring for the score table: its paragraphs of maths, not those about the fast paths."""
    paragraphs = [p for p in doc.strip().split("\n\n") if p.strip() and not p.lstrip().startswith("On the CPU")]
    lines = "\n\n".join(paragraphs).splitlines() or ["(no docstring)"]
    return lines[:most] + (["..."] if len(lines) > most else [])


def format_table(result: dict[str, Any]) -> str:
    """The score table: one line per assignment, then PASS/FAIL per test (with the reason of a FAIL)."""
    lines = []
    for name, a in result["assignments"].items():
        if a["score"] is None:
            lines.append(f"{name}: NOT GRADED: the graded tests do not run on the reference package (the "
                         "instructor's side; no score is given)")
        else:
            note = "  (could not be graded completely: scored 0)" if a["errors"] else ""
            lines.append(f"{name}: {a['passed']}/{a['total']} tests passed, score {100 * a['score']:.0f}%{note}")
        for err in a["errors"]:
            lines.extend("  ! " + ln for ln in err.splitlines())
        for t in a["tests"]:
            lines.append(f"  {'PASS' if t['passed'] else 'FAIL'}  {t['test']}")
            if not t["passed"] and t["message"]:
                first = t["message"].splitlines()[0]
                lines.append(f"        {first[:400]}")
        for tag, where in result.get("parts", {}).items():
            if tag.split("/", 1)[0] == name:
                lines.append(f"  {tag}: you write it in {where['file']}, {where['function']} (line {where['line']}); "
                             "its maths:")
                lines.extend(f"      {ln}".rstrip() for ln in _maths(where["maths"]))
    total = sum(a["passed"] for a in result["assignments"].values())
    count = sum(a["total"] for a in result["assignments"].values())
    lines.append(f"total: {total}/{count} tests passed")
    seed = result.get("seed")
    lines.append("inputs: the public ones (your own pytest run's)" if seed is None else
                 f"inputs: drawn from grading seed {seed} (--seed {seed} grades on the same inputs again)")
    return "\n".join(lines)
