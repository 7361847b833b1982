"""The grading run's pytest plugin, and the launcher that starts that run inside the sandbox.

This file is copied into every grading folder and loaded there as the top-level module
``_minise_grader`` (``pytest -p _minise_grader``), so it imports nothing from minise: it must work
when the student's package cannot even be imported. It

- keeps the graded tests of the chosen assignments (the first part of a test's
  ``@pytest.mark.assignment(...)`` names its assignment: :func:`assignment_of`, the one copy of
  that rule, which tests/conftest.py imports too), optionally only the node ids listed in the
  file named by ``MINISE_GRADE_ONLY`` (a resumed run);
- stops a test after its time limit with ``TimeoutError`` (a courtesy: the grader enforces the
  limit itself from outside, by killing the sandbox, should a solution swallow the exception);
- reports what happens to each test as one JSON object per line on the file descriptor
  ``MINISE_GRADE_FD`` (a pipe whose reading end only the grader holds).

The reports are the student process's *claims*; docs/instructors.md says what the grader does and
does not trust them for.

Run as a script (``python _minise_grader.py --limits ... --user UID:GID -- PYTEST_ARGS``) it is the
launcher: it sets the resource limits, drops to the unprivileged uid, and replaces itself with
``python -m pytest PYTEST_ARGS``.
"""

from __future__ import annotations

import json
import os
import signal
import sys

ENV_FD = "MINISE_GRADE_FD"
ENV_ASSIGNMENTS = "MINISE_GRADE_ASSIGNMENTS"
ENV_TIME_LIMIT = "MINISE_GRADE_TIME_LIMIT"
ENV_ONLY = "MINISE_GRADE_ONLY"
ENV_ROOT = "MINISE_GRADE_ROOT"
ENV_MODE = "MINISE_GRADE_MODE"   # "reference" (the instructor's package) or "student"


def assignment_of(parts) -> str:
    """The assignment a graded test counts for: the first part it names (``"conv/forward"`` -> ``"conv"``)."""
    return str(parts[0]).split("/", 1)[0]


# ------------------------------------------------------------------ the pytest plugin
def _parts(item) -> list[str]:
    return [str(p) for m in item.iter_markers("assignment") for p in m.args]


def _limit(item, default: float) -> float:
    for m in item.iter_markers("assignment"):
        if "time_limit" in m.kwargs:
            return float(m.kwargs["time_limit"])
    return default


def _short(text, lines: int = 4, chars: int = 600) -> str:
    text = "\n".join(str(text).strip().splitlines()[:lines])
    return text if len(text) <= chars else text[:chars] + " ..."


class _Channel:
    """JSON lines on the grader's pipe (``MINISE_GRADE_FD``); nothing when not grading."""

    def __init__(self) -> None:
        fd = os.environ.get(ENV_FD)
        self.fd = int(fd) if fd else None

    def send(self, **entry) -> None:
        if self.fd is None:
            return
        data = (json.dumps(entry) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]


_channel = _Channel()
_current: list[str | None] = [None]  # the node id of the test running now


def grading_mode() -> str | None:
    """"reference", "student", or None outside a grading run."""
    return os.environ.get(ENV_MODE) or None


def _encode(value):
    """A JSON-able value as is; anything else as a NumPy array: dtype, shape and the raw bytes in base64."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"json": value}
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return {"json": list(value)}
    import base64  # noqa: PLC0415 - needed only for values that are not JSON

    import numpy as np  # noqa: PLC0415 - needed only for values that are not JSON

    array = np.ascontiguousarray(np.asarray(value))  # cpu-only
    return {"dtype": array.dtype.str, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}


def observe(kind: str, what: str, value, **options) -> None:
    """Report one value the running test computed, for the grader to judge (``kind``: "close" with
    ``rtol``/``atol``, "equal", or "order" with the graph's ``edges``). A no-op outside a grading run."""
    _channel.send(event="observe", test=_current[0], kind=kind, what=str(what), value=_encode(value),
                  options={k: _encode(v) if k == "edges" else v for k, v in options.items()})


def pytest_configure(config) -> None:
    config._minise_grader_chosen = set(filter(None, os.environ.get(ENV_ASSIGNMENTS, "").split(",")))
    config._minise_grader_limit = float(os.environ.get(ENV_TIME_LIMIT, "300"))
    only = os.environ.get(ENV_ONLY)
    config._minise_grader_only = None
    if only:
        with open(only, encoding="utf-8") as f:
            config._minise_grader_only = {line.strip() for line in f if line.strip()}


def pytest_collection_modifyitems(session, config, items) -> None:
    chosen, only = config._minise_grader_chosen, config._minise_grader_only
    # an entry of ``chosen`` is an assignment ("se") or one part ("se/squeeze": the tests it counts for)
    keep = [it for it in items if _parts(it) and (assignment_of(_parts(it)) in chosen or str(_parts(it)[0]) in chosen)
            and (only is None or it.nodeid in only)]
    kept = {id(it) for it in keep}
    config.hook.pytest_deselected(items=[it for it in items if id(it) not in kept])
    items[:] = keep
    module = sys.modules.get("minise")
    if module is None:
        try:
            import minise as module  # noqa: PLC0415 - where does minise come from?
        except Exception:
            module = None
    _channel.send(event="minise", file=getattr(module, "__file__", None),
                  path=[str(p) for p in getattr(module, "__path__", [])])
    for it in keep:
        _channel.send(event="selected", test=it.nodeid, parts=_parts(it),
                      limit=_limit(it, config._minise_grader_limit))
    _channel.send(event="collected", count=len(keep))


def pytest_collectreport(report) -> None:
    if report.failed:
        _channel.send(event="collect_error", where=report.nodeid,
                      message=_short(report.longrepr, lines=30, chars=3000))


def pytest_runtest_logstart(nodeid, location) -> None:
    _current[0] = nodeid
    _channel.send(event="start", test=nodeid)


def pytest_runtest_logfinish(nodeid, location) -> None:
    _errors.pop(nodeid, None)
    _current[0] = None
    _channel.send(event="finish", test=nodeid)


def pytest_runtest_call(item):
    limit = _limit(item, item.config._minise_grader_limit)
    if not (limit > 0 and hasattr(signal, "SIGALRM")):
        return None

    def stop(signum, frame):
        raise TimeoutError(f"the test ran longer than the grader's limit of {limit:g} s")

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, limit)
    return None


def pytest_runtest_teardown(item) -> None:
    if hasattr(signal, "SIGALRM"):
        signal.setitimer(signal.ITIMER_REAL, 0)


_errors: dict = {}  # node id -> (type name, message) of its first failure


def pytest_runtest_makereport(item, call):
    skipped = call.excinfo is not None and call.excinfo.typename in ("Skipped", "XFailed")
    if call.excinfo is not None and not skipped and item.nodeid not in _errors:  # the first failure's reason
        _errors[item.nodeid] = (call.excinfo.typename, _short(call.excinfo.exconly()))


def pytest_runtest_logreport(report) -> None:
    entry = {"event": "report", "test": report.nodeid, "when": report.when, "outcome": report.outcome}
    if report.failed:
        entry["error_type"], entry["message"] = _errors.pop(report.nodeid, (None, _short(report.longrepr)))
    _channel.send(**entry)


def pytest_sessionfinish(session, exitstatus) -> None:
    loaded = [(name, getattr(m, "__file__", None)) for name, m in list(sys.modules.items())
              if name == "minise" or name.startswith("minise.")]
    _channel.send(event="done", exitstatus=int(exitstatus), modules=loaded)


# ------------------------------------------------------------------ the launcher
def _launch(argv: list[str]) -> None:
    """``--limits cpu=S,memory=B,processes=N,file=B [--user UID:GID] -- PYTEST_ARGS``: set the limits,
    drop privileges, exec pytest. Runs before any student code, as the grader's trusted code."""
    import resource  # noqa: PLC0415 - Unix only, and only the launcher needs it

    split = argv.index("--")
    opts, pytest_args = argv[:split], argv[split + 1:]
    limits = dict(kv.split("=") for kv in opts[opts.index("--limits") + 1].split(",") if kv)
    names = {"cpu": resource.RLIMIT_CPU, "memory": resource.RLIMIT_AS, "processes": resource.RLIMIT_NPROC,
             "file": resource.RLIMIT_FSIZE, "core": resource.RLIMIT_CORE}
    for key, value in limits.items():
        n = int(value)
        resource.setrlimit(names[key], (n, n))
    if "--user" in opts:
        uid, gid = (int(v) for v in opts[opts.index("--user") + 1].split(":"))
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise SystemExit("minise grader: could not drop privileges")
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise SystemExit("minise grader: privileges came back after dropping them")
    _channel.send(event="launched")  # the sandbox started: the grader tells this from a failed start
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *pytest_args])


if __name__ == "__main__":
    _launch(sys.argv[1:])
