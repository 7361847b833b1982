"""Where student code runs: a bubblewrap sandbox as an unprivileged user, with resource limits.

A grading run starts ``python _minise_grader.py`` (the launcher of :mod:`.plugin`) in one of two ways:

``bwrap`` (the default; ``auto`` is the same): bubblewrap, from the distribution's packages
(``apt-get install bubblewrap``), builds a new mount, PID, network, IPC and UTS namespace. Inside
it only ``/usr``, the Python installation and the grading folder exist, all read-only, the grading
folder at ``/grade``; ``/tmp`` is a private, size-capped tmpfs; the network has only a loopback
device; the grader's own minise package and tests are hidden even where they sit inside the
Python installation. The launcher sets the rlimits (CPU time, address space, processes, file
size, no core files) and, when the grader is root, drops to the unprivileged uid (``nobody`` by
default) before pytest and the student's code start. When bwrap (PID 1's parent) ends, the kernel
kills every process in the PID namespace, so nothing the student started outlives the run.

If bubblewrap is missing or cannot start a sandbox, grading stops with an error naming the cause:
it never falls back to running student code unconfined. Nothing about whether bwrap works is
cached: each student's run asks again.

``none`` (only when asked for by name, e.g. a student's self-check on a laptop; warned, and recorded
in grades.json): the same launcher, limits and uid drop, in a process group of its own that is
killed at the end; but no private filesystem, network or PID namespace. Student code never runs as
root in any mode: a root grader that cannot drop to a uid able to run Python refuses to grade.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .markers import AssignmentError

__all__ = ["Limits", "Sandbox", "SandboxWarning", "check_mode", "choose_sandbox", "MODES"]

MODES = ("auto", "bwrap", "none")
INSIDE = "/grade"  # where the grading folder appears inside the bwrap sandbox


class SandboxWarning(UserWarning):
    """A protection of the sandbox is unavailable on this machine (the message names it)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one grading run (the rlimits of every process in it)."""

    cpu_seconds: int = 3600
    memory_bytes: int = 8 << 30        # address space (RLIMIT_AS)
    processes: int = 1024              # processes and threads of the sandbox's uid (RLIMIT_NPROC)
    file_bytes: int = 256 << 20        # the largest file it may write (RLIMIT_FSIZE), its output included
    tmp_bytes: int = 256 << 20         # the private /tmp (bwrap)

    def launcher_option(self) -> str:
        return (f"cpu={self.cpu_seconds},memory={self.memory_bytes},processes={self.processes},"
                f"file={self.file_bytes},core=0")


@dataclass
class Sandbox:
    """How to start the launcher: ``kind`` "bwrap" or "none"; ``user`` (uid, gid) to drop to, or None."""

    kind: str
    user: tuple[int, int] | None
    warnings: list[str] = field(default_factory=list)

    def root_inside(self, run_dir: Path) -> str:
        """The grading folder as the student's process sees it."""
        return INSIDE if self.kind == "bwrap" else str(run_dir)

    def command(self, run_dir: Path, pytest_args: list[str], env: dict[str, str], limits: Limits,
                keep_fds: list[int]) -> list[str]:
        """The command line that runs ``pytest pytest_args`` on ``run_dir`` in this sandbox."""
        root = self.root_inside(run_dir)
        launcher = [sys.executable, f"{root}/_grader/_minise_grader.py", "--limits", limits.launcher_option()]
        if self.user is not None:
            launcher += ["--user", f"{self.user[0]}:{self.user[1]}"]
        launcher += ["--", *pytest_args]
        if self.kind == "none":
            return launcher
        # the bwrap on the grader's PATH (the one the probe tried), not one on the sandbox's own PATH
        args = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session", "--unshare-pid",
                "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--hostname", "minise-grader"]
        if os.geteuid() != 0:
            args.append("--unshare-user")
        args += _filesystem(run_dir, limits)
        args += ["--chdir", INSIDE, "--clearenv"]
        for key, value in env.items():
            args += ["--setenv", key, value]
        return args + launcher


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


def _python_paths() -> list[str]:
    """The folders the Python interpreter and its packages (pytest, numpy, torch) live in."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix,
             os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    paths = sorted(p for p in paths if not p.startswith("/usr/") and p != "/usr")
    return [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]


def _filesystem(run_dir: Path, limits: Limits) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/nsswitch.conf"):
        args += ["--ro-bind-try", f, f]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp"]
    made = {"/", "/usr", "/tmp", "/proc", "/dev"}
    for p in _python_paths():
        for a in _ancestors(p):
            if a not in made:
                args += ["--perms", "0755", "--dir", a]
                made.add(a)
        args += ["--ro-bind", p, p]
    # the grader's own (solved) package and tests must not be reachable, even inside the Python installation
    here = Path(__file__).resolve().parent.parent
    for hidden in (here, here.parent / "tests"):
        h = str(hidden)
        if hidden.is_dir() and any(h == p or h.startswith(p + "/") for p in _python_paths()):
            args += ["--tmpfs", h]
    args += ["--ro-bind", str(run_dir), INSIDE]
    return args


def _resolve_user(user: str | int | None) -> tuple[int, int]:
    if user is None:
        user = "nobody"
    try:
        entry = pwd.getpwuid(int(user)) if str(user).isdigit() else pwd.getpwnam(str(user))
    except KeyError:
        if str(user).isdigit():
            return int(user), int(user)
        raise AssignmentError(f"no user {user!r} on this machine to run student code as; "
                              "create one (useradd --system minise-grader) or pass --user UID") from None
    if entry.pw_uid == 0:
        raise AssignmentError("--user must be an unprivileged user, not root")
    return entry.pw_uid, entry.pw_gid


def _bwrap_works() -> str | None:
    """None if a bwrap sandbox starts here, else why not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    args = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-net"]
    if os.geteuid() != 0:
        args.append("--unshare-user")
    args += _filesystem(Path("/usr"), Limits()) + [sys.executable, "-c", "pass"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return (f"bubblewrap cannot start a sandbox here ({proc.stderr.strip()[:300] or proc.returncode}); "
                "user or mount namespaces may be disabled (kernel.unprivileged_userns_clone, a container "
                "without CAP_SYS_ADMIN)")
    return None


def _uid_can_run_python(uid: int, gid: int) -> bool:
    try:
        proc = subprocess.run([sys.executable, "-c", "pass"], user=uid, group=gid, extra_groups=[],
                              capture_output=True, timeout=60, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def check_mode(mode: str) -> None:
    """An error unless ``mode`` is one of MODES."""
    if mode not in MODES:
        raise AssignmentError(f"unknown sandbox {mode!r}; expected one of {', '.join(MODES)}")


def choose_sandbox(mode: str = "auto", user: str | int | None = None) -> Sandbox:
    """The sandbox for grading on this machine, probed now (never cached). ``mode``: "auto" or "bwrap"
    (an error naming the cause if bubblewrap cannot start here; never a fallback) or "none" (explicit,
    unconfined, warned). ``user``: the unprivileged user to run student code as when the grader is root
    (default ``nobody``); a root grader whose user cannot run Python is an error, never a run as root."""
    check_mode(mode)
    notes: list[str] = []
    uid_gid = _resolve_user(user) if os.geteuid() == 0 else None
    if os.geteuid() != 0:
        notes.append("the grader is not root, so student code runs under your own uid "
                     "(confined by the sandbox's namespaces where bubblewrap works)")
    kind = "none"
    if mode in ("auto", "bwrap"):
        why_not = _bwrap_works()
        if why_not is None:
            kind = "bwrap"
        else:
            raise AssignmentError(f"--sandbox {mode}: {why_not}; refusing to grade without the sandbox "
                                  "(--sandbox none runs student code unconfined, for a self-check on your own machine)")
    if kind == "none":
        notes.append("UNSANDBOXED: student code runs without a private filesystem, network or PID namespace: "
                     "it can read (and, where its uid may, write) files outside the grading folder, reach the "
                     "network, and processes that start their own session can outlive the run")
        if uid_gid is not None and not _uid_can_run_python(*uid_gid):
            raise AssignmentError(f"cannot drop to uid {uid_gid[0]}: it cannot run the Python interpreter "
                                  f"{sys.executable} (a virtual environment in root's home?); refusing to run "
                                  "student code as root: install Python where that uid can read it, or pass --user")
    box = Sandbox(kind, uid_gid, notes)
    for note in notes:
        warnings.warn(f"minise grader: {note}", SandboxWarning, stacklevel=2)
    return box
