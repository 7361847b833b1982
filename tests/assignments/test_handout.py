"""The handout has one source: the site's assignment pages include it and the student copy's README is it."""

from __future__ import annotations

from pathlib import Path

from minise.assignments import handout
from minise.assignments.make import make
from minise.assignments.markers import ASSIGNMENTS

ROOT = Path(__file__).resolve().parents[2]


def test_every_assignment_has_a_handout_naming_its_check() -> None:
    for name in ASSIGNMENTS:
        text = handout.handout(name)
        assert f"tests/assignments/test_graded_{name}.py" in text
        assert "$$" in text  # the maths


def test_the_site_includes_the_same_files() -> None:
    for name in ASSIGNMENTS:
        page = (ROOT / "docs" / "assignments" / f"{name}.md").read_text(encoding="utf-8")
        assert f"{{include}} ../../minise/assignments/handouts/{name}.md" in page


def test_the_student_copy_readme_is_the_handout(tmp_path: Path) -> None:
    make(tmp_path / "copy", only={"se", "conv"})
    readme = (tmp_path / "copy" / "README.md").read_text(encoding="utf-8")
    assert readme == handout.readme(["conv", "se"])
    assert handout.handout("se") in readme and handout.handout("autograd") not in readme
