"""The students' handout: one Markdown file per assignment in ``handouts/``, the single source.

The course site includes the same files (docs/assignments/*.md), and ``minise assignments make``
writes :func:`readme` as the student copy's README.md, so the two cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from .markers import ASSIGNMENTS

__all__ = ["HANDOUTS", "handout", "readme"]

HANDOUTS = Path(__file__).resolve().parent / "handouts"


def handout(name: str) -> str:
    """The handout of one assignment, as Markdown."""
    if name not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {name!r}; expected one of {', '.join(ASSIGNMENTS)}")
    return (HANDOUTS / f"{name}.md").read_text(encoding="utf-8")


def readme(chosen: list[str]) -> str:
    """The student copy's README: a short preface, then the handout of each chosen assignment."""
    preface = ("# minise: your assignments\n\n"
               "Each section below says what to implement and where, the maths, hints, how to check your "
               "own work and how it is graded. The bodies to write raise `NotImplementedError` in this copy.\n\n")
    return preface + "\n".join(handout(n) for n in chosen)
