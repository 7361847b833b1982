"""``minise assignments grade-all``: a folder of submissions into one gradebook.

Every subfolder or archive (.zip, .tar, .tar.gz, .tgz) of SUBMISSIONS is one student. Archives are
unpacked into a private folder, safely: only folders and regular files are taken (no links, no
devices), no name may leave the folder (absolute paths, ``..``), and there are caps on the number
of members and the unpacked size. Students are graded in parallel (``jobs``), each in its own
sandbox (:func:`.grader.grade`). Each gets one CSV row per assignment, and a JSON file with the
failing tests and their reasons; a broken, empty or malicious submission gets its rows with the
reason and never stops the batch.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from .grader import DEFAULT_TIME_LIMIT, DEFAULT_TIMEOUT, check_seed, find_package, grade, new_seed, write_atomically
from .markers import ASSIGNMENTS, AssignmentError
from .sandbox import Sandbox, check_mode

__all__ = ["grade_all", "extract_archive", "ARCHIVES", "MAX_MEMBERS", "MAX_UNPACKED_BYTES", "COLUMNS"]

ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_MEMBERS = 5000
MAX_UNPACKED_BYTES = 200 << 20
COLUMNS = ["student", "assignment", "score", "passed", "total", "status", "reason", "seed"]


def _safe_name(name: str, is_dir: bool) -> PurePosixPath | None:
    """An archive member's name as a relative path that stays inside the folder, or an error; None for the
    folder itself (``.`` or ``./``, what ``tar -C dir .`` writes first)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise AssignmentError(f"the archive holds a path that leaves its folder: {name!r}")
    if not path.parts:
        if is_dir and name.strip("./") == "":
            return None
        raise AssignmentError(f"the archive holds a member with no name: {name!r}")
    return path


def _write_member(root: Path, rel: PurePosixPath, data: io.BufferedIOBase, budget: list[int]) -> None:
    target = root.joinpath(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    for parent in [target.parent, *target.parent.parents]:  # never write through a link made earlier
        if parent == root:
            break
        if parent.is_symlink():
            raise AssignmentError(f"the archive writes through a link: {rel}")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := data.read(1 << 16):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise AssignmentError(f"the archive unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB")
            out.write(chunk)


def extract_archive(archive: Path, dest: Path) -> list[str]:
    """Unpack ``archive`` into the (new, empty) folder ``dest``, safely; returns notes on what was left out."""
    notes: list[str] = []
    budget = [MAX_UNPACKED_BYTES]
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                members = z.infolist()
                if len(members) > MAX_MEMBERS:
                    raise AssignmentError(f"the archive has more than {MAX_MEMBERS} members")
                for m in members:
                    rel = _safe_name(m.filename, m.is_dir())
                    # the Unix mode, when the archiver wrote one: no file-type bits (zipfile.writestr writes
                    # 0o600 alone, Windows tools nothing) means a regular file
                    mode = m.external_attr >> 16
                    if rel is None:
                        continue
                    if m.is_dir():
                        dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                    elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                        notes.append(f"left out {m.filename} (not a regular file)")
                    else:
                        with z.open(m) as data:
                            _write_member(dest, rel, data, budget)
        else:
            with tarfile.open(archive) as t:
                count = 0
                for m in t:
                    count += 1
                    if count > MAX_MEMBERS:
                        raise AssignmentError(f"the archive has more than {MAX_MEMBERS} members")
                    rel = _safe_name(m.name, m.isdir())
                    if rel is None:
                        continue
                    if m.isdir():
                        dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                    elif m.isreg():
                        data = t.extractfile(m)
                        assert data is not None
                        _write_member(dest, rel, data, budget)
                    else:
                        notes.append(f"left out {m.name} (not a regular file)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise AssignmentError(f"cannot unpack {archive.name}: {exc}") from None
    return notes


def _student_name(entry: Path) -> str:
    name = entry.name
    for ext in ARCHIVES:
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return name


def _file_name(student: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", student).lstrip(".") or "student"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}-{i}"
    taken.add(name)
    return name


def _grade_one(entry: Path, only: set[str] | None, options: dict[str, Any]) -> dict[str, Any]:
    """One submission -> its result (or the reason it could not be graded); never raises."""
    started = time.monotonic()
    notes: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="minise-submission-") as tmp:
            if entry.is_symlink():
                raise AssignmentError("the submission is a link; expected a folder or an archive")
            if entry.is_dir():
                folder = entry
            elif entry.is_file() and entry.name.lower().endswith(ARCHIVES):
                folder = Path(tmp, "unpacked")
                notes += extract_archive(entry, folder)
            else:
                raise AssignmentError("not a folder or an archive (.zip, .tar, .tar.gz, .tgz)")
            if not any(folder.iterdir()):
                raise AssignmentError("the submission is empty")
            found = find_package(folder)
            if found is None:
                raise AssignmentError("no minise/ package (with __init__.py) in the submission")
            result = grade(found, only, **options)
            result["notes"] = notes + result.get("notes", [])
    except AssignmentError as exc:
        result = {"error": str(exc), "notes": notes}
    except Exception as exc:  # the batch goes on whatever one submission does
        result = {"error": f"the grader failed on this submission: {type(exc).__name__}: {exc}", "notes": notes}
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def grade_all(submissions: str | os.PathLike, out: str | os.PathLike, details: str | os.PathLike | None = None,
              jobs: int = 1, only: set[str] | None = None, tests_dir: str | os.PathLike | None = None,
              time_limit: float = DEFAULT_TIME_LIMIT, timeout: float = DEFAULT_TIMEOUT,
              sandbox: Sandbox | str = "auto", user: str | int | None = None,
              progress: Callable[[str], Any] | None = None, seed: int | None = None) -> list[dict[str, Any]]:
    """Grade every submission in ``submissions``; write the gradebook CSV ``out`` and one JSON per student
    in ``details`` (default: next to ``out``, folder ``<out stem>_details``). Returns the CSV rows.

    ``seed``: the graded tests' random inputs, one for the whole batch (every student is graded on the
    same inputs, and the reference runs once); default fresh randomness. It is in each row and each
    student's JSON, so any grade can be reproduced with ``grade --seed``."""
    folder = Path(submissions)
    if not folder.is_dir():
        raise AssignmentError(f"{folder} is not a folder of submissions")
    out = Path(out)
    details = Path(details) if details is not None else out.with_name(out.stem + "_details")
    details.mkdir(parents=True, exist_ok=True)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise AssignmentError(f"{folder} holds no submissions")
    if not isinstance(sandbox, Sandbox):
        check_mode(sandbox)  # a usage error before any student, not an error row for each
    check_seed(seed)
    seed = new_seed() if seed is None else seed
    if progress is not None:
        progress(f"grading seed {seed} (grade again on the same inputs with --seed {seed})")
    # the sandbox is chosen (bwrap probed) again for each student: no verdict outlives one student's run
    options = dict(tests_dir=tests_dir, time_limit=time_limit, timeout=timeout, sandbox=sandbox, user=user,
                   seed=seed)
    chosen = sorted(only) if only else list(ASSIGNMENTS)
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [(entry, pool.submit(_grade_one, entry, only, options)) for entry in entries]
        for entry, future in futures:
            result = future.result()
            student = _student_name(entry)
            write_atomically(details / f"{_file_name(student, taken)}.json",
                             json.dumps(_details(student, result), indent=2) + "\n")
            for name in chosen:
                rows.append(_row(student, name, result) | {"seed": seed})
            if progress is not None:
                summary = result.get("error") or ", ".join(
                    f"{n} {_percent(a['score'])}" for n, a in result["assignments"].items())
                progress(f"{student}: {summary} ({result['seconds']:.0f} s)")
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(out, text.getvalue())
    return rows


def _percent(score: float | None) -> str:
    return "not graded" if score is None else f"{100 * score:.0f}%"


def _row(student: str, name: str, result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        # not graded (the sandbox did not start, no package, ...): no score, which the CSV leaves blank
        return {"student": student, "assignment": name, "score": None, "passed": 0, "total": 0, "status": "error",
                "reason": result["error"].splitlines()[0][:300]}
    a = result["assignments"][name]
    reason = a["errors"][0].splitlines()[0][:300] if a["errors"] else ""
    score = None if a["score"] is None else round(a["score"], 4)  # None: the instructor's tests did not run
    return {"student": student, "assignment": name, "score": score, "passed": a["passed"],
            "total": a["total"], "status": "error" if a["errors"] else "graded", "reason": reason}


def _details(student: str, result: dict[str, Any]) -> dict[str, Any]:
    """The per-student JSON: scores, and every failing test with its reason."""
    if "error" in result:
        return {"student": student, "error": result["error"], "notes": result.get("notes", []),
                "seconds": result["seconds"]}
    return {"student": student, "seconds": result["seconds"], "seed": result.get("seed"),
            "notes": result.get("notes", []),
            "sandbox": result.get("sandbox"),
            "assignments": {n: {"score": a["score"], "passed": a["passed"], "total": a["total"], "errors": a["errors"],
                                "failing": [{k: t[k] for k in ("test", "error_type", "message")}
                                            for t in a["tests"] if not t["passed"]]}
                            for n, a in result["assignments"].items()}}
