"""Solution markers: finding the marked regions of the reference code and taking them out.

Inside a function body of the reference code, the lines a student should write sit between two
comments tagged with the assignment and the part they belong to::

    def backward(self, gy):
        (s,) = self.saved
        # BEGIN SOLUTION autograd/sigmoid
        return gy * s * (1 - s)
        # END SOLUTION

The markers are plain comments, so the reference package runs unchanged. :func:`strip_solutions`
replaces each region by one ``raise NotImplementedError(...)`` line.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import stat
import tokenize
from dataclasses import dataclass
from pathlib import Path

from .plugin import assignment_of

__all__ = ["ASSIGNMENTS", "AssignmentError", "Region", "assignment_of", "find_regions", "strip_solutions",
           "parse_only", "Part", "find_parts", "manifest_parts", "read_regular"]

# name -> what the student builds (the parts are found in the code from the markers)
ASSIGNMENTS: dict[str, str] = {
    "autograd": "reverse-mode autograd and the elementwise ops (backprop order, broadcasting, ReLU, sigmoid)",
    "conv": "conv2d and pooling, forward and backward (im2col, col2im, max and average pooling)",
    "se": "the SE block and the SE-ResNet module (squeeze, excitation, scale, batch norm backward)",
    "training": "a training loop that reaches a stated accuracy on a small dataset within a stated time",
}

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?P<tag>[A-Za-z0-9_]+/[A-Za-z0-9_.]+)\s*$")
END = re.compile(r"^[ \t]*# END SOLUTION\s*$")


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


def parse_only(only: str | None) -> set[str] | None:
    """``"conv,se"`` -> ``{"conv", "se"}`` (None or empty: every assignment); unknown names are an error."""
    if not only:
        return None
    names = {n.strip() for n in only.split(",") if n.strip()}
    unknown = names - set(ASSIGNMENTS)
    if unknown:
        raise AssignmentError(f"unknown assignment(s) {', '.join(sorted(unknown))}; "
                              f"expected some of {', '.join(ASSIGNMENTS)}")
    return names


@dataclass(frozen=True)
class Part:
    """One part to write, as a student meets it: where (file and function) and its maths (the docstring of
    the function holding the region, or of its class when the method has none)."""

    tag: str
    file: str        # relative to the folder above the package: "minise/functional/activation.py"
    function: str    # "Sigmoid.backward"
    line: int        # 1-based line of the BEGIN marker
    maths: str


def find_parts(package: str | Path) -> dict[str, Part]:
    """Every marked part of a package (reference or student copy: a stub keeps its function and docstring)."""
    package = Path(package)
    parts: dict[str, Part] = {}
    for py in sorted(package.rglob("*.py")):
        if py.relative_to(package).parts[0] == "_kit":  # a wheel's copy of the tests, not the package
            continue
        text = read_regular(py)  # a student copy's too (a self-check): never a pipe or a link
        if text is None:
            continue
        if "# BEGIN SOLUTION" not in text and "raise NotImplementedError(\"assignment '" not in text:
            continue
        tags = [(r.tag, r.begin + 1) for r in find_regions(text, str(py))]
        tags += [(f"{m.group(1)}/{m.group(2)}", text.count("\n", 0, m.start()) + 1)
                 for m in _STUB.finditer(text)]
        if not tags:
            continue
        tree = ast.parse(text)
        rel = (Path(package.name) / py.relative_to(package)).as_posix()
        for tag, line in tags:
            function, maths = _enclosing(tree, line)
            parts[tag] = Part(tag, rel, function, line, maths)
    return parts


_STUB = re.compile(r"raise NotImplementedError\(\"assignment '([A-Za-z0-9_]+)', part '([A-Za-z0-9_.]+)'")


def _enclosing(tree: ast.Module, line: int) -> tuple[str, str]:
    """The qualified name of the innermost function around ``line`` and the nearest docstring on the way out."""
    names: list[str] = []
    docs: list[str] = []
    body = tree.body
    while True:
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.lineno <= line <= (n.end_lineno or n.lineno)), None)
        if node is None:
            break
        names.append(node.name)
        docs.append(ast.get_docstring(node) or "")
        body = node.body
    maths = next((d for d in reversed(docs) if d), "")
    return ".".join(names), maths


def manifest_parts(copy: str | Path) -> dict[str, Part]:
    """The parts a student copy was made with, from its ASSIGNMENTS.json (written by ``make``): what a
    self-check names once the student has replaced the stubs. Anything malformed is left out."""
    text = read_regular(Path(copy) / "ASSIGNMENTS.json")
    try:
        where = json.loads(text).get("where", {}) if text is not None else {}
    except (ValueError, AttributeError):
        return {}
    parts = {}
    for tag, w in (where.items() if isinstance(where, dict) else []):
        try:
            parts[str(tag)] = Part(str(tag), str(w["file"]), str(w["function"]), int(w["line"]), str(w["maths"]))
        except (KeyError, TypeError, ValueError):
            continue
    return parts


MAX_TEXT_BYTES = 4 << 20
"""The most of one student file the grader reads outside the sandbox (source, manifest)."""


def read_regular(path: Path, most: int = MAX_TEXT_BYTES) -> str | None:
    """The first ``most`` bytes of ``path`` as text if it is a regular file (not a link, pipe or device;
    opened without blocking, checked on the open file), else None. For reading a student's files outside
    the sandbox."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(most).decode("utf-8", errors="replace")
