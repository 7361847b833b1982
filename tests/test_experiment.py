"""`minise experiment`: suites end to end on tiny generated data, resume, skip, refusal, statistics, Dask."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minise.experiment as experiment
import minise.train
from minise.checkpoint import load_checkpoint
from minise.data.cifar import SPECS
from minise.data.synthetic import make_synthetic, write_cifar_folder
from minise.errors import UserError
from minise.experiment import report, runner, suites
from minise.experiment.report import paired_stats, summary_stats

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 64, 32

# two configurations of the smallest CIFAR ResNet (6n + 2, n = 1), two epochs of four steps
TINY_SUITE = """
name = "tiny"
title = "tiny suite for the tests"
baseline = "resnet8"
seeds = [0, 1]

[overrides]
epochs = {epochs}
batch_size = 16
lr = 0.05
limit_train = {n_train}
limit_test = {n_test}
eval_batch_size = 32
{data}

[[config]]
name = "resnet8"
model = "resnet8"
paper = 9.5

[[config]]
name = "se_resnet8"
model = "se_resnet8"
reduction = 4
"""


def tiny_suite(tmp_path: Path, epochs: int = 2, synthetic: bool = False, name: str = "tiny.toml",
               n_train: int = N_TRAIN) -> Path:
    """A suite file; ``synthetic``: on minise's generated set (for worker processes, which do not see
    the tests' patched CIFAR sizes), else on the tiny CIFAR-format folder of the ``tiny_cifar`` fixture."""
    path = tmp_path / name
    path.write_text(TINY_SUITE.format(epochs=epochs, n_train=n_train, n_test=N_TEST,
                                      data='data = "synthetic"' if synthetic else ""))
    return path


pytestmark = pytest.mark.usefixtures("offline")


@pytest.fixture
def tiny_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CIFAR-10 folder in the python format with 64 training and 32 test images (and SPECS that expect them)."""
    monkeypatch.setitem(SPECS, "cifar10", dataclasses.replace(SPECS["cifar10"], train_count=N_TRAIN,
                                                             test_count=N_TEST))
    root = tmp_path / "data"
    write_cifar_folder(root, make_synthetic(N_TRAIN, N_TEST, num_classes=10, seed=3), "cifar10")
    return root


def args_for(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    return parser.parse_args(list(argv))


def run_cli(*argv: str) -> int:
    return experiment.run(args_for(*argv))


def results_by_config(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "results.csv", newline="") as f:
        return {row["config"]: row for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------- statistics by hand
def test_summary_stats_by_hand() -> None:
    s = summary_stats([1.0, 2.0, 3.0, 4.0])
    # mean 2.5; sd = sqrt(((1.5² + 0.5²) · 2) / 3) = sqrt(5/3); t_{0.975, 3} = 3.182446305 (tables)
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["sd"] == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (s["lo"], s["hi"]) == (pytest.approx(2.5 - half, rel=1e-9), pytest.approx(2.5 + half, rel=1e-9))
    one = summary_stats([7.0])
    assert one["mean"] == 7.0 and math.isnan(one["sd"]) and math.isnan(one["lo"])
    assert summary_stats([])["n"] == 0


def test_paired_stats_by_hand() -> None:
    # d = (1, 2, 0.5): mean 7/6, variance 7/12, standard error sqrt(7)/6, t = sqrt(7) on 2 degrees of freedom;
    # for 2 degrees of freedom F(t) = 1/2 + t / (2 sqrt(2 + t²)), so p = 1 - t / sqrt(2 + t²) = 1 - sqrt(7)/3
    ours = {0: 10.0, 1: 12.0, 2: 11.0, 5: 3.0}  # seed 5 has no partner: not paired
    base = {0: 9.0, 1: 10.0, 2: 10.5}
    d = paired_stats(ours, base)
    assert d["seeds"] == [0, 1, 2] and d["n"] == 3
    assert d["mean"] == pytest.approx(7 / 6, rel=1e-12)
    assert d["sd"] == pytest.approx(math.sqrt(7 / 12), rel=1e-12)
    half = 4.302652729696142 * math.sqrt(7) / 6  # t_{0.975, 2} from tables
    assert d["lo"] == pytest.approx(7 / 6 - half, rel=1e-9) and d["hi"] == pytest.approx(7 / 6 + half, rel=1e-9)
    assert d["p"] == pytest.approx(1 - math.sqrt(7) / 3, rel=1e-9)


# ----------------------------------------------------------------------------- suites
def test_builtin_suites_have_their_baselines_and_the_preact_rows() -> None:
    for suite in suites.SUITES.values():
        names = {c.name for c in suite.configs}
        assert suite.baseline is not None
        assert all(c.baseline in names for c in suite.configs if c.baseline)
        assert len(names) == len(suite.configs)
    svp = suites.SUITES["se-vs-plain"]
    # issue 9 fix 5: the paper's CIFAR 110/164 rows are the pre-activation networks
    assert svp.config("se_preact_resnet110").paper == {"cifar10": 5.21, "cifar100": 23.85}
    assert svp.config("preact_resnet164").paper["cifar10"] == 5.46
    assert svp.config("se_preact_resnet164").baseline == "preact_resnet164"
    assert "cifar10" not in svp.config("se_resnet110").paper  # the paper has no SE row for He et al.'s ResNet-110
    assert [c.name for c in suites.SUITES["reduction"].configs] == [
        "se_resnet20", "se_resnet20-r2", "se_resnet20-r4", "se_resnet20-r8", "se_resnet20-r32"]
    assert suites.SUITES["stages"].config("se_resnet20-stage2").options["model_options"] == {"se_stages": [2]}


def test_configs_selection_brings_the_baselines_along() -> None:
    from minise.experiment.commands import parse_seeds, select

    assert [c.name for c in select(suites.SUITES["reduction"], "se_resnet20-r8")] == ["se_resnet20", "se_resnet20-r8"]
    assert [c.name for c in select(suites.SUITES["se-vs-plain"], "se_preact_*")] == [
        "preact_resnet110", "se_preact_resnet110", "preact_resnet164", "se_preact_resnet164"]
    with pytest.raises(UserError, match="no such configuration"):
        select(suites.SUITES["gate"], "se_resnet20-swish")
    assert parse_seeds("0, 2") == (0, 2)
    with pytest.raises(UserError, match="distinct"):
        parse_seeds("1,1")


def test_plan_layers_protocol_overrides_and_configuration(tmp_path: Path) -> None:
    """The protocol's fields, then the suite's overrides, then the configuration's own options, then the seed."""
    path = tmp_path / "s.toml"
    path.write_text('[overrides]\nepochs = 5\nlr = 0.2\n[[config]]\nname = "a"\nmodel = "se_resnet8"\n'
                    'reduction = 4\nlr = 0.3\nmodel_options = { se_position = "post" }\n')
    suite = suites.load_suite(str(path))
    (run,) = runner.plan(suite, suite.configs, [7], "budget", tmp_path / "out")
    cfg = run.train_config
    assert (cfg["epochs"], cfg["lr"], cfg["limit_train"], cfg["seed"], cfg["reduction"]) == (5, 0.3, 10_000, 7, 4)
    assert cfg["model_options"] == {"se_position": "post"}
    assert run.folder == tmp_path / "out" / "a" / "seed7"
    # the cost counts 3 passes per training image and 1 per test image: 5 epochs of 10,000 and 5 of 5,000
    assert run.cost == run.macs * (3 * 5 * 10_000 + 5 * 5_000)
    (paper,) = runner.plan(suites.SUITES["se-vs-plain"], [suites.SUITES["se-vs-plain"].config("resnet20")], [0],
                           "paper", tmp_path / "p")
    assert (paper.train_config["iterations"], paper.train_config["milestone_iters"]) == (64000, [32000, 48000])


def test_toml_suite_errors_are_one_line_user_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[config]]\nname = "a"\nmodel = "resnet8"\nepochz = 3\n')
    with pytest.raises(UserError, match="unknown option.*epochz"):
        suites.load_suite(str(bad))
    bad.write_text('baseline = "b"\n[[config]]\nname = "a"\nmodel = "resnet8"\n')
    with pytest.raises(UserError, match="baseline 'b'"):
        suites.load_suite(str(bad))
    bad.write_text("[[config]\n")
    with pytest.raises(UserError, match="not a readable TOML"):
        suites.load_suite(str(bad))
    with pytest.raises(UserError, match="unknown suite 'nope'"):
        suites.load_suite("nope")


def test_bad_model_options_are_refused_before_any_run(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[config]]\nname = "a"\nmodel = "se_resnet8"\nmodel_options = { se_stages = [1] }\n')
    with pytest.raises(UserError, match="stage 1 is conv1"):
        run_cli("run", str(path), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- a whole suite
def test_whole_suite_end_to_end_then_skip_then_refusal(tmp_path: Path, tiny_cifar: Path,
                                                        capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tiny_suite(tmp_path)
    out = tmp_path / "exp"
    assert run_cli("run", str(suite), "--out", str(out), "--data-dir", str(tiny_cifar)) == 0
    printed = capsys.readouterr().out
    assert "2 configuration(s) x 2 seed(s) = 4 run(s)" in printed
    assert printed.count("test error") == 4 and "[4/4]" in printed and "all done" in printed
    for name in ("resnet8", "se_resnet8"):
        for seed in (0, 1):
            folder = out / name / f"seed{seed}"
            for f in ("config.json", "metrics.csv", "last.npz", "best.npz", "result.json", "train.log"):
                assert (folder / f).is_file(), folder / f
            result = json.loads((folder / "result.json").read_text())
            assert result["status"] == "done" and result["epochs"] == 2
            cfg = json.loads((folder / "config.json").read_text())
            assert (cfg["model"], cfg["seed"], cfg["epochs"], cfg["data"]) == (name, seed, 2, "cifar")

    # the report's numbers against the runs' own metrics, computed here by hand
    assert run_cli("report", str(out)) == 0
    rows = results_by_config(out)
    finals = {}
    for name in ("resnet8", "se_resnet8"):
        finals[name] = {}
        for seed in (0, 1):
            metrics = list(csv.DictReader(open(out / name / f"seed{seed}" / "metrics.csv")))
            finals[name][seed] = 100 * (1 - float(metrics[-1]["test_acc"]))
        a, b = finals[name][0], finals[name][1]
        row = rows[name]
        assert float(row["final_error_mean"]) == pytest.approx((a + b) / 2, abs=1e-9)
        assert float(row["final_error_sd"]) == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-9)
        half = 12.706204736174698 * abs(a - b) / 2  # t_{0.975, 1} · sd / sqrt(2)
        assert float(row["final_error_ci_high"]) == pytest.approx((a + b) / 2 + half, abs=1e-9)
        assert (row["done"], row["runs"]) == ("2", "2")
    d = [finals["se_resnet8"][s] - finals["resnet8"][s] for s in (0, 1)]
    se_row = rows["se_resnet8"]
    assert se_row["baseline"] == "resnet8" and se_row["paired_n"] == "2"
    assert float(se_row["diff_mean"]) == pytest.approx(sum(d) / 2, abs=1e-9)
    assert rows["resnet8"]["paper_error"] == "9.5" and rows["resnet8"]["baseline"] == ""
    md = (out / "results.md").read_text()
    assert "## tiny: tiny suite for the tests" in md and "the error at the final epoch" in md
    assert "(`se_resnet8`) | 2/2 |" in md
    assert (out / "tiny_errors.png").stat().st_size > 1000 and (out / "tiny_curves.png").stat().st_size > 1000
    with open(out / "runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4

    # run again: every run is finished, none is trained again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("last.npz")}

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(minise.train, "train", no_training)
    assert run_cli("run", str(suite), "--out", str(out), "--data-dir", str(tiny_cifar)) == 0
    monkeypatch.undo()
    assert "4 already finished (skipped)" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("last.npz")}

    # the same folder with a changed configuration is refused, before anything is touched
    changed = tiny_suite(tmp_path, epochs=3, name="tiny3.toml")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="different configuration.*epochs: 2 there, 3 planned"):
        run_cli("run", str(changed), "--out", str(out), "--data-dir", str(tiny_cifar))
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_report_shows_diverged_and_missing_runs(tmp_path: Path) -> None:
    """A diverged run and a missing one are listed, counted in "runs" and kept out of the mean, never hidden."""
    out = tmp_path / "exp"
    record = {"suites": {"s": {"title": "t", "protocol": "budget", "protocol_note": "budget", "overrides": {},
                               "dataset": "cifar10", "seeds": [0, 1, 2], "paper_note": "",
                               "configs": [{"name": "a", "label": "A", "baseline": None, "paper": {}},
                                           {"name": "b", "label": "B", "baseline": "a", "paper": {"cifar10": 5.0}}]}}}
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps(record))
    errors = {("a", 0): 30.0, ("a", 1): 32.0, ("a", 2): 31.0, ("b", 0): 29.0, ("b", 2): 30.5}
    for (name, seed), err in errors.items():
        folder = out / name / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(f"epoch,test_acc\n1,0.5\n2,{1 - err / 100}\n")
        (folder / "result.json").write_text(json.dumps({"status": "done", "final_error": err, "best_error": err,
                                                        "best_epoch": 2, "epochs": 2, "params": 10, "macs": 20}))
    folder = out / "b" / "seed1"  # seed 1 of b diverged in its second epoch
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,test_acc\n1,0.4\n")
    (folder / "result.json").write_text(json.dumps({"status": "diverged", "epochs": 1, "message": "loss is nan"}))
    (out / "a" / "seed1" / "result.json").unlink()  # and seed 1 of a never finished: missing

    report.write_report(out)
    rows = results_by_config(out)
    assert (rows["a"]["runs"], rows["a"]["done"], rows["a"]["missing"]) == ("3", "2", "1")
    assert float(rows["a"]["final_error_mean"]) == pytest.approx(30.5)
    assert (rows["b"]["done"], rows["b"]["diverged"]) == ("2", "1")
    assert float(rows["b"]["final_error_mean"]) == pytest.approx(29.75)
    # paired over the seeds both finished: 0 and 2, d = (-1, -0.5)
    assert rows["b"]["paired_n"] == "2" and float(rows["b"]["diff_mean"]) == pytest.approx(-0.75)
    md = (out / "results.md").read_text()
    assert "| 2/3 (1 missing) |" in md and "| 2/3 (1 diverged) |" in md
    assert "`b` seed 1 **diverged** after 1 epoch(s)" in md and "`a` seed 1 is **missing**" in md
    assert "0 is inside the interval" in md or "the interval excludes 0" in md


def test_ctrl_c_in_a_run_says_to_rerun_the_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C inside a suite's run points at the experiment command, not at `minise train --resume`."""
    def interrupted(*args: object, **kwargs: object) -> None:
        raise minise.train.Interrupted("interrupted; continue ... with `minise train --resume X`")

    monkeypatch.setattr(minise.train, "train", interrupted)
    task = {"name": "se_resnet20", "seed": 1, "folder": str(tmp_path / "run"), "config": {}, "device": "cpu"}
    with pytest.raises(minise.train.Interrupted) as caught:
        runner.execute(task)
    message = str(caught.value)
    assert "se_resnet20 seed 1" in message and "minise experiment run" in message
    assert "minise train --resume" not in message
    assert not (tmp_path / "run" / runner.RESULT).exists()  # an interrupted run is not recorded as finished


# ----------------------------------------------------------------------------- resume after a kill
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "MINISE_OFFLINE": "1", "MINISE_NUM_THREADS": "1"}


def test_resume_after_a_killed_run(tmp_path: Path) -> None:
    """Kill `minise experiment run` in the middle of a run; the next call continues from its last.npz and
    ends with exactly the numbers of an uninterrupted run."""
    suite = tiny_suite(tmp_path, epochs=3, synthetic=True, n_train=32)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    cmd = [sys.executable, "-m", "minise", "experiment", "run", str(suite), "--seeds", "0", "--configs",
           "resnet8"]
    proc = subprocess.Popen([*cmd, "--out", str(killed)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    folder = killed / "resnet8" / "seed0"
    deadline = time.monotonic() + 240
    while not (folder / "last.npz").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (folder / "result.json").exists(), "the run ended before it could be killed"
    assert len(runner.read_metrics(folder)) < 3

    # both in processes like the killed one (same thread count: the same sums in the same order)
    for target in (killed, whole):
        done = subprocess.run([*cmd, "--out", str(target)], env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert "continuing from" in (folder / "train.log").read_text()
    a = runner.read_metrics(folder)
    b = runner.read_metrics(whole / "resnet8" / "seed0")
    assert [r["epoch"] for r in a] == [1, 2, 3]
    assert [(r["train_loss"], r["test_acc"]) for r in a] == [(r["train_loss"], r["test_acc"]) for r in b]


# ----------------------------------------------------------------------------- parallel runs
def test_jobs_run_in_worker_processes_with_their_share_of_the_cores(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_cores", lambda: 2)
    suite = tiny_suite(tmp_path, synthetic=True)
    out = tmp_path / "exp"
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    assert run_cli("run", str(suite), "--seeds", "0", "--jobs", "2", "--out", str(out)) == 0
    for name in ("resnet8", "se_resnet8"):
        result = json.loads((out / name / "seed0" / "result.json").read_text())
        assert result["status"] == "done" and result["threads"] == 1
        assert (out / name / "seed0" / "worker.log").is_file()
    with pytest.raises(UserError, match="oversubscribe"):
        run_cli("run", str(suite), "--seeds", "0", "--jobs", "3", "--out", str(tmp_path / "other"))


def test_thread_env_limits_every_pool() -> None:
    env = runner.thread_env(3)
    assert {env[k] for k in ("MINISE_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")} \
        == {"3"}


# ----------------------------------------------------------------------------- Dask
def test_dask_local_cluster_runs_reach_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    suite = tiny_suite(tmp_path, synthetic=True)
    out = tmp_path / "exp"
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    with distributed.LocalCluster(n_workers=2, processes=True, host="127.0.0.1", threads_per_worker=1,
                                  dashboard_address=None, env={"MINISE_NUM_THREADS": "1"}) as cluster:
        assert run_cli("run", str(suite), "--seeds", "0", "--out", str(out),
                       "--scheduler", cluster.scheduler_address) == 0
    for name in ("resnet8", "se_resnet8"):
        folder = out / name / "seed0"
        result = json.loads((folder / "result.json").read_text())
        assert result["status"] == "done"
        # the files came back with the task result (the worker trained in a temporary folder of its own)
        for f in ("config.json", "metrics.csv", "train.log", "last.npz"):
            assert (folder / f).is_file(), f
    assert run_cli("report", str(out)) == 0
    rows = results_by_config(out)
    assert rows["se_resnet8"]["done"] == "1" and rows["resnet8"]["done"] == "1"
    assert float(rows["resnet8"]["final_error_mean"]) == pytest.approx(
        json.loads((out / "resnet8" / "seed0" / "result.json").read_text())["final_error"])


# ----------------------------------------------------------------------------- issue 30: hostile and careless input
@pytest.mark.parametrize("seeds", ["[0, 0]", "[true]", "[1, 2, 1]", "[-1]", "[1.0]"])
def test_toml_seeds_must_be_distinct_integers(tmp_path: Path, seeds: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f'seeds = {seeds}\n[[config]]\nname = "a"\nmodel = "resnet8"\n')
    with pytest.raises(UserError, match="seeds must be a list of distinct integers >= 0"):
        suites.load_suite(str(path))


def test_a_run_folder_in_use_is_refused_by_a_second_experiment(tmp_path: Path) -> None:
    folder = tmp_path / "exp" / "a" / "seed0"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom minise.runfolder import "
                               "lock_run_folder\nwith lock_run_folder(sys.argv[1]):\n print('held', flush=True)\n"
                               " time.sleep(60)\n", str(folder)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        task = {"name": "a", "seed": 0, "folder": str(folder), "config": {}, "device": "cpu"}
        with pytest.raises(UserError, match="in use by another minise run"):
            runner.execute(task)
        assert not (folder / "train.log").exists()  # the second writer wrote nothing, not even its log
    finally:
        holder.kill()
        holder.wait()


def _two_run_experiment(out: Path) -> None:
    """experiment.json of one suite, configurations a and b, seed 0; both runs done."""
    record = {"suites": {"s": {"title": "t", "protocol": "budget", "protocol_note": "budget", "overrides": {},
                               "dataset": "cifar10", "seeds": [0], "paper_note": "",
                               "configs": [{"name": "a", "label": "A", "baseline": None, "paper": {}},
                                           {"name": "b", "label": "B", "baseline": "a", "paper": {}}]}}}
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps(record))
    for name, err in (("a", 30.0), ("b", 29.0)):
        folder = out / name / "seed0"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(f"epoch,test_acc\n1,0.5\n2,{1 - err / 100}\n")
        (folder / "result.json").write_text(json.dumps({"status": "done", "final_error": err, "best_error": err,
                                                        "best_epoch": 2, "epochs": 2, "params": 10, "macs": 20}))


@pytest.mark.parametrize("name, content, reason", [
    ("metrics.csv", b"\x00\xff\xfe binary \x00", "not a readable metrics table"),
    ("metrics.csv", b"epoch,test_acc\n1,0.5,7\n", "line 2 has more fields than the header"),
    ("metrics.csv", b"epoch,test_accuracy\n1,0.5\n", "has no test_acc column"),
    ("metrics.csv", b"epoch,test_acc\n1,half\n", "not a number"),
    ("result.json", b"[1, 2]", "holds a list, not an object"),
    ("result.json", b'{"status": "done", "final_error": "low"}', "final_error is 'low', not a number"),
    ("result.json", b'{"status": "done", "final_error": true}', "final_error is True, not a number"),
    ("result.json", b'{"status": "great", "final_error": 3}', "status 'great' is none of"),
    ("result.json", b"{not json", "is not readable JSON"),
])
def test_a_damaged_run_is_listed_and_the_rest_reported(tmp_path: Path, name: str, content: bytes,
                                                       reason: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exp"
    _two_run_experiment(out)
    (out / "b" / "seed0" / name).write_bytes(content)
    assert run_cli("report", str(out)) == 0
    rows = results_by_config(out)
    assert rows["a"]["done"] == "1" and float(rows["a"]["final_error_mean"]) == pytest.approx(30.0)
    assert (rows["b"]["done"], rows["b"]["damaged"], rows["b"]["missing"]) == ("0", "1", "0")
    md = (out / "results.md").read_text()
    assert "`b` seed 0 is **damaged** (" in md and reason in md
    assert "| 0/1 (1 damaged) |" in md
    printed = capsys.readouterr().out
    assert "seed 0 is damaged" in printed and reason in printed


def test_a_nan_final_error_is_reported_as_diverged(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    _two_run_experiment(out)
    (out / "b" / "seed0" / "result.json").write_text('{"status": "done", "final_error": NaN, "epochs": 2}')
    report.write_report(out)
    rows = results_by_config(out)
    assert (rows["b"]["done"], rows["b"]["diverged"]) == ("0", "1")
    assert "`b` seed 0 **diverged**" in (out / "results.md").read_text()


@pytest.mark.parametrize("record", ['{"suites": []}', "[1]", '{"suites": {"s": {"configs": "a", "seeds": [0]}}}',
                                    '{"suites": {"s": {"configs": [{"name": "../x"}], "seeds": [0]}}}',
                                    '{"suites": {"s": {"configs": [{"name": "a"}], "seeds": [true]}}}'])
def test_a_damaged_experiment_json_is_one_line(tmp_path: Path, record: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exp"
    out.mkdir()
    (out / "experiment.json").write_text(record)
    with pytest.raises(UserError, match="experiment.json is damaged"):
        run_cli("report", str(out))


def test_experiment_run_exits_1_when_every_run_diverged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       tiny_cifar: Path) -> None:
    def diverging(*args: object, **kwargs: object) -> None:
        raise minise.train.NonFiniteLoss("the test loss became nan after epoch 1")

    monkeypatch.setattr(minise.train, "train", diverging)
    suite = tiny_suite(tmp_path)
    assert run_cli("run", str(suite), "--seeds", "0", "--out", str(tmp_path / "exp"),
                   "--data-dir", str(tiny_cifar)) == 1
    result = json.loads((tmp_path / "exp" / "resnet8" / "seed0" / "result.json").read_text())
    assert result["status"] == "diverged"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_their_parent(tmp_path: Path, sig: signal.Signals) -> None:
    suite = tiny_suite(tmp_path, epochs=300, synthetic=True, n_train=32)
    out = tmp_path / "exp"
    proc = subprocess.Popen([sys.executable, "-m", "minise", "experiment", "run", str(suite), "--seeds", "0",
                             "--jobs", "2", "--out", str(out)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    folders = [out / name / "seed0" for name in ("resnet8", "se_resnet8")]
    deadline = time.monotonic() + 240
    while not all((f / "last.npz").exists() for f in folders):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoints within 4 minutes"
        time.sleep(0.05)
    workers = [int((f / ".minise.lock").read_text()) for f in folders]
    assert all(_alive(pid) for pid in workers)
    os.kill(proc.pid, sig)  # the parent only, not its process group
    proc.wait(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "the workers outlived their parent"
        time.sleep(0.1)
    for f in folders:
        assert not list(f.glob("*.tmp")) and load_checkpoint(f / "last.npz")[1]["epoch"] >= 1
        assert not (f / "result.json").exists()  # stopped, not finished


def _http_server():
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"tcp://127.0.0.1:{server.server_address[1]}"


def _silent_server():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts (the kernel does) and never says a word
    return listener, f"tcp://127.0.0.1:{listener.getsockname()[1]}"


def _chatty_server():
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def answer() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # what a web server says to Dask's handshake
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    return listener, f"tcp://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("server, message", [
    (_http_server, "accepts connections but sent no Dask handshake within 1 s"),  # a web server waits to be asked
    (_chatty_server, "answers, but not as a Dask scheduler (its first bytes are 'HTTP/1.1'"),  # was 3.07 EiB
    (_silent_server, "accepts connections but sent no Dask handshake within 1 s"),  # was a hang past 120 s
])
def test_a_scheduler_address_that_is_no_scheduler_is_one_line_and_quick(tmp_path: Path, server, message: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT_S", 1.0)
    handle, address = server()
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError) as caught:
            run_cli("run", str(tiny_suite(tmp_path, synthetic=True)), "--seeds", "0", "--out", str(tmp_path / "exp"),
                    "--scheduler", address)
        assert time.monotonic() - t0 < 30
        assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    finally:
        if hasattr(handle, "serve_forever"):  # the HTTP server
            handle.shutdown()
            handle.server_close()
        else:
            handle.close()
