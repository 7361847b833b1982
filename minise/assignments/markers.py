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

import io
import re
import tokenize
from dataclasses import dataclass

from .plugin import assignment_of

__all__ = ["ASSIGNMENTS", "AssignmentError", "Region", "assignment_of", "find_regions", "strip_solutions",
           "parse_only"]

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
