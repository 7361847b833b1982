"""The training loop and the ``minise`` command line, on tiny networks and generated CIFAR-format data."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import minise
from minise import train as train_mod
from minise.checkpoint import load_checkpoint
from minise.cli import main
from minise.config import DEFAULTS, QUICK_SYNTHETIC, resolve_config
from minise.train import train

REPO = Path(__file__).resolve().parents[1]

# se_resnet8: He et al.'s CIFAR ResNet with one block per stage (6n + 2, n = 1) and SE blocks, r = 4
TINY = dict(DEFAULTS, model="se_resnet8", reduction=4, data="synthetic", limit_train=64, limit_test=40,
            batch_size=16, epochs=3, lr=0.05, warmup_epochs=0.5)


pytestmark = pytest.mark.usefixtures("offline")


def _cli(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MINISE_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "minise", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One two-epoch run of the tiny network, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("tiny_run")
    return out, train(dict(TINY, epochs=2), out=out, progress=False, log=_quiet)


def test_small_se_resnet_learns_generated_data(tmp_path: Path) -> None:
    cfg = dict(TINY, limit_train=256, limit_test=100, epochs=3, lr=0.1, warmup_epochs=0.0)
    summary = train(cfg, out=tmp_path / "run", progress=False, log=_quiet)
    h = summary["history"]
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert h[-1]["train_loss"] < 0.75 * h[0]["train_loss"]
    assert h[-1]["train_acc"] > 0.4  # chance is 0.1
    assert max(r["test_acc"] for r in h) > 0.3
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["test_acc"]) == h[-1]["test_acc"]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "run" / "best.npz").is_file() and (tmp_path / "run" / "last.npz").is_file()


def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path: Path) -> None:
    full = train(TINY, out=tmp_path / "full", progress=False, log=_quiet)
    first = train(TINY, out=tmp_path / "split", stop_after=1, progress=False, log=_quiet)
    assert first["stopped_early"] and first["epoch"] == 1
    rest = train({}, resume=tmp_path / "split" / "last.npz", progress=False, log=_quiet)
    assert rest["epoch"] == 3 and rest["step"] == full["step"] == 12
    a, b = full["model"].state_dict(), rest["model"].state_dict()
    assert list(a) == list(b)
    for key in a:  # weights, BN running statistics and counters: bit for bit
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    arrays_a, meta_a = load_checkpoint(tmp_path / "full" / "last.npz")
    arrays_b, meta_b = load_checkpoint(tmp_path / "split" / "last.npz")
    assert set(arrays_a) == set(arrays_b) and any(k.startswith("optimizer/momentum/") for k in arrays_a)
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)
    assert meta_a["rng_state"] == meta_b["rng_state"] and meta_a["schedule"] == meta_b["schedule"]
    for ra, rb in zip(meta_a["history"], meta_b["history"]):
        assert (ra["train_loss"], ra["test_acc"], ra["lr"]) == (rb["train_loss"], rb["test_acc"], rb["lr"])


def test_checkpoint_holds_the_run(tiny_run: tuple[Path, dict]) -> None:
    out, summary = tiny_run
    arrays, meta = load_checkpoint(out / "last.npz")
    sd = summary["model"].state_dict()
    assert {k[len("model/"):] for k in arrays if k.startswith("model/")} == set(sd)
    assert "layer1.0.bn1.running_var" in sd and "layer1.0.se.fc1.weight" in sd
    for key, value in sd.items():
        np.testing.assert_array_equal(arrays["model/" + key], value, err_msg=key)
    assert meta["epoch"] == 2 and meta["step"] == 8 and meta["config"]["model"] == "se_resnet8"
    assert meta["schedule"]["iteration"] == 8 and len(meta["mean"]) == 3
    assert meta["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert [r["epoch"] for r in meta["history"]] == [1, 2]


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    real = train_mod.F.cross_entropy
    calls = [0]

    def poisoned(logits, target):
        loss = real(logits, target)
        if minise.is_grad_enabled():  # training steps only, not evaluation
            calls[0] += 1
            if calls[0] == 6:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", poisoned)
    out = tmp_path / "run"
    code = main(["train", "--quick", "--model", "se_resnet8", "--reduction", "4", "--data-dir", str(tmp_path / "no"),
                 "--limit-train", "64", "--limit-test", "20", "--batch-size", "16", "--epochs", "3",
                 "--out", str(out), "--progress", "off"])
    err = capsys.readouterr().err
    assert code == 1
    assert "became nan at step 6 (epoch 2, batch 2 of 4)" in err
    assert f"last good checkpoint is {out / 'last.npz'} (epoch 1)" in err
    assert "Traceback" not in err
    arrays, meta = load_checkpoint(out / "last.npz")
    assert meta["epoch"] == 1
    assert all(np.isfinite(v).all() for k, v in arrays.items() if v.dtype.kind == "f")


def test_eval_reproduces_the_best_accuracy(tiny_run: tuple[Path, dict], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    run, _ = tiny_run
    _, meta = load_checkpoint(run / "best.npz")
    assert main(["eval", "--checkpoint", str(run / "best.npz"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    correct = round(meta["best_acc"] * 40)
    assert f"test accuracy {100 * meta['best_acc']:.2f}% ({correct} / 40)" in out
    assert "per-class accuracy:" in out and "pattern9" in out
    assert "confusion matrix (rows: true class, columns: predicted):" in out
    counts = [sum(int(v) for v in line.split()[1:]) for line in out.splitlines() if line.startswith("  pattern")
              and "%" not in line]
    assert sum(counts) == 40  # the printed confusion matrix covers every test image once
    assert (tmp_path / "confusion-best.png").stat().st_size > 1000


def test_bad_options_are_user_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--lr", "-1"]) == 2
    assert "minise: error: --lr must be a finite number >= 0" in capsys.readouterr().err
    assert main(["train", "--quick", "--model", "nonet", "--data-dir", "/nonexistent/x"]) == 2
    assert "unknown model 'nonet'" in capsys.readouterr().err


def test_existing_run_folder_is_not_overwritten(tiny_run: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    run, _ = tiny_run
    before = (run / "last.npz").read_bytes()
    assert main(["train", "--quick", "--out", str(run), "--data-dir", str(run / "no")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "last.npz").read_bytes() == before


def test_resume_refuses_a_different_configuration(tiny_run: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    run, _ = tiny_run
    before = (run / "last.npz").read_bytes()
    assert main(["train", "--resume", str(run), "--lr", "0.3"]) == 2
    assert "--lr 0.3 differs from the checkpoint's 0.05" in capsys.readouterr().err
    assert (run / "last.npz").read_bytes() == before


# ----------------------------------------------------------------------------- the command as users run it
def test_cli_missing_data_is_an_error_without_traceback(tmp_path: Path) -> None:
    r = _cli("train", "--data-dir", str(tmp_path / "empty"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("minise: error: cifar10 not found in")
    assert "cifar-10-python.tar.gz" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_cli_bad_archive_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b truncated")
    r = _cli("train", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "corrupt or incomplete" in r.stderr and "it was not used" in r.stderr


def test_cli_quick_without_data_trains_on_generated_set_and_eval_checks_models(tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = _cli("train", "--quick", "--model", "se_resnet8", "--data-dir", str(tmp_path / "empty"),
             "--limit-train", "32", "--limit-test", "20", "--batch-size", "16", "--epochs", "1",
             "--out", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "GENERATED CIFAR-format set" in first
    assert "cifar-10-python.tar.gz" in first and str(tmp_path / "empty") in first  # where to put CIFAR
    assert "epoch 1/1" in r.stdout and "img/s" in r.stdout
    assert "\r" not in r.stderr and "it/s" not in r.stderr  # no progress bar when not on a terminal
    assert (run / "last.npz").is_file() and (run / "curves.png").is_file()

    r = _cli("eval", "--checkpoint", str(run / "last.npz"), "--model", "resnet8", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "does not fit model resnet8" in r.stderr and "unexpected" in r.stderr

    (tmp_path / "junk.npz").write_bytes(b"junk")
    r = _cli("eval", "--checkpoint", str(tmp_path / "junk.npz"), cwd=tmp_path)
    assert r.returncode == 2 and "not a readable minise checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_cli_help_explains_every_option(tmp_path: Path) -> None:
    r = _cli("train", "--help", cwd=tmp_path)
    assert r.returncode == 0
    for option in ("--model", "--dataset", "--epochs", "--batch-size", "--lr", "--momentum", "--weight-decay",
                   "--schedule", "--preset", "--device", "--seed", "--data-dir", "--out", "--resume",
                   "--limit-train", "--limit-test", "--quick"):
        assert option in r.stdout
    assert "he2016" in r.stdout and "32k and 48k" in r.stdout


def test_cli_cuda_without_cupy_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    if minise.backend.gpu_available():
        pytest.skip("a GPU is available here")
    r = _cli("train", "--quick", "--device", "cuda", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "CuPy" in r.stderr


@pytest.mark.slow
def test_quick_on_real_cifar10(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`minise train --quick` on real CIFAR-10 images, from the folder $MINISE_DATA names."""
    root = os.environ.get("MINISE_DATA")
    if not root or not (Path(root) / "cifar-10-batches-py").is_dir():
        pytest.skip("set MINISE_DATA to a folder holding cifar-10-batches-py/")
    assert main(["train", "--quick", "--data-dir", root, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data: cifar10 from")
    _, meta = load_checkpoint(tmp_path / "run" / "last.npz")
    assert meta["best_acc"] > 0.2  # chance is 0.1


def test_training_on_the_simulated_gpu_matches_the_cpu(tmp_path: Path, simulated_gpu) -> None:
    """The whole loop (batches, augmentation, steps, evaluation, checkpoint) with device arrays only.

    The strict simulated device computes with NumPy underneath and the random numbers are drawn on
    the host, so the result must match the CPU run; a stray ``np.`` call on device data raises.
    """
    cfg = dict(TINY, limit_train=32, limit_test=20, epochs=1)
    cpu = train(cfg, out=tmp_path / "cpu", progress=False, log=_quiet)
    gpu = train(cfg, out=tmp_path / "gpu", device="cuda", progress=False, log=_quiet)
    a, b = cpu["model"].state_dict(), gpu["model"].state_dict()
    for key in a:
        # equal up to float32 rounding (an op may sum in another order on the device path)
        np.testing.assert_allclose(minise.backend.to_numpy(b[key]), a[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert abs(cpu["history"][0]["test_acc"] - gpu["history"][0]["test_acc"]) <= 1 / 20
    arrays, _ = load_checkpoint(tmp_path / "gpu" / "last.npz")  # saved as host arrays
    assert all(isinstance(v, np.ndarray) for v in arrays.values())


# ----------------------------------------------------------------------------- issue 14: honest ends of a run
def _accuracies(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """Make the per-epoch test accuracy follow ``values`` (the loop's decisions depend only on it)."""
    real, it = train_mod.evaluate, iter(values)

    def fake(*args, **kwargs):
        result = real(*args, **kwargs)
        result["accuracy"] = next(it)
        return result

    monkeypatch.setattr(train_mod, "evaluate", fake)


def _kill_at(monkeypatch: pytest.MonkeyPatch, name: str, epoch: int) -> None:
    """Ctrl-C (as kill would) just before ``name`` of ``epoch`` is written."""
    real = train_mod.save_checkpoint

    def save(path, arrays, meta):
        if Path(path).name == name and meta["epoch"] == epoch:
            raise KeyboardInterrupt
        return real(path, arrays, meta)

    monkeypatch.setattr(train_mod, "save_checkpoint", save)


def test_best_checkpoint_is_repaired_after_a_stop_between_last_and_best(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _accuracies(m, [0.20, 0.25])
        _kill_at(m, "best.npz", epoch=2)
        with pytest.raises(train_mod.Interrupted, match=r"last checkpoint, .*last.npz \(epoch 2\)"):
            train(TINY, out=out, progress=False, log=_quiet)
    assert load_checkpoint(out / "last.npz")[1]["best_epoch"] == 2
    assert load_checkpoint(out / "best.npz")[1]["epoch"] == 1  # one improvement behind
    (out / "best.npz.x1y2.tmp").write_bytes(b"half")  # and the debris of a write cut short
    lines: list[str] = []
    _accuracies(monkeypatch, [0.1])
    summary = train({}, resume=out, stop_after=2, progress=False, log=lines.append)
    assert summary["best_epoch"] == 2 and summary["best_acc"] == 0.25
    best_arrays, best_meta = load_checkpoint(out / "best.npz")
    assert best_meta["epoch"] == 2 and best_meta["best_acc"] == 0.25
    assert (out / "best.npz").read_bytes() == (out / "last.npz").read_bytes()
    assert any("restored best.npz" in line for line in lines)
    assert not list(out.glob("*.tmp"))


def test_best_checkpoint_missing_after_the_first_epoch_is_restored(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _kill_at(m, "best.npz", epoch=1)
        with pytest.raises(KeyboardInterrupt):
            train(TINY, out=out, progress=False, log=_quiet)
    assert not (out / "best.npz").exists()
    train({}, resume=out, stop_after=1, progress=False, log=_quiet)  # nothing left to train: only the repair
    assert load_checkpoint(out / "best.npz")[1]["epoch"] == 1


def test_ctrl_c_before_the_first_checkpoint_says_there_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "train_epoch", interrupted)
    out = tmp_path / "run"
    args = ["train", "--quick", "--model", "se_resnet8", "--data-dir", str(tmp_path / "no"), "--limit-train", "32",
            "--limit-test", "20", "--out", str(out), "--progress", "off"]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert err == "minise: interrupted before the first epoch ended: no checkpoint was written\n"
    assert not (out / "last.npz").exists()


def test_ctrl_c_later_names_the_checkpoint_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = train_mod.train_epoch, [0]

    def second_interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", second_interrupted)
    out = tmp_path / "run"
    with pytest.raises(train_mod.Interrupted) as info:
        train(TINY, out=out, progress=False, log=_quiet)
    last = out / "last.npz"
    assert str(info.value) == (f"interrupted; continue from the last checkpoint, {last} (epoch 1), with "
                               f"`minise train --resume {last}`")


def _tiny_cifar(root: Path, monkeypatch: pytest.MonkeyPatch, change=None) -> Path:
    """A CIFAR-10 folder of 64 training and 40 test images (SPECS told to expect those counts)."""
    import dataclasses

    from minise.data import SPECS, make_synthetic, write_cifar_folder

    monkeypatch.setitem(SPECS, "cifar10", dataclasses.replace(SPECS["cifar10"], train_count=64, test_count=40))
    data = make_synthetic(64, 40, seed=2)
    if change is not None:
        change(data)
    write_cifar_folder(root, data)
    return root


def test_quick_on_a_damaged_cifar_copy_names_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    root = _tiny_cifar(tmp_path / "data", monkeypatch)
    (root / "cifar-10-batches-py" / "data_batch_4").write_bytes(b"\x80\x02}q\x00truncated")
    out = tmp_path / "run"
    assert main(["train", "--quick", "--data-dir", str(root), "--out", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minise: error: ") and "data_batch_4 is not a readable CIFAR batch" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_generated_data_runs_are_named_and_titled_as_generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    titles: list[str] = []
    monkeypatch.setattr(train_mod, "plot_curves", lambda history, path, title="": titles.append(title))
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    cfg = resolve_config({"quick": True, "model": "se_resnet8", "limit_train": 32, "limit_test": 20, "epochs": 1})
    summary = train(cfg, data_dir=tmp_path / "no-cifar", progress=False, log=lines.append)
    assert summary["synthetic"]
    folder = Path(summary["out"])
    assert folder.parent == Path("runs") and folder.name.startswith("se_resnet8-generated-")
    assert titles == ["se_resnet8 on generated data (not CIFAR)"]
    assert lines[1].startswith("data: GENERATED data (not CIFAR): 32 training / 20 test images")
    assert load_checkpoint(folder / "last.npz")[1]["config"]["data"] == "synthetic"


def test_constant_images_are_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def flat(data) -> None:
        data.train_images[:, 1] = 77  # the green channel of every training image is the same

    root = _tiny_cifar(tmp_path / "data", monkeypatch, flat)
    cfg = dict(TINY, data=None)
    with pytest.raises(train_mod.DataError, match=r"constant in channel\(s\) \[1\] \(standard deviation 0\)"):
        train(cfg, data_dir=root, out=tmp_path / "run", progress=False, log=_quiet)
    assert not (tmp_path / "run").exists()


def _tampered(tiny_run: tuple[Path, dict], folder: Path, change) -> Path:
    from minise.checkpoint import save_checkpoint

    arrays, meta = load_checkpoint(tiny_run[0] / "last.npz")
    change(meta)
    meta.pop("format")
    return save_checkpoint(folder / "last.npz", arrays, meta)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["config"].update(epochs=-3),
     r"its saved configuration is invalid \(--epochs must be positive, got -3\)"),
    (lambda m: m["config"].update(lr="fast"), r"--lr must be a finite number >= 0, got 'fast'"),
    (lambda m: m["config"].update(surprise=1), r"its configuration has unknown key\(s\) surprise"),
    (lambda m: m.pop("config"), r"its header lacks 'config'"),
    (lambda m: m.update(epoch="two"), r"its header's 'epoch' is 'two'"),
    (lambda m: m.update(std=[0.2, 0.0, 0.2]), r"its header's 'std' is \[0.2, 0.0, 0.2\]"),
    (lambda m: m.update(best_epoch=9), r"best epoch 9 lies after the epoch 2"),
    (lambda m: m.update(rng_state={"state": 1}), r"optimizer, schedule or random state does not fit"),
])
def test_tampered_checkpoint_is_refused_on_resume(tiny_run: tuple[Path, dict], tmp_path: Path, change, message: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    path = _tampered(tiny_run, tmp_path, change)
    assert main(["train", "--resume", str(path), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minise: error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err


def test_environment_device_is_used_by_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulated_gpu,
                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(minise.backend, "_default_device", None)
    monkeypatch.setenv("MINISE_DEVICE", "cuda")
    args = ["train", "--quick", "--model", "se_resnet8", "--data-dir", str(tmp_path / "no"), "--limit-train", "16",
            "--limit-test", "10", "--batch-size", "16", "--epochs", "1", "--out", str(tmp_path / "run"),
            "--progress", "off"]
    assert main(args) == 0
    assert "parameters) on cuda;" in capsys.readouterr().out
    assert main([*args[:-4], "--out", str(tmp_path / "run2"), "--device", "cpu", "--progress", "off"]) == 0
    assert "parameters) on cpu;" in capsys.readouterr().out  # --device wins


def test_eval_reads_a_checkpoint_with_a_partial_configuration(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Tutorial 9's checkpoint: weights, a model name and r, no training state (was a KeyError in eval)."""
    from minise.checkpoint import save_checkpoint
    from minise.data import channel_stats, make_synthetic

    model = minise.models.create("se_resnet8", num_classes=10, reduction=4)
    mean, std = channel_stats(make_synthetic(**QUICK_SYNTHETIC).train_images)
    save_checkpoint(tmp_path / "se_resnet8.npz", {f"model/{k}": v for k, v in model.state_dict().items()},
                    {"kind": "tutorial", "model": "se_resnet8", "config": {"model": "se_resnet8", "reduction": 4},
                     "num_classes": 10, "mean": mean.tolist(), "std": std.tolist(), "synthetic": True})
    assert main(["eval", "--checkpoint", str(tmp_path / "se_resnet8.npz"), "--limit-test", "50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"checkpoint {tmp_path / 'se_resnet8.npz'}: se_resnet8 on generated data (not CIFAR)"
    assert out[1].startswith("test accuracy ") and "/ 50)" in out[1]


# ----------------------------------------------------------------------------- issues 10 and 11: prefetching, no syncs
def _run_files(folder: Path) -> tuple[dict, dict]:
    """The last checkpoint's arrays and header, less what depends on the clock."""
    arrays, meta = load_checkpoint(folder / "last.npz")
    for record in meta["history"]:
        for key in ("images_per_s", "train_time_s", "eval_time_s"):
            record.pop(key)
    return arrays, meta


def _assert_same_run(a: Path, b: Path) -> None:
    arrays_a, meta_a = _run_files(a)
    arrays_b, meta_b = _run_files(b)
    assert set(arrays_a) == set(arrays_b)
    for key in arrays_a:  # weights, BN statistics, momentum: bit for bit
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)
    for key in ("rng_state", "schedule", "history", "step", "epoch", "best_acc", "best_epoch"):
        assert meta_a[key] == meta_b[key], key


def test_prefetching_changes_no_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With and without the background batches: the same weights, logs and random state, bit for bit,
    also for a run that stops in the middle of an epoch (10 iterations of 4 per epoch) and one resumed."""
    from minise.data import loader as loader_mod

    made_on: list[str] = []
    real = loader_mod.random_crop_flip

    def recorded(*args, **kwargs):
        made_on.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(loader_mod, "random_crop_flip", recorded)
    cfg = dict(TINY, iterations=10)  # 64 images in batches of 16: 4 + 4 + 2 steps
    plain = train(cfg, out=tmp_path / "plain", prefetch=False, progress=False, log=_quiet)
    assert plain["step"] == 10 and made_on == ["MainThread"] * 10
    made_on.clear()
    ahead = train(cfg, out=tmp_path / "ahead", prefetch=True, progress=False, log=_quiet)
    assert ahead["step"] == 10 and made_on == ["minise-prefetch"] * 10  # not one batch more, though it runs ahead
    _assert_same_run(tmp_path / "plain", tmp_path / "ahead")
    train(cfg, out=tmp_path / "split", stop_after=1, progress=False, log=_quiet)
    train({}, resume=tmp_path / "split", progress=False, log=_quiet)
    _assert_same_run(tmp_path / "plain", tmp_path / "split")


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "minise-prefetch" and t.is_alive()]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "nan"])
def test_a_stopped_epoch_stops_its_prefetching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop) -> None:
    """Ctrl-C or a NaN loss in the middle of an epoch: the background thread is gone when train returns."""
    real, calls = train_mod.F.cross_entropy, [0]

    def failing(logits, target):
        calls[0] += 1
        if calls[0] == 2:
            if stop is KeyboardInterrupt:
                raise KeyboardInterrupt
            return real(logits, target) * float("nan")
        return real(logits, target)

    monkeypatch.setattr(train_mod.F, "cross_entropy", failing)
    assert not _prefetch_threads()
    with pytest.raises(train_mod.Interrupted if stop is KeyboardInterrupt else train_mod.NonFiniteLoss):
        train(TINY, out=tmp_path / "run", progress=False, log=_quiet)
    assert calls[0] == 2 and not _prefetch_threads()


def test_a_training_step_reads_nothing_from_the_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      simulated_gpu) -> None:
    """On the (simulated) GPU the steps (forward, loss, backward, SGD update) pull nothing back to the
    host: the only reads in an epoch are the loss and accuracy, one transfer every k steps."""
    every = 3
    monkeypatch.setattr(train_mod, "_sync_every", lambda device: 1 if device == "cpu" else every)
    syncs = simulated_gpu.SYNCS
    in_steps: list[int] = []  # device reads during each step
    in_reads: list[int] = []  # device reads by the loop's bookkeeping after each step
    real_epoch = train_mod.train_epoch

    def counted_epoch(model, loader, optimizer, schedule=None, *, max_steps=None, on_step=None):
        mark = [syncs[0]]

        def counted_on_step(loss, correct, size):
            in_steps.append(syncs[0] - mark[0])
            before = syncs[0]
            on_step(loss, correct, size)
            in_reads.append(syncs[0] - before)
            mark[0] = syncs[0]

        return real_epoch(model, loader, optimizer, schedule, max_steps=max_steps, on_step=counted_on_step)

    monkeypatch.setattr(train_mod, "train_epoch", counted_epoch)
    train(dict(TINY, epochs=2), out=tmp_path / "run", device="cuda", progress=False, log=_quiet)
    assert len(in_steps) == 8  # 2 epochs of 4 steps
    assert in_steps == [0] * 8
    assert in_reads == [1 if step % every == 0 else 0 for step in range(1, 9)]


def test_labels_outside_the_classes_are_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The labels are checked once on the host (the steps no longer check them on the device)."""
    real = train_mod.make_synthetic

    def broken(**kwargs):
        data = real(**kwargs)
        data.train_labels[5] = 10  # 10 classes: 0..9
        return data

    monkeypatch.setattr(train_mod, "make_synthetic", broken)
    with pytest.raises(train_mod.DataError, match=r"the training labels of \w+ must lie in 0\.\.9, found 0\.\.10"):
        train(TINY, out=tmp_path / "run", progress=False, log=_quiet)
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_labels_outside_the_classes(device) -> None:
    from minise.data import make_synthetic

    data = make_synthetic(8, 6)
    model = minise.models.create("se_resnet8", num_classes=10, reduction=4).to(device)
    labels = data.test_labels.copy()
    labels[2] = -1
    for bad in (labels, minise.backend.to_device(labels, device)):
        with pytest.raises(ValueError, match=r"evaluate: the labels must lie in 0\.\.9, found -1\.\.\d"):
            train_mod.evaluate(model, data.test_images, bad, np.full(3, 0.5), np.full(3, 0.25), 10, device=device)
    result = train_mod.evaluate(model, data.test_images, data.test_labels, np.full(3, 0.5), np.full(3, 0.25), 10,
                                device=device)
    assert result["count"] == 6


# ----------------------------------------------------------------------------- issue 30: hostile and careless input
def _test_loss_nan_at(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make the test loss of ``epoch`` NaN (as the weights of a run with a huge learning rate make it)."""
    real, calls = train_mod.evaluate, [0]

    def fake(*args, **kwargs):
        result = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == epoch:
            result["loss"] = float("nan")
        return result

    monkeypatch.setattr(train_mod, "evaluate", fake)


def test_a_nan_test_loss_is_divergence_never_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    _test_loss_nan_at(monkeypatch, 2)
    out = tmp_path / "run"
    code = main(["train", "--quick", "--model", "se_resnet8", "--reduction", "4", "--data-dir", str(tmp_path / "no"),
                 "--limit-train", "32", "--limit-test", "20", "--batch-size", "16", "--epochs", "3",
                 "--out", str(out), "--progress", "off"])
    captured = capsys.readouterr()
    assert code == 1
    assert "the test loss became nan after epoch 2" in captured.err
    assert f"last good checkpoint is {out / 'last.npz'} (epoch 1)" in captured.err
    assert "test loss nan" not in captured.out and captured.out.count("*best*") <= 1
    assert load_checkpoint(out / "last.npz")[1]["epoch"] == 1
    assert load_checkpoint(out / "best.npz")[1]["epoch"] == 1
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "metrics.csv"))] == [1]


def test_a_nan_test_loss_in_the_first_epoch_writes_no_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    _test_loss_nan_at(monkeypatch, 1)
    out = tmp_path / "run"
    with pytest.raises(train_mod.NonFiniteLoss, match="no checkpoint was written"):
        train(dict(TINY, epochs=1), out=out, progress=False, log=_quiet)
    assert not (out / "best.npz").exists() and not (out / "last.npz").exists()


_HOLD_LOCK = """
import sys, time
from minise.runfolder import lock_run_folder
with lock_run_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_on_a_run_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["train", "--quick", "--model", "se_resnet8", "--data-dir", str(tmp_path / "no"), "--limit-train",
                "32", "--limit-test", "20", "--out", str(out), "--progress", "off"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"minise: error: {out} is in use by another minise run (process {holder.pid})")
        assert err.count("\n") == 1
        assert sorted(p.name for p in out.iterdir()) == [".minise.lock"]  # nothing of the second run was written
    finally:
        holder.kill()
        holder.wait()
    assert main(args) == 0  # the lock died with its process
    assert not (out / ".minise.lock").exists()


def test_a_new_run_refuses_a_folder_with_another_runs_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}\n")  # a run stopped in its first epoch left this
    args = ["train", "--quick", "--model", "se_resnet8", "--data-dir", str(tmp_path / "no"), "--limit-train", "32",
            "--limit-test", "20", "--out", str(out), "--progress", "off"]
    assert main(args) == 2
    assert "already holds a run's files (config.json) but no last.npz" in capsys.readouterr().err
    assert (out / "config.json").read_text() == "{}\n"


def test_a_run_folder_deleted_during_the_run_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import shutil

    out = tmp_path / "run"
    real, calls = train_mod.evaluate, [0]

    def deleting(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            shutil.rmtree(out)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate", deleting)
    args = ["train", "--quick", "--model", "se_resnet8", "--data-dir", str(tmp_path / "no"), "--limit-train", "32",
            "--limit-test", "20", "--epochs", "3", "--out", str(out), "--progress", "off"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"the run folder {out} was deleted or replaced during the run" in err and err.count("\n") == 1
    assert not out.exists()


class _TermMidway(dict):
    """Checkpoint arrays that send this process SIGTERM half-way through being written."""

    def items(self):
        import signal

        for k, (key, value) in enumerate(super().items()):
            if k == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            yield key, value


def test_sigterm_during_a_checkpoint_write_discards_it_and_exits_143(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    real = train_mod.save_checkpoint

    def save(path, arrays, meta):
        if Path(path).name == "last.npz" and meta["epoch"] == 2:
            arrays = _TermMidway(arrays)
        return real(path, arrays, meta)

    monkeypatch.setattr(train_mod, "save_checkpoint", save)
    out = tmp_path / "run"
    args = ["train", "--quick", "--model", "se_resnet8", "--data-dir", str(tmp_path / "no"), "--limit-train", "32",
            "--limit-test", "20", "--epochs", "3", "--out", str(out), "--progress", "off"]
    assert main(args) == 143
    last = out / "last.npz"
    assert capsys.readouterr().err == (f"minise: terminated (SIGTERM); continue from the last checkpoint, {last} "
                                       f"(epoch 1), with `minise train --resume {last}`\n")
    assert not list(out.glob("*.tmp")) and not (out / ".minise.lock").exists()
    assert load_checkpoint(last)[1]["epoch"] == 1
    import signal

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command's handler is gone again


def test_sigterm_to_minise_train_says_what_was_saved(tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MINISE_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minise", "train", "--quick", "--model", "se_resnet8",
                             "--data-dir", str(tmp_path / "no"), "--limit-train", "32", "--limit-test", "20",
                             "--epochs", "200", "--out", str(out), "--progress", "off"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "last.npz").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); continue from the last checkpoint" in err and "Traceback" not in err
    assert not list(out.glob("*.tmp"))
    assert load_checkpoint(out / "last.npz")[1]["epoch"] >= 1


def _rezip(source: Path, dest: Path, change) -> Path:
    """A copy of the checkpoint zip with ``change(members)`` applied to its {name: bytes} (CRCs stay right)."""
    import zipfile

    with zipfile.ZipFile(source) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    change(members)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dest


def _rename(members: dict, old: str, new: str) -> None:
    members[new] = members.pop(old)


def _damage_npy_header(members: dict) -> None:
    data = members["model/conv1.weight.npy"]
    start = data.index(b"{'descr'")
    members["model/conv1.weight.npy"] = data[:start] + b"{'''scr'" + data[start + 8:]


@pytest.mark.parametrize("change, message", [
    (lambda m: _rename(m, "optimizer/momentum/5.npy", "optimizer/momentum/5.npx"),
     r"holds 'optimizer/momentum/5.npx', which is neither meta.json nor an array"),
    (lambda m: m.pop("optimizer/momentum/5.npy"),
     r"its header lists array 'optimizer/momentum/5', which the file does not hold"),
    (lambda m: m.pop("model/conv1.weight.npy"),
     r"its header lists array 'model/conv1.weight', which the file does not hold"),
    (lambda m: m.update({"optimizer/momentum/999.npy": m["optimizer/momentum/5.npy"]}),
     r"holds array 'optimizer/momentum/999', which its header does not list"),
    (_damage_npy_header, r"is not a readable minise checkpoint \(TokenError"),
])
def test_a_checkpoint_holds_exactly_the_arrays_its_header_lists(tiny_run: tuple[Path, dict], tmp_path: Path,
                                                                change, message: str,
                                                                capsys: pytest.CaptureFixture) -> None:
    path = _rezip(tiny_run[0] / "last.npz", tmp_path / "damaged" / "last.npz", change)
    assert main(["train", "--resume", str(path), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minise: error: ") and len(err.splitlines()) == 1 and re.search(message, err), err
    assert main(["eval", "--checkpoint", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minise: error: ") and len(err.splitlines()) == 1 and re.search(message, err), err


def test_an_array_of_neither_model_nor_optimizer_is_refused(tiny_run: tuple[Path, dict], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from minise.checkpoint import save_checkpoint

    arrays, meta = load_checkpoint(tiny_run[0] / "last.npz")
    meta.pop("format")
    save_checkpoint(tmp_path / "last.npz", {**arrays, "extra/thing": np.zeros(2)}, meta)
    assert main(["train", "--resume", str(tmp_path / "last.npz"), "--progress", "off"]) == 2
    assert "array 'extra/thing' belongs to neither the model nor the optimizer" in capsys.readouterr().err


@pytest.mark.parametrize("accuracies, best_epoch, said", [
    ([0.2, 0.3], 2, "best.npz: a copy of {src}/last.npz (the run's best epoch so far, 2, is the one it continues"),
    ([0.3, 0.2], 1, "best.npz: copied from {src}/best.npz (epoch 1, the run's best so far)"),
])
def test_resume_into_another_folder_takes_the_best_checkpoint_along(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accuracies: list, best_epoch: int, said: str) -> None:
    src, dest = tmp_path / "first", tmp_path / "elsewhere"
    with monkeypatch.context() as m:
        _accuracies(m, accuracies)
        train(TINY, out=src, stop_after=2, progress=False, log=_quiet)
    _accuracies(monkeypatch, [0.1])
    lines: list[str] = []
    train({}, resume=src, out=dest, progress=False, log=lines.append)
    assert said.format(src=src) in "\n".join(lines)
    assert not any("stopped between" in line for line in lines)  # the old, wrong explanation
    assert load_checkpoint(dest / "best.npz")[1]["epoch"] == best_epoch
    with pytest.raises(train_mod.UserError, match="already holds a run"):  # and never over another run
        train({}, resume=src, out=dest, progress=False, log=_quiet)



def test_out_of_memory_is_a_usage_error_naming_the_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.07 EiB for an array")

    monkeypatch.setattr(train_mod, "train_epoch", too_big)
    args = ["train", "--quick", "--model", "se_resnet8", "--data-dir", str(tmp_path / "no"), "--limit-train", "32",
            "--limit-test", "20", "--batch-size", "32", "--out", str(tmp_path / "run"), "--progress", "off"]
    assert main(args) == 2  # not 1, which says the loss became NaN
    err = capsys.readouterr().err
    assert err.startswith("minise: error: out of memory (Unable to allocate 3.07 EiB for an array) training "
                          "se_resnet8 at batch size 32") and err.count("\n") == 1
    assert "no checkpoint was written" in err


def test_eval_warns_when_the_confusion_image_cannot_be_written(tiny_run: tuple[Path, dict], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # (a read-only folder does not stop root, who runs some test machines)
    assert main(["eval", "--checkpoint", str(tiny_run[0] / "best.npz"), "--out", str(blocked)]) == 0
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out
    assert f"(could not write the confusion matrix image {blocked / 'confusion-best.png'}: " in captured.out
    assert captured.err == ""


def test_a_long_name_that_fits_is_written_whatever_its_temporary_name(tiny_run: tuple[Path, dict], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    import shutil

    from minise.fileio import temporaries, write_atomic

    stem = "s" * 240  # confusion-<stem>.png is 254 bytes: it fits, its temporary name (+17) would not
    checkpoint = tmp_path / f"{stem}.npz"
    shutil.copyfile(tiny_run[0] / "best.npz", checkpoint)
    assert main(["eval", "--checkpoint", str(checkpoint)]) == 0
    assert "could not" not in capsys.readouterr().out
    assert (tmp_path / f"confusion-{stem}.png").stat().st_size > 1000
    name = tmp_path / ("é" * 127)  # 254 bytes of UTF-8
    write_atomic(name, "x")
    assert name.read_text() == "x" and not temporaries(name)
