"""``minise assignments grade-all``: a folder of submissions (folders and archives) into a gradebook.
Broken, empty and malicious submissions get their rows with the reason; archives are unpacked
safely. The instructor's file: ``make`` leaves it out."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from minise import assignments as A
from minise.assignments import batch

from .test_assignments import REPO, reference_copy, self_check_mode, tiny_tests
from .test_attacks import stubbed_copy


def zip_folder(folder: Path, out: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                z.write(p, prefix + p.relative_to(folder).as_posix())


def add_bytes(t: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))


@pytest.fixture
def submissions(tmp_path) -> Path:
    subs = tmp_path / "submissions"
    subs.mkdir()
    reference_copy(subs / "alice")                                   # a folder: every solution right
    zip_folder(stubbed_copy(tmp_path / "bob"), subs / "bob.zip", prefix="bob-hw/")   # an archive of a folder
    with tarfile.open(subs / "carol.tar.gz", "w:gz") as t:           # a path out of the folder
        add_bytes(t, "minise/__init__.py", b"")
        add_bytes(t, "../escaped.txt", b"pwned")
    with tarfile.open(subs / "dan.tar", "w") as t:                   # a link out of the folder, then a file through it
        link = tarfile.TarInfo("minise")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        t.addfile(link)
        add_bytes(t, "minise/__init__.py", b"pwned")
    (subs / "erin").mkdir()                                          # empty
    (subs / "frank.txt").write_text("my homework")                   # not a submission
    (subs / "gina.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    broken = reference_copy(subs / "hugo")                           # a package that cannot be imported
    (broken / "minise" / "functional" / "scale.py").write_text("def broken(:\n")
    return subs


def test_grade_all_gives_every_submission_its_rows(tmp_path, submissions, capsys):
    tests = tiny_tests(tmp_path / "instructor")
    out = tmp_path / "gradebook.csv"
    assert A.main(["grade-all", str(submissions), "--out", str(out), "--tests", str(tests),
                   "--only", "autograd,se", "--jobs", "2"]) == 1  # some submissions could not be graded
    captured = capsys.readouterr()
    assert "gradebook written" in captured.out
    assert "could not be graded" in captured.err
    rows = list(csv.DictReader(out.open()))
    assert [r["student"] for r in rows] == [s for s in ["alice", "bob", "carol", "dan", "erin", "frank.txt", "gina",
                                                        "hugo"] for _ in range(2)]
    by = {(r["student"], r["assignment"]): r for r in rows}
    assert by["alice", "autograd"]["score"] == "1.0" and by["alice", "se"]["score"] == "1.0"
    assert by["alice", "autograd"]["status"] == "graded"
    assert by["bob", "autograd"]["score"] == "0.0" and by["bob", "autograd"]["status"] == "graded"
    reasons = {s: by[s, "autograd"]["reason"] for s in ("carol", "dan", "erin", "frank.txt", "gina", "hugo")}
    assert "leaves its folder" in reasons["carol"]
    assert not (tmp_path / "__init__.py").exists(), "a file was written through the archive's link"
    assert "empty" in reasons["erin"]
    assert "not a folder or an archive" in reasons["frank.txt"]
    assert "cannot unpack" in reasons["gina"]
    assert "could not" in reasons["hugo"]
    for s in ("carol", "erin", "frank.txt", "gina"):  # not graded at all: no score
        assert by[s, "autograd"]["status"] == "error" and by[s, "autograd"]["score"] == "", s
    for s in ("dan", "hugo"):  # graded, but their package could not load: 0
        assert by[s, "autograd"]["status"] == "error" and by[s, "autograd"]["score"] == "0.0", s
    assert not (tmp_path / "escaped.txt").exists() and not (submissions.parent / "escaped.txt").exists()
    assert not list(tmp_path.glob("**/pwned*"))

    # one grading seed for the batch: printed, in every row and in each student's file
    seeds = {r["seed"] for r in rows}
    assert len(seeds) == 1 and f"grading seed {next(iter(seeds))}" in captured.out

    details = tmp_path / "gradebook_details"
    alice = json.loads((details / "alice.json").read_text())
    assert str(alice["seed"]) == next(iter(seeds))
    assert alice["assignments"]["autograd"]["failing"] == []
    bob = json.loads((details / "bob.json").read_text())
    failing = bob["assignments"]["autograd"]["failing"]
    assert failing and all(f["error_type"] == "NotImplementedError" for f in failing)
    assert "leaves its folder" in json.loads((details / "carol.json").read_text())["error"]


def test_archives_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "MAX_UNPACKED_BYTES", 1000)
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w") as t:
        add_bytes(t, "minise/__init__.py", b"0" * 5000)
    with pytest.raises(A.AssignmentError, match="more than"):
        batch.extract_archive(archive, tmp_path / "out")
    monkeypatch.setattr(batch, "MAX_MEMBERS", 3)
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as z:
        for i in range(5):
            z.writestr(f"f{i}.py", "")
    with pytest.raises(A.AssignmentError, match="more than 3 members"):
        batch.extract_archive(tmp_path / "many.zip", tmp_path / "out2")


def test_grade_all_refuses_what_is_not_a_folder_of_submissions(tmp_path, capsys):
    assert A.main(["grade-all", str(tmp_path / "nope"), "--out", str(tmp_path / "g.csv")]) == 2
    assert "not a folder of submissions" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert A.main(["grade-all", str(tmp_path / "empty"), "--out", str(tmp_path / "g.csv")]) == 2
    assert A.main(["grade-all", str(tmp_path / "empty"), "--out", str(tmp_path / "g.csv"), "--jobs", "0"]) == 2


@pytest.mark.slow
def test_grade_all_50_copies_timing(tmp_path):
    """Course scale: 50 copies of the full assignment set (made by `make` plus the reference solutions
    in a few of them), graded with 2 jobs. Prints the wall time; asserts only the grades."""
    import time

    subs = tmp_path / "subs"
    subs.mkdir()
    handout = tmp_path / "handout"
    A.make(handout)
    for i in range(50):
        if i % 5 == 0:
            reference_copy(subs / f"s{i:02d}")
        else:
            shutil.copytree(handout / "minise", subs / f"s{i:02d}" / "minise")
    started = time.monotonic()
    rows = batch.grade_all(subs, tmp_path / "book.csv", jobs=2)
    seconds = time.monotonic() - started
    print(f"\ngraded 50 copies in {seconds:.0f} s ({seconds / 50:.1f} s per copy, 2 jobs)")
    full = [r for r in rows if r["student"] in {f"s{i:02d}" for i in range(0, 50, 5)}]
    assert all(r["score"] == 1.0 for r in full)
    assert all(r["score"] == 0.0 for r in rows if r not in full)
    assert REPO.exists()


def test_archives_written_by_zipfile_writestr_and_tar_of_dot_are_graded(tmp_path):
    """zipfile.writestr leaves a member's Unix mode without file-type bits (0o600): a regular file. And
    ``tar czf sub.tgz -C dir .`` starts with the member '.', the folder itself."""
    source = reference_copy(tmp_path / "source")
    subs = tmp_path / "submissions"
    subs.mkdir()
    with zipfile.ZipFile(subs / "ada.zip", "w") as z:
        for p in sorted((source / "minise").rglob("*.py")):
            z.writestr(p.relative_to(source).as_posix(), p.read_bytes())
    assert all(stat.S_IFMT(m.external_attr >> 16) == 0 for m in zipfile.ZipFile(subs / "ada.zip").infolist())
    with tarfile.open(subs / "ben.tgz", "w:gz") as t:
        t.add(source, arcname=".", filter=lambda m: None if "__pycache__" in m.name else m)
    assert tarfile.open(subs / "ben.tgz").getnames()[0] == "."
    rows = batch.grade_all(subs, tmp_path / "book.csv", only={"se"}, tests_dir=tiny_tests(tmp_path / "instructor"))
    by = {r["student"]: r for r in rows}
    for student in ("ada", "ben"):
        assert by[student]["status"] == "graded" and by[student]["score"] == 1.0, by[student]


def test_a_fifo_in_a_submission_does_not_hang_the_grader(tmp_path):
    """The grader reviews the student's *.py files outside the sandbox: it must read regular files only."""
    student = reference_copy(tmp_path / "student")
    os.mkfifo(student / "minise" / "wait_for_me.py")
    os.mkfifo(student / "ASSIGNMENTS.json")
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("grading blocked on a FIFO"))
    signal.alarm(120)
    try:
        result = A.grade(student, only={"se"}, tests_dir=tiny_tests(tmp_path / "instructor"))
        checked = A.grade(student, only={"se"}, tests_dir=tiny_tests(tmp_path / "instructor2"),
                          reference_dir=student / "minise", sandbox=self_check_mode())  # a self-check
    finally:
        signal.alarm(0)
    assert result["assignments"]["se"]["score"] == 1.0
    assert "left out wait_for_me.py (not a regular file)" in result["notes"]
    assert checked["assignments"]["se"]["score"] == 1.0
