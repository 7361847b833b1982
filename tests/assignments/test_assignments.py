"""The assignment tooling proves itself: the reference scores 100%, a fresh student copy imports
and scores 0%, putting reference solutions back passes exactly the tests that need only them, and
every known-wrong solution in wrong/ fails the graded tests it names.

Each grading run is a pytest subprocess over all graded tests (a few seconds), so the default run
groups the wrong solutions into a few copies (solutions whose tests do not overlap share a copy);
the exhaustive versions are marked slow. This file and wrong/ are the instructor's: ``make``
leaves them out of student copies.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from minise import assignments as A
from minise.assignments import handout

REPO = A.project_root()
WRONG = Path(__file__).parent / "wrong"
# grading seeds: fixed here, so that a failure can be reproduced (a real grading draws a fresh one)
GRADING_SEEDS = (20181, 7_000_000_000_000_000_001, 2**63 - 1)


# ------------------------------------------------------------------ regions, copies, restoring
def regions_by_tag(root: Path) -> dict[str, tuple[Path, A.Region]]:
    """Every marked region under root/minise, by tag (each tag marks exactly one region)."""
    found: dict[str, tuple[Path, A.Region]] = {}
    for py in sorted((root / "minise").rglob("*.py")):
        for r in A.find_regions(py.read_text(encoding="utf-8"), str(py)):
            assert r.tag not in found, f"{r.tag} marks two regions ({found[r.tag][0]} and {py})"
            found[r.tag] = (py, r)
    return found


REFERENCE_REGIONS = regions_by_tag(REPO)


def reference_copy(root: Path) -> Path:
    """A student folder holding the reference package (all that grading takes from a student)."""
    shutil.copytree(REPO / "minise", root / "minise", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def stub(tag: str) -> str:
    assignment, part = tag.split("/")
    return f"raise NotImplementedError(\"assignment '{assignment}', part '{part}': "


def restore(copy: Path, tags) -> None:
    """Put the reference regions of ``tags`` back into a student copy, in place of their stubs."""
    for tag in tags:
        ref_file, region = REFERENCE_REGIONS[tag]
        target = copy / ref_file.relative_to(REPO)
        lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.strip().startswith(stub(tag))]
        assert len(hits) == 1, f"{target}: expected one stub of {tag}, found {len(hits)}"
        ref_lines = ref_file.read_text(encoding="utf-8").splitlines(keepends=True)
        lines[hits[0]:hits[0] + 1] = ref_lines[region.begin:region.end + 1]
        target.write_text("".join(lines), encoding="utf-8")


def outcomes(result: dict) -> dict[str, dict]:
    """test id -> its row of the grade table (all assignments together)."""
    return {t["test"]: t for a in result["assignments"].values() for t in a["tests"]}


def passing(result: dict) -> set[str]:
    return {name for name, t in outcomes(result).items() if t["passed"]}


# ------------------------------------------------------------------ the wrong-solution bank
@dataclass
class Wrong:
    """One known-wrong solution: a change to one reference region, and the tests it must fail."""

    path: Path
    tag: str
    title: str
    caught_by: list[str] = field(default_factory=list)
    missed_by: list[str] = field(default_factory=list)
    fails_with: str = "AssertionError"
    hunks: list[tuple[list[str] | None, list[str]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def parse_wrong(path: Path) -> Wrong:
    """Read wrong/NAME.txt: comment lines (the first one 'TAG: title'; fields 'caught by:',
    'missed by:', 'fails with:'), then hunks: '--- reference' lines to find in the region and
    '+++ wrong' lines to put in their place (a '+++ wrong' with no '--- reference' before it
    replaces the whole region)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    first = lines[0].lstrip("# ").strip()
    tag, _, title = first.partition(": ")
    wrong = Wrong(path, tag, title)
    i = 0
    while i < len(lines) and not lines[i].startswith(("--- reference", "+++ wrong")):
        text = lines[i].lstrip("#").strip()
        for key, attr in (("caught by:", "caught_by"), ("missed by:", "missed_by")):
            if text.startswith(key):
                getattr(wrong, attr).append(text[len(key):].strip())
        if text.startswith("fails with:"):
            wrong.fails_with = text[len("fails with:"):].strip()
        i += 1
    ref: list[str] | None = None
    while i < len(lines):
        if lines[i].startswith("--- reference"):
            ref, i = [], i + 1
            while not lines[i].startswith("+++ wrong"):
                ref.append(lines[i])
                i += 1
        assert lines[i].startswith("+++ wrong"), f"{path.name}: expected '+++ wrong' at line {i + 1}"
        new, i = [], i + 1
        while i < len(lines) and not lines[i].startswith("--- reference"):
            new.append(lines[i])
            i += 1
        while new and not new[-1].strip():
            new.pop()
        wrong.hunks.append((ref, new))
        ref = None
    return wrong


def apply_wrong(copy: Path, wrong: Wrong) -> None:
    """Replace lines of the (reference) region ``wrong.tag`` in ``copy`` as the file says."""
    ref_file, _ = REFERENCE_REGIONS[wrong.tag]
    target = copy / ref_file.relative_to(REPO)
    lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    (region,) = [r for r in A.find_regions("".join(lines)) if r.tag == wrong.tag]
    body = [line.rstrip("\n") for line in lines[region.begin + 1:region.end]]
    for ref, new in wrong.hunks:
        if ref is None:
            body = [region.indent + line if line.strip() else "" for line in new]
            continue
        ref_stripped = [line.strip() for line in ref]
        starts = [k for k in range(len(body) - len(ref) + 1)
                  if [line.strip() for line in body[k:k + len(ref)]] == ref_stripped]
        assert len(starts) == 1, (f"{wrong.name} no longer applies to the reference {wrong.tag}: its "
                                  f"'--- reference' lines occur {len(starts)} times in the region")
        k = starts[0]
        pad = body[k][:len(body[k]) - len(body[k].lstrip())]
        base = len(ref[0]) - len(ref[0].lstrip())
        body[k:k + len(ref)] = [pad + line[base:] if line.strip() else "" for line in new]
    lines[region.begin + 1:region.end] = [line + "\n" for line in body]
    target.write_text("".join(lines), encoding="utf-8")


BANK = sorted((parse_wrong(p) for p in WRONG.glob("*.txt")), key=lambda w: w.name)


def matching(patterns: list[str], tests) -> set[str]:
    """Tests whose name (the part after '::') matches one of the patterns ('*' matches anything;
    brackets are the test's parameters, not fnmatch's character sets)."""
    escaped = ["".join({"[": "[[]", "]": "[]]"}.get(ch, ch) for ch in p) for p in patterns]
    return {t for t in tests for p in escaped if fnmatch.fnmatchcase(t.split("::", 1)[1], p)}


def check_caught(wrong: Wrong, result: dict, replaced: set[str]) -> None:
    """The tests named 'caught by' fail (with the stated error) and depend on no other replaced
    region; the tests named 'missed by' pass."""
    rows = outcomes(result)
    caught = matching(wrong.caught_by, rows)
    missed = matching(wrong.missed_by, rows)
    assert caught, f"{wrong.name}: no graded test matches 'caught by' {wrong.caught_by}"
    assert not wrong.missed_by or missed, f"{wrong.name}: no graded test matches 'missed by' {wrong.missed_by}"
    for test in sorted(caught):
        row = rows[test]
        assert wrong.tag in row["parts"], f"{wrong.name}: {test} does not even need {wrong.tag}"
        others = (set(row["parts"]) & replaced) - {wrong.tag}
        assert not others, f"{wrong.name}: {test} also needs {others}, replaced in the same copy"
        assert not row["passed"], f"{wrong.name} passes {test}, which should catch it"
        assert row["error_type"] == wrong.fails_with, (
            f"{wrong.name}: {test} failed with {row['error_type']}, expected {wrong.fails_with} "
            f"(has the reference changed under the wrong solution?): {row['message']}")
    for test in sorted(missed):
        assert rows[test]["passed"], f"{wrong.name}: {test} was supposed to miss it: {rows[test]['message']}"


def footprint(wrong: Wrong, parts_of: dict[str, list[str]]) -> set[str]:
    tests = matching(wrong.caught_by + wrong.missed_by, parts_of)
    return {p for t in tests for p in parts_of[t]} | {wrong.tag}


def rounds(bank: list[Wrong], parts_of: dict[str, list[str]]) -> list[list[Wrong]]:
    """Group the bank into copies: two wrong solutions share one only if neither's named tests
    need the other's region (then each one's failures are its own)."""
    groups: list[list[Wrong]] = []
    for w in bank:
        for g in groups:
            if all(o.tag not in footprint(w, parts_of) and w.tag not in footprint(o, parts_of) for o in g):
                g.append(w)
                break
        else:
            groups.append([w])
    return groups


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def reference_grades(tmp_path_factory) -> dict:
    return A.grade(reference_copy(tmp_path_factory.mktemp("reference")), seed=GRADING_SEEDS[0])


@pytest.fixture(scope="module")
def parts_of(reference_grades) -> dict[str, list[str]]:
    return {name: row["parts"] for name, row in outcomes(reference_grades).items()}


# ------------------------------------------------------------------ the markers
def test_every_assignment_has_marked_parts_each_graded_by_its_own_tests(parts_of):
    tags = set(REFERENCE_REGIONS)
    for name in A.ASSIGNMENTS:
        assert any(t.startswith(name + "/") for t in tags), f"assignment {name!r} has no marked region"
    named = {p for parts in parts_of.values() for p in parts}
    assert named <= tags, f"graded tests name parts that no region marks: {sorted(named - tags)}"
    owners = {parts[0] for parts in parts_of.values()}
    assert tags <= owners, f"marked parts that no graded test grades: {sorted(tags - owners)}"


def test_markers_inside_strings_are_not_markers():
    text = 'def f():\n    """\n    # BEGIN SOLUTION autograd/x\n    # END SOLUTION\n    """\n    return 1\n'
    assert A.find_regions(text) == []
    assert A.strip_solutions(text) == text


@pytest.mark.parametrize("text,message", [
    ("def f():\n    # BEGIN SOLUTION nope/x\n    pass\n    # END SOLUTION\n", "unknown assignment 'nope'"),
    ("def f():\n    # BEGIN SOLUTION conv/x\n    pass\n", "never closed"),
    ("# BEGIN SOLUTION conv/x\nx = 1\n# END SOLUTION\n", "inside a function body"),
    ("def f():\n    # BEGIN SOLUTION conv\n    pass\n", "malformed marker"),
])
def test_bad_markers_are_clear_errors(text, message):
    with pytest.raises(A.AssignmentError, match=message):
        A.find_regions(text)


# ------------------------------------------------------------------ the reference and a fresh copy
def check_full_marks(result: dict) -> None:
    for name, a in result["assignments"].items():
        assert not a["errors"], f"{name}: {a['errors']}"
        failed = [t["test"] + ": " + t["message"] for t in a["tests"] if not t["passed"]]
        assert a["total"] > 0 and not failed, f"the reference fails graded tests of {name!r}: {failed}"
        assert a["score"] == 1.0


def test_reference_scores_100_percent(reference_grades):
    check_full_marks(reference_grades)
    assert reference_grades["seed"] == GRADING_SEEDS[0]


@pytest.mark.parametrize("seed", GRADING_SEEDS[1:])
def test_reference_scores_100_percent_under_other_grading_seeds(tmp_path, seed, parts_of):
    result = A.grade(reference_copy(tmp_path), seed=seed)
    check_full_marks(result)
    assert result["seed"] == seed and set(outcomes(result)) == set(parts_of)


def test_a_grading_without_a_seed_draws_one_and_records_it(tmp_path):
    copy = reference_copy(tmp_path / "student")
    seeds = [A.grade(copy, only={"training"})["seed"] for _ in range(2)]
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds) and seeds[0] != seeds[1]
    assert A.grade(copy, only={"training"}, reference_dir=copy / "minise")["seed"] is None  # a self-check


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True, "7"])
def test_a_bad_grading_seed_is_a_clear_error(tmp_path, seed):
    with pytest.raises(A.AssignmentError, match="grading seed must be an integer"):
        A.grade(reference_copy(tmp_path), seed=seed)


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for name in A.COPIED:
        p = root / name
        for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else []):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and "__pycache__" not in rel and not rel.endswith(".pyc"):
                if not any(rel == x or rel.startswith(x + "/") for x in A.INSTRUCTOR_ONLY):
                    out[rel] = f
    return out


def _collapsed(text: str, tags_out: set[str]) -> list[str]:
    """The lines of a file with each marked region of ``tags_out`` (or its stub) as one line '<<tag>>'."""
    lines = text.splitlines()
    for r in reversed(A.find_regions(text)):
        if r.tag in tags_out:
            lines[r.begin:r.end + 1] = [f"<<{r.tag}>>"]
    return [next((f"<<{t}>>" for t in tags_out if line.strip().startswith(stub(t))), line) for line in lines]


def test_fresh_copy_imports_cleanly_and_scores_zero(tmp_path, parts_of):
    student = tmp_path / "student"
    regions = A.make(student)
    assert {r.tag for r in regions} == set(REFERENCE_REGIONS)

    # everything is copied byte for byte, except each solution, which became one `raise` line
    ref_files, copied = _files(REPO), _files(student)
    fast_out = {rel for rel in ref_files if rel.startswith("minise/fast/") and rel != "minise/fast/__init__.py"}
    fast_out |= {f"tests/fast/test_{rel.rsplit('/', 1)[1]}" for rel in fast_out} & set(ref_files)
    for rel in fast_out:  # every fast path solves some region, and all of them were stripped here
        assert not (student / rel).exists(), f"{rel} (a fast path: a second solution) was handed out"
        ref_files.pop(rel)
    assert set(copied) == set(ref_files)
    for rel, f in ref_files.items():
        if rel.endswith(".py"):
            mine = f.read_text(encoding="utf-8")
            if rel.startswith("minise/"):  # the plain-loop references are stubs in the copy
                for pattern in A.REFERENCE_ONLY.values():
                    mine = A.strip_references(mine, pattern, rel)[0]
            theirs = copied[rel].read_text(encoding="utf-8")
            assert _collapsed(theirs, set(REFERENCE_REGIONS)) == _collapsed(mine, set(REFERENCE_REGIONS)), rel
        elif rel == "README.md":  # the copy's README is the students' handout (tests/assignments/test_handout.py)
            assert copied[rel].read_text(encoding="utf-8") == handout.readme(list(A.ASSIGNMENTS)), rel
        else:
            assert copied[rel].read_bytes() == f.read_bytes(), rel
    for rel in A.INSTRUCTOR_ONLY:
        assert not (student / rel).exists(), f"{rel} (the instructor's) was handed out"
    manifest = json.loads((student / "ASSIGNMENTS.json").read_text())
    assert manifest["parts"] == sorted(REFERENCE_REGIONS)
    assert manifest["fast_paths_taken_out"] == sorted(r for r in fast_out if r.startswith("minise/"))

    # it imports cleanly: every module of the package, from the copy and not from here
    modules = ["minise"] + [f"minise.{p.relative_to(student / 'minise').with_suffix('').as_posix().replace('/', '.')}"
                            for p in sorted((student / "minise").rglob("*.py"))
                            if p.name not in ("__init__.py", "__main__.py")]
    code = f"import importlib, minise; [importlib.import_module(m) for m in {modules!r}]; print(minise.__file__)"
    env = {**os.environ, "PYTHONPATH": str(student)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=student, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve().is_relative_to(student.resolve())

    # the student's own copy of the tests does not count: grading uses the instructor's
    for f in (student / "tests" / "assignments").glob("test_graded_*.py"):
        f.write_text("def test_nothing():\n    pass\n", encoding="utf-8")

    result = A.grade(student)
    rows = outcomes(result)
    assert set(rows) == set(parts_of), "a fresh copy must run exactly the reference's graded tests"
    for name, a in result["assignments"].items():
        assert a["score"] == 0.0 and a["passed"] == 0 and not a["errors"], name
    not_stub = {t: r["message"] for t, r in rows.items() if r["error_type"] != "NotImplementedError"}
    assert not not_stub, f"tests that fail for another reason than a missing solution: {not_stub}"


# ------------------------------------------------------------------ restoring parts
def check_restored(tmp_path: Path, restored: set[str], parts_of: dict[str, list[str]]) -> dict:
    student = tmp_path / "student"
    A.make(student)
    restore(student, sorted(restored))
    result = A.grade(student)
    expected = {t for t, parts in parts_of.items() if set(parts) <= restored}
    got = passing(result)
    assert got == expected, (f"restoring {sorted(restored)}: passed but not expected {sorted(got - expected)}; "
                             f"expected but failed {sorted(expected - got)}")
    return result


def test_restoring_one_part_per_assignment_passes_exactly_their_tests(tmp_path, parts_of):
    restored = {"autograd/sigmoid", "conv/max_pool_backward", "se/excite", "training/loop"}
    result = check_restored(tmp_path, restored, parts_of)
    for name in ("autograd", "conv", "se"):
        assert result["assignments"][name]["passed"] > 0, name
    # the training tests also need the student's backprop, linear, ReLU and batch norm backward
    assert result["assignments"]["training"]["passed"] == 0


@pytest.mark.slow
def test_restoring_any_part_or_test_needs_passes_exactly_the_tests_it_completes(tmp_path_factory, parts_of):
    wanted = {frozenset([tag]) for tag in REFERENCE_REGIONS} | {frozenset(p) for p in parts_of.values()}
    for restored in sorted(wanted, key=sorted):
        check_restored(tmp_path_factory.mktemp("restore"), set(restored), parts_of)


# ------------------------------------------------------------------ the wrong-solution bank
def test_the_bank_holds_two_wrong_solutions_per_assignment_and_each_applies():
    for name in A.ASSIGNMENTS:
        assert sum(w.tag.startswith(name + "/") for w in BANK) >= 2, f"fewer than two wrong solutions for {name}"
    for w in BANK:
        assert w.tag in REFERENCE_REGIONS, f"{w.name}: unknown part {w.tag}"
        assert w.caught_by, f"{w.name}: says no test that catches it"
        assert w.hunks, f"{w.name}: changes nothing"


def test_every_wrong_solution_fails_the_tests_that_should_catch_it(tmp_path_factory, parts_of):
    for group in rounds(BANK, parts_of):
        copy = reference_copy(tmp_path_factory.mktemp("wrong"))
        for w in group:
            apply_wrong(copy, w)
        replaced = {w.tag for w in group}
        result = A.grade(copy, only={tag.split("/")[0] for tag in replaced})
        for w in group:
            check_caught(w, result, replaced)
        # and the regions left alone still pass all the tests that need only them
        rows = outcomes(result)
        broken = [t for t, r in rows.items() if not r["passed"] and not set(r["parts"]) & replaced]
        assert not broken, f"tests failing though they need none of {sorted(replaced)}: {broken}"


MEMORISER = next(w for w in BANK if w.name == "autograd__sigmoid_memorised.txt")


def test_a_memorised_solution_passes_the_public_tests_and_scores_zero_when_graded(tmp_path):
    """The attack: run the visible tests once, record each answer by a hash of its inputs, hand in a
    lookup table. It must pass the student's own run (so the attack is real) and fail every test of
    its part in a grading, whose inputs come from the grading seed."""
    copy = reference_copy(tmp_path / "student")
    apply_wrong(copy, MEMORISER)
    shutil.copytree(REPO / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__", "wrong"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINISE_GRADE")} | {"PYTHONPATH": str(copy)}

    def public(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/assignments/test_graded_autograd.py", "-k", "sigmoid"],
                              cwd=copy, env=env | extra, capture_output=True, text=True, timeout=600)

    recording = public(MINISE_MEMORISE="1")
    assert recording.returncode == 0, recording.stdout[-3000:]
    book = sorted((copy / "minise" / "functional" / "sigmoid_answers").glob("*.npy"))
    assert len(book) >= 3, "the recording run wrote no answers"
    replay = public()  # the book alone: no true answer is computed any more
    assert replay.returncode == 0 and " passed" in replay.stdout, replay.stdout[-3000:]
    shutil.rmtree(copy / "tests")

    result = A.grade(copy, only={"autograd"}, seed=GRADING_SEEDS[1])
    rows = outcomes(result)
    memorised = {t: r for t, r in rows.items() if r["parts"][0] == MEMORISER.tag}
    assert memorised and not [t for t, r in memorised.items() if r["passed"]], \
        "a memorised answer passed under a grading seed"
    others = [t for t, r in rows.items() if MEMORISER.tag not in r["parts"] and not r["passed"]]
    assert not others, f"tests that do not need sigmoid failed: {others}"


@pytest.mark.slow
@pytest.mark.parametrize("wrong", BANK, ids=[w.name for w in BANK])
def test_each_wrong_solution_alone(tmp_path, wrong, parts_of):
    copy = reference_copy(tmp_path)
    apply_wrong(copy, wrong)
    result = A.grade(copy, only={wrong.tag.split("/")[0]})
    check_caught(wrong, result, {wrong.tag})


# ------------------------------------------------------------------ the command line
def test_make_refuses_a_non_empty_out_dir(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(A.AssignmentError, match="not an empty folder"):
        A.make(out)
    assert A.main(["make", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".minise-assignment-")]


def test_make_only_strips_the_chosen_assignments(tmp_path, capsys):
    out = tmp_path / "conv-only"
    assert A.main(["make", str(out), "--only", "conv"]) == 0
    assert "solution regions taken out" in capsys.readouterr().out
    for tag, (ref_file, _) in REFERENCE_REGIONS.items():
        text = (out / ref_file.relative_to(REPO)).read_text(encoding="utf-8")
        assert (stub(tag) in text) == tag.startswith("conv/"), tag
    assert json.loads((out / "ASSIGNMENTS.json").read_text())["assignments"].keys() == {"conv"}


def test_unknown_assignment_names_are_a_usage_error(tmp_path, capsys):
    out = tmp_path / "out"
    assert A.main(["make", str(out), "--only", "conv,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown assignment(s) nope" in err and "autograd, conv, se, training" in err
    assert not out.exists()
    assert A.main(["grade", str(tmp_path), "--only", "nope"]) == 2
    assert "unknown assignment(s) nope" in capsys.readouterr().err


# ------------------------------------------------------------------ isolation and robustness
def test_conftest_guard_stops_a_run_that_imports_minise_from_elsewhere(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MINISE_GRADE_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "tests/assignments/test_graded_autograd.py"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode not in (0, 1), proc.stdout[-2000:]
    assert "minise was imported from" in proc.stdout + proc.stderr
    assert not re.search(r"\d+ passed", proc.stdout)


def test_grading_refuses_a_copy_whose_minise_comes_from_elsewhere(tmp_path):
    student = tmp_path / "student"
    (student / "minise").mkdir(parents=True)
    (student / "minise" / "__init__.py").write_text(textwrap.dedent(f"""\
        # a shim that hands out the reference package instead of the student's own
        import importlib.util, sys
        _spec = importlib.util.spec_from_file_location(
            "minise", {str(REPO / 'minise' / '__init__.py')!r}, submodule_search_locations=[{str(REPO / 'minise')!r}])
        _module = importlib.util.module_from_spec(_spec)
        sys.modules["minise"] = _module
        _spec.loader.exec_module(_module)
        """))
    # in the sandbox the reference package does not exist: the shim cannot even load it
    if A.sandbox._bwrap_works() is None:
        result = A.grade(student, only={"autograd"}, sandbox="bwrap")
        assert result["assignments"]["autograd"]["score"] == 0.0
        assert result["assignments"]["autograd"]["passed"] == 0
    # without the sandbox it can, and the grader refuses to grade it
    box = unconfined_box()
    with pytest.raises(A.AssignmentError, match="minise was imported from|imported minise from"):
        A.grade(student, only={"autograd"}, sandbox=box)


GRADED_TINY = '''\
import numpy as np
import pytest

from minise.functional.activation import ReLU, Sigmoid
from minise.functional.arith import sum_to

from ..assignments.checks import assert_close, function_grads, oracle


@pytest.mark.assignment("autograd/sum_to")
def test_quick():
    assert_close(sum_to(np.ones((2, 3)), (3,)), oracle(lambda: np.full(3, 2.0)), "sum_to")


@pytest.mark.assignment("autograd/relu", time_limit=1)
def test_hangs():
    _, (g,) = function_grads(ReLU, [np.ones(3)], np.ones(3))
    assert_close(g, oracle(lambda: np.ones(3)), "ReLU backward")


@pytest.mark.assignment("se/excite")
def test_other_assignment():
    _, (g,) = function_grads(Sigmoid, [np.ones(3)], np.ones(3))
    s = 1 / (1 + np.exp(-1.0))
    assert_close(g, oracle(lambda: np.full(3, s * (1 - s))), "sigmoid backward")
'''


def unconfined_box() -> A.Sandbox:
    """``--sandbox none`` (warned), or a skip with the reason where the grader is root and its drop uid
    cannot run this Python (an interpreter in root's home): the grader then refuses, as it must."""
    if os.geteuid() == 0:
        uid, gid = A.sandbox._resolve_user(None)
        if not A.sandbox._uid_can_run_python(uid, gid):
            pytest.skip(f"uid {uid} cannot run {sys.executable} here, so --sandbox none refuses to grade as root")
    with pytest.warns(A.SandboxWarning, match="UNSANDBOXED"):
        return A.choose_sandbox("none")


def tiny_tests(root: Path, extra: dict[str, str] | None = None) -> Path:
    """A tests folder of the repo's conftest and helpers plus a tiny graded file (and ``extra`` files)."""
    tests = root / "tests"
    (tests / "assignments").mkdir(parents=True)
    for rel in ["__init__.py", "conftest.py", "assignments/__init__.py",
                "assignments/checks.py"]:
        shutil.copy(REPO / "tests" / rel, tests / rel)
    (tests / "tiny").mkdir()
    (tests / "tiny" / "__init__.py").write_text("")
    for name, text in {"tiny/test_tiny.py": GRADED_TINY, **(extra or {})}.items():
        (tests / name).write_text(text)
    return tests


def test_a_hanging_solution_costs_only_its_own_tests(tmp_path, capsys):
    student = reference_copy(tmp_path / "student")
    apply_wrong(student, Wrong(Path("hang.txt"), "autograd/relu", "never returns",
                               hunks=[(None, ["while True:", "    pass"])]))
    tests = tiny_tests(tmp_path)
    json_path = tmp_path / "grades.json"
    assert A.main(["grade", str(student), "--tests", str(tests), "--json", str(json_path)]) == 0
    table = capsys.readouterr().out
    result = json.loads(json_path.read_text())
    rows = outcomes(result)
    assert rows["tests/tiny/test_tiny.py::test_quick"]["passed"]
    hung = rows["tests/tiny/test_tiny.py::test_hangs"]
    assert not hung["passed"] and hung["error_type"] == "TimeoutError", hung
    assert result["assignments"]["autograd"]["score"] == 0.5
    assert result["assignments"]["se"]["score"] == 1.0
    assert "autograd: 1/2 tests passed, score 50%" in table and "FAIL  tests/tiny/test_tiny.py::test_hangs" in table
    assert "limit of 1 s" in table


def test_a_student_package_that_cannot_be_imported_scores_zero_with_the_reason(tmp_path):
    student = reference_copy(tmp_path / "student")
    scale = student / "minise" / "functional" / "scale.py"
    scale.write_text(scale.read_text() + "\ndef broken(:\n")
    result = A.grade(student, tests_dir=tiny_tests(tmp_path))
    for name, a in result["assignments"].items():
        assert a["score"] == 0.0, name
        assert any("SyntaxError" in e for e in a["errors"]), a["errors"]
    assert "could not be graded completely" in A.format_table(result)


def test_a_graded_file_that_cannot_be_loaded_on_the_reference_leaves_its_assignments_ungraded(tmp_path, capsys):
    """The instructor's side failing is no score of 0 for the student: no score, and a non-zero exit."""
    broken = "import pytest\nfrom minise.functional.conv import no_such_function\n\n\n" \
             "@pytest.mark.assignment(\"conv/forward\")\ndef test_x():\n    pass\n"
    tests = tiny_tests(tmp_path, {"tiny/test_broken.py": broken})
    student = reference_copy(tmp_path / "student")
    result = A.grade(student, tests_dir=tests)
    assert result["assignments"]["conv"]["score"] is None
    assert any("no_such_function" in e for e in result["assignments"]["conv"]["errors"])
    assert result["assignments"]["se"]["score"] == 1.0 and not result["assignments"]["se"]["errors"]
    assert A.main(["grade", str(student), "--tests", str(tests)]) == 2
    captured = capsys.readouterr()
    assert "conv: NOT GRADED" in captured.out and "not graded (conv)" in captured.err


# ------------------------------------------------------------------ the student's side: check, seeds
def self_check_mode() -> str:
    """The sandbox a student's check can use here: bwrap where it works, else none (skipped where that
    would have to refuse: root, with a drop uid that cannot run this Python)."""
    if A.sandbox._bwrap_works() is None:
        return "bwrap"
    if os.geteuid() == 0:
        uid, gid = A.sandbox._resolve_user(None)
        if not A.sandbox._uid_can_run_python(uid, gid):
            pytest.skip(f"no bubblewrap, and uid {uid} cannot run {sys.executable}: a check as root must refuse")
    return "none"


SIGMOID_WRONG = "        (s,) = self.saved\n        return s * (1 - s)\n"


def test_check_of_one_part_names_the_element_the_file_and_the_maths(tmp_path, capsys, parts_of):
    student = tmp_path / "student"
    A.make(student, {"autograd"})
    mode = self_check_mode()
    activation = student / "minise" / "functional" / "activation.py"
    text = activation.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    stub_line = next(line for line in lines if line.strip().startswith(stub("autograd/sigmoid")))
    activation.write_text(text.replace(stub_line, SIGMOID_WRONG), encoding="utf-8")  # s(1 − s), no upstream

    assert A.main(["check", "autograd/sigmoid", "--dir", str(student), "--sandbox", mode]) == 1
    out = capsys.readouterr().out
    sigmoid_tests = [t for t, parts in parts_of.items() if parts[0] == "autograd/sigmoid"]
    assert f"autograd: 0/{len(sigmoid_tests)} tests passed" in out
    assert re.search(r"∂L/∂x: \d+ of 45 values differ from the expected; first at index \(0, 0\): "
                     r"expected -?[0-9.e-]+, got -?[0-9.e-]+", out), out
    # the part is found though its stub is gone (from ASSIGNMENTS.json), with its maths
    assert "autograd/sigmoid: you write it in minise/functional/activation.py, Sigmoid.backward" in out
    assert "∂L/∂x = ∂L/∂s · s · (1 − s)" in out
    assert "inputs: the public ones" in out and "a self-check" in out
    assert "relu" not in out.lower(), "a check of one part runs that part's tests only"

    # written right, the same check passes, and so does a check under a grading seed
    activation.write_text(text.replace(stub_line, "        (s,) = self.saved\n        return gs * s * (1 - s)\n"),
                          encoding="utf-8")
    assert A.main(["check", "autograd/sigmoid", "--dir", str(student), "--sandbox", mode]) == 0
    assert f"autograd: {len(sigmoid_tests)}/{len(sigmoid_tests)} tests passed" in capsys.readouterr().out
    assert A.main(["check", "autograd/sigmoid", "--dir", str(student), "--sandbox", mode, "--seed", "5"]) == 0
    assert "inputs: drawn from grading seed 5" in capsys.readouterr().out


def test_check_usage_errors_are_one_line(tmp_path, capsys):
    student = tmp_path / "student"
    A.make(student, {"autograd"})
    assert A.main(["check", "autograd/nope", "--dir", str(student)]) == 2
    err = capsys.readouterr().err
    assert "unknown part 'autograd/nope'; the parts are: autograd/add," in err and "Traceback" not in err
    assert A.main(["check", "nope", "--dir", str(student)]) == 2
    assert "unknown assignment(s) nope" in capsys.readouterr().err
    (tmp_path / "elsewhere").mkdir()
    assert A.main(["check", "--dir", str(tmp_path / "elsewhere")]) == 2
    assert "holds no minise/ package" in capsys.readouterr().err


def test_grade_takes_a_seed_and_records_it(tmp_path, capsys):
    copy = reference_copy(tmp_path / "student")
    out = tmp_path / "grades.json"
    assert A.main(["grade", str(copy), "--only", "training", "--seed", "123", "--json", str(out)]) == 0
    assert "inputs: drawn from grading seed 123 (--seed 123" in capsys.readouterr().out
    assert json.loads(out.read_text())["seed"] == 123
    for bad in ("-1", "x", str(2**63)):
        with pytest.raises(SystemExit) as exc:
            A.main(["grade", str(copy), "--seed", bad])
        assert exc.value.code == 2
        assert "expected an integer from 0 to" in capsys.readouterr().err


# ------------------------------------------------------------------ from a wheel, not a checkout
def test_make_check_and_grade_work_from_a_wheel_install(tmp_path):
    """A wheel carries the course files inside the package (setup.py: minise/_kit), so the tools run with
    no checkout in sight: the wheel is unpacked into a folder of its own and run from elsewhere."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("this Python has no pip to build the wheel with")
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("minise-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    assert "minise/_kit/tests/assignments/test_graded_autograd.py" in names
    assert "minise/_kit/tests/conftest.py" in names and "minise/_kit/tutorials/07_se_block.py" in names
    assert not [n for n in names if "__pycache__" in n]

    env = {k: v for k, v in os.environ.items() if not k.startswith("MINISE_GRADE")} | {"PYTHONPATH": str(site)}
    mode = self_check_mode()

    def minise(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "minise", "assignments", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    student = tmp_path / "student"
    made = minise("make", str(student), "--only", "autograd")
    assert made.returncode == 0, made.stderr
    assert (student / "tests" / "assignments" / "test_graded_autograd.py").is_file()
    assert (student / "tutorials" / "07_se_block.py").is_file()
    assert (student / "README.md").read_text(encoding="utf-8") == handout.readme(["autograd"])
    assert not (student / "minise" / "_kit").exists(), "the wheel's course files went into the copy's package"
    assert stub("autograd/sigmoid") in (student / "minise" / "functional" / "activation.py").read_text()

    checked = minise("check", "autograd/sigmoid", "--dir", str(student), "--sandbox", mode)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "NotImplementedError: assignment 'autograd', part 'sigmoid'" in checked.stdout
    assert "Sigmoid.backward" in checked.stdout

    (student / "tests").rename(tmp_path / "elsewhere")  # grading uses the tests the wheel ships, not the copy's
    graded = minise("grade", str(student), "--only", "autograd", "--sandbox", mode, "--seed", "3")
    assert graded.returncode == 0, graded.stdout + graded.stderr
    result = json.loads((student / "grades.json").read_text())
    assert result["tests_dir"] == str(site / "minise" / "_kit" / "tests")
    assert result["assignments"]["autograd"]["total"] > 0 and result["assignments"]["autograd"]["score"] == 0.0
