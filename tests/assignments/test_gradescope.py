"""``minise assignments autograder``: the zip Gradescope expects, and the results.json its run writes,
checked against our transcription of Gradescope's documented format (fixtures/) and end to end in a
folder laid out as Gradescope lays out /autograder. The instructor's file: ``make`` leaves it out."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minise import assignments as A
from minise.assignments import gradescope

from .test_assignments import REPO

SCHEMA = json.loads((Path(__file__).parent / "fixtures" / "gradescope_results.schema.json").read_text())


def validate(value, schema=SCHEMA, where="results.json") -> None:
    """The subset of JSON Schema the fixture uses: type, enum, required, properties,
    additionalProperties false, items, minimum."""
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float)}
    if "type" in schema:
        assert isinstance(value, kinds[schema["type"]]) and not isinstance(value, bool), \
            f"{where}: expected {schema['type']}, got {value!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} is not one of {schema['enum']}"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key!r}"
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), f"{where}: unknown keys {sorted(set(value) - set(props))}"
        for key, sub in props.items():
            if key in value:
                validate(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{where}[{i}]")


def a_result() -> dict:
    row = {"parts": ["conv/forward"], "error_type": None, "message": ""}
    return {"assignments": {
        "conv": {"score": 0.5, "passed": 1, "total": 2, "errors": [], "tests": [
            {**row, "test": "tests/x.py::test_a", "passed": True},
            {**row, "test": "tests/x.py::test_b", "passed": False, "error_type": "AssertionError",
             "message": "∂L/∂x: 3 of 9 values differ"}]},
        "se": {"score": 0.0, "passed": 0, "total": 0, "tests": [], "errors": ["tests/y.py could not be loaded"]}}}


def test_results_follow_gradescopes_format():
    results = gradescope.gradescope_results(a_result(), points=10.0, seconds=12.4)
    validate(results)
    assert results["score"] == pytest.approx(5.0)
    assert results["execution_time"] == 12
    assert sum(t["max_score"] for t in results["tests"]) == pytest.approx(20.0)
    failed = [t for t in results["tests"] if t["status"] == "failed"]
    assert [t["name"] for t in failed] == ["tests/x.py::test_b", "se: could not be graded"]
    assert "AssertionError: ∂L/∂x" in failed[0]["output"] and "could not be loaded" in failed[1]["output"]


def test_the_validator_rejects_what_gradescope_would():
    bad = [{"tests": [{"name": "x", "score": 1}]}, {"tests": [], "visibility": "public"},
           {"tests": [{"name": "x", "score": -1, "max_score": 1}]}, {"score": 1}]
    for results in bad:
        with pytest.raises(AssertionError):
            validate(results)


def test_the_autograder_zip_holds_what_gradescope_runs(tmp_path):
    out = tmp_path / "autograder.zip"
    assert A.main(["autograder", str(out), "--only", "conv,se", "--points", "50"]) == 0
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        for script in ("setup.sh", "run_autograder"):
            assert script in names
            assert stat.S_IMODE(z.getinfo(script).external_attr >> 16) & 0o111, f"{script} is not executable"
        run = z.read("run_autograder").decode()
        assert "--only conv,se" in run and "--points 50" in run
        assert "bubblewrap" in z.read("setup.sh").decode()
    assert "minise/assignments/grader.py" in names and "tests/assignments/test_graded_conv.py" in names
    assert not any("__pycache__" in n for n in names)
    assert A.main(["autograder", str(tmp_path / "x.tar")]) == 2


def gradescope_root(tmp_path: Path, zip_path: Path) -> Path:
    """A folder laid out as Gradescope lays out /autograder: source/ (the zip), run_autograder, submission/,
    results/."""
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "run_autograder").chmod(0o755)
    (root / "submission").mkdir()
    (root / "results").mkdir()
    return root


def run_autograder(root: Path) -> dict:
    env = {**os.environ, "MINISE_AUTOGRADER_ROOT": str(root), "MINISE_AUTOGRADER_PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(root / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    validate(results)
    return results


def test_the_run_grades_a_submission_end_to_end(tmp_path):
    gradescope.build_autograder(tmp_path / "ag.zip", only={"autograd"}, points=40.0)
    root = gradescope_root(tmp_path, tmp_path / "ag.zip")
    # students upload their copy; here a copy whose autograd solutions are the reference's, zipped in a folder
    shutil.copytree(REPO / "minise", root / "submission" / "my-copy" / "minise",
                    ignore=shutil.ignore_patterns("__pycache__"))
    results = run_autograder(root)
    assert results["score"] == pytest.approx(40.0)
    assert results["tests"] and all(t["status"] == "passed" for t in results["tests"])
    assert all(t["tags"][0] == "autograd" for t in results["tests"])


def test_the_run_scores_an_unusable_submission_zero_with_the_reason(tmp_path):
    gradescope.build_autograder(tmp_path / "ag.zip", only={"conv", "se"}, points=10.0)
    root = gradescope_root(tmp_path, tmp_path / "ag.zip")
    (root / "submission" / "notes.txt").write_text("I could not finish")
    results = run_autograder(root)
    assert results["score"] == 0.0
    assert [t["name"] for t in results["tests"]] == ["conv: could not be graded", "se: could not be graded"]
    assert "no minise/ package" in results["output"]
