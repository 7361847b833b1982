"""``minise assignments make``: a student copy of the package, its tests and tutorials.

Every marked region of the chosen assignments becomes one ``raise NotImplementedError(...)`` line
(:mod:`.markers`); everything else stays byte for byte, with two exceptions:

- the instructor's own material (:data:`INSTRUCTOR_ONLY`: the bank of known-wrong solutions and the
  tests that prove the tooling) is left out;
- the plain-loop references are taken out when an assignment that they would solve is stripped
  (:data:`REFERENCE_ONLY`): every top-level function named ``*_reference`` and every top-level class
  named ``*Reference`` in ``minise/`` becomes a stub that raises. So a student cannot pass the conv
  assignment by calling ``conv2d_reference`` (or ``Conv2dReference``) instead of writing im2col.
  The rule goes by name, so a reference moved to another module is still taken out;
- the fast paths (``minise/fast/*.py``) that would do the work of a stripped region are left out,
  with their tests (``tests/fast/test_<module>.py``): each fast module names those regions in its
  ``SOLVES`` tuple (:func:`fast_solves`). Without the module the op runs its textbook code, which
  is the student's.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from . import handout
from .markers import ASSIGNMENTS, AssignmentError, Region, find_parts, find_regions, strip_solutions

__all__ = ["COPIED", "INSTRUCTOR_ONLY", "REFERENCE_ONLY", "PACKAGE", "project_root", "course_files", "make",
           "strip_references",
           "ignore_caches", "remove_instructor_only", "fast_solves", "remove_fast_paths"]

# what a student copy contains, relative to the project root (missing entries are skipped)
COPIED = ["minise", "tests", "tutorials", "pyproject.toml", "README.md", "LICENSE"]

# the instructor's material, never handed out: near-miss solutions, and the tests that use them
INSTRUCTOR_ONLY = ["tests/assignments/wrong", "tests/assignments/test_assignments.py",
                   "tests/assignments/test_sandbox.py", "tests/assignments/test_attacks.py",
                   "tests/assignments/test_batch.py", "tests/assignments/test_gradescope.py",
                   "tests/assignments/fixtures"]

# assignment -> the names (regular expression, matched in full) of the reference implementations
# that would solve it: taken out of a copy that strips that assignment
REFERENCE_ONLY: dict[str, str] = {"conv": r"[A-Za-z0-9_]*(_reference|Reference)"}


PACKAGE = Path(__file__).resolve().parent.parent
"""The minise package this module belongs to (the reference solutions)."""
KIT = "_kit"
"""A wheel's copy of the course files (tests/, tutorials/, README.md, ...): minise/_kit, written by setup.py."""


def project_root() -> Path:
    """The folder holding the tests/ and tutorials/ that making and grading assignments use: the source
    checkout this minise was imported from, or, installed from a wheel, the copy it ships (``minise/_kit``)."""
    for root in (PACKAGE.parent, PACKAGE / KIT):
        if (root / "tests" / "conftest.py").is_file():
            return root
    raise AssignmentError(f"no tests/ folder next to the minise package in {PACKAGE.parent}, and none shipped "
                          f"inside it ({PACKAGE / KIT}): reinstall minise from its wheel or a source checkout "
                          "(git clone, then pip install -e .)")


def course_files(source: Path) -> dict[str, Path]:
    """Each entry of :data:`COPIED` that exists, from ``source`` (a checkout or a wheel's kit, whose package is
    the installed one)."""
    found = {}
    for name in COPIED:
        path = source / name
        if name == "minise" and not path.is_dir():
            path = PACKAGE
        if path.exists():
            found[name] = path
    return found


def ignore_caches(folder: str, names: list[str]) -> list[str]:
    """For shutil.copytree: bytecode caches, and a wheel's course kit inside the package."""
    return [n for n in names if n == "__pycache__" or n.endswith(".pyc") or (n == KIT and Path(folder) == PACKAGE)]


def remove_instructor_only(root: Path) -> None:
    for rel in INSTRUCTOR_ONLY:
        p = root / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def strip_references(text: str, pattern: str, path: str = "<text>") -> tuple[str, list[str]]:
    """``text`` with every top-level def/class whose name matches ``pattern`` (in full) replaced by a stub
    of the same name that raises; returns the new text and the names taken out."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise AssignmentError(f"{path}: cannot be read as Python ({exc})") from None
    lines = text.splitlines(keepends=True)
    taken = []
    for node in reversed(tree.body):
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or not re.fullmatch(pattern, node.name):
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        message = (f"{node.name} (a reference implementation) is not part of the student copy: "
                   "write the assignment's own code instead")
        if isinstance(node, ast.ClassDef):
            stub = (f"class {node.name}:\n    \"\"\"Taken out of the student copy.\"\"\"\n\n"
                    f"    def __init__(self, *args, **kwargs):\n        raise NotImplementedError({message!r})\n")
        else:
            stub = (f"def {node.name}(*args, **kwargs):\n    \"\"\"Taken out of the student copy.\"\"\"\n"
                    f"    raise NotImplementedError({message!r})\n")
        lines[first:node.end_lineno] = [stub]
        taken.append(node.name)
    return "".join(lines), sorted(taken)


def fast_solves(text: str, path: str = "<text>") -> tuple[str, ...]:
    """The region tags a fast module declares it solves: its module-level ``SOLVES = ("a/b", ...)``.

    A module without a readable ``SOLVES`` (a tuple of string literals) is an error: a fast path
    that does not say what it solves could hand out a solution."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise AssignmentError(f"{path}: cannot be read as Python ({exc})") from None
    for node in tree.body:
        if (isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
                and any(isinstance(t, ast.Name) and t.id == "SOLVES"
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))):
            value = node.value
            if isinstance(value, ast.Tuple) and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                                                    for e in value.elts):
                return tuple(e.value for e in value.elts)
            break
    raise AssignmentError(f"{path}: a fast path must name the regions it solves: SOLVES = (\"assignment/part\", ...)")


def remove_fast_paths(root: Path, chosen: list[str]) -> list[str]:
    """Delete from ``root`` every ``minise/fast/*.py`` (but ``__init__.py``) that solves a region of a
    chosen assignment, with its ``tests/fast/test_<name>.py``; returns the modules removed."""
    removed = []
    fast = root / "minise" / "fast"
    for py in sorted(fast.glob("*.py")) if fast.is_dir() else []:
        if py.name == "__init__.py":
            continue
        rel = py.relative_to(root).as_posix()
        if any(tag.split("/", 1)[0] in chosen for tag in fast_solves(py.read_text(encoding="utf-8"), rel)):
            py.unlink()
            test = root / "tests" / "fast" / f"test_{py.name}"
            if test.exists():
                test.unlink()
            removed.append(rel)
    return removed


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
    chosen = sorted(only) if only is not None else list(ASSIGNMENTS)
    stripped: list[Region] = []
    references: list[str] = []
    staging = Path(tempfile.mkdtemp(prefix=".minise-assignment-", dir=out.parent))
    try:
        for name, src in course_files(source).items():
            if src.is_dir():
                shutil.copytree(src, staging / name, ignore=ignore_caches)
            elif src.is_file():
                shutil.copy2(src, staging / name)
        remove_instructor_only(staging)
        fast_removed = remove_fast_paths(staging, chosen)
        patterns = [REFERENCE_ONLY[n] for n in chosen if n in REFERENCE_ONLY]
        for py in sorted(staging.rglob("*.py")):
            text = py.read_text(encoding="utf-8")
            rel = py.relative_to(staging).as_posix()
            new = text
            regions = [r for r in find_regions(text, rel) if only is None or r.assignment in only]
            if regions:
                new = strip_solutions(text, only, rel)
                stripped.extend(regions)
            if rel.startswith("minise/"):
                for pattern in patterns:
                    new, taken = strip_references(new, pattern, rel)
                    references.extend(f"{rel}:{name}" for name in taken)
            if new != text:
                compile(new, rel, "exec")  # a stripped file must still be valid Python
                py.write_text(new, encoding="utf-8")
        empty = [n for n in chosen if not any(r.assignment == n for r in stripped)]
        if empty:
            raise AssignmentError(f"no solution regions are marked for assignment(s) {', '.join(empty)}; "
                                  "a copy without them would hand out the solutions (nothing was written)")
        tags = sorted({r.tag for r in stripped})
        where = find_parts(staging / "minise")  # found by their stubs: a solved part has neither marker nor stub
        manifest = {"assignments": {n: ASSIGNMENTS[n] for n in chosen},
                    "parts": tags, "references_taken_out": sorted(references),
                    "fast_paths_taken_out": fast_removed,
                    "where": {t: {"file": where[t].file, "function": where[t].function, "line": where[t].line,
                                  "maths": where[t].maths} for t in tags if t in where}}
        (staging / "ASSIGNMENTS.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(handout.readme(chosen), encoding="utf-8")  # the handout, one source
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return stripped
