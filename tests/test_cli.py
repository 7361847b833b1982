"""The ``minise`` command line: every user error is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minise import backend, checkpoint, cli

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("offline")


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.startswith("minise: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    return err


def _run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO), "MINISE_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "minise", *args], env=full, capture_output=True, text=True,
                          timeout=120, cwd=cwd)


# ----------------------------------------------------------------------------- MINISE_DEVICE
@pytest.mark.parametrize("value", ["cuda", "foo"])
def test_version_never_needs_a_device(value: str) -> None:
    if value == "cuda" and backend.gpu_available():
        pytest.skip("a GPU is available here")
    r = _run("--version", env={"MINISE_DEVICE": value})
    assert (r.returncode, r.stdout, r.stderr) == (0, "minise 0.1.0\n", "")


def test_bad_device_variable_is_a_usage_error_when_training(tmp_path: Path) -> None:
    r = _run("train", "--quick", "--data-dir", str(tmp_path), env={"MINISE_DEVICE": "foo"}, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "minise: error: MINISE_DEVICE='foo': unknown device 'foo': expected 'cpu' or 'cuda'\n"
    assert not (tmp_path / "runs").exists()


def test_device_variable_reaches_train_and_eval(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                tmp_path: Path) -> None:
    if backend.gpu_available():
        pytest.skip("a GPU is available here")
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINISE_DEVICE", "cuda")
    assert cli.main(["train", "--quick", "--data-dir", str(tmp_path)]) == 2  # before: trained on the CPU
    assert "MINISE_DEVICE='cuda': device 'cuda' needs CuPy" in _one_line_error(capsys)
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "none.npz")]) == 2
    assert "MINISE_DEVICE='cuda'" in _one_line_error(capsys)
    # --device cpu: the variable is not needed, so it is not an error (the whole run makes its tensors on the CPU)
    assert cli.main(["train", "--quick", "--device", "cpu", "--model", "se_resnet8", "--data-dir", str(tmp_path / "no"),
                     "--limit-train", "16", "--limit-test", "10", "--batch-size", "16", "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--progress", "off"]) == 0
    assert "parameters) on cpu;" in capsys.readouterr().out


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("args, message", [
    (["--schedule", "multistep", "--milestones", "nan"], "--milestones must be finite numbers > 0, got nan in [nan]"),
    (["--schedule", "multistep", "--milestones", "10,inf"], "--milestones must be finite numbers > 0, got inf"),
    (["--milestones", "0"], "--milestones must be finite numbers > 0, got 0.0"),
    (["--seed=-1"], "--seed must lie in 0..2**64-1, got -1"),
    (["--lr", "nan"], "--lr must be a finite number >= 0, got nan"),
    (["--momentum=-inf"], "--momentum must be a finite number >= 0, got -inf"),
    (["--warmup-iters=-5"], "--warmup-iters must be 0 or more, got -5"),
    (["--batch-size", "0"], "--batch-size must be positive, got 0"),
    (["--stop-after", "0"], "--stop-after must be at least 1, got 0"),
    (["--nesterov", "--momentum", "0"], "--nesterov needs --momentum > 0"),
])
def test_bad_numbers_are_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture,
                                      tmp_path: Path) -> None:
    assert cli.main(["train", "--data-dir", str(tmp_path), *args]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--epochs", "three"])
    assert info.value.code == 2 and "invalid int value: 'three'" in capsys.readouterr().err
    assert cli.main([]) == 2 and "train" in capsys.readouterr().out  # no command: the help


def test_every_command_is_wired() -> None:
    parser = cli.build_parser()
    text = parser.format_help()
    for command in ("train", "eval", "experiment", "assignments"):
        assert command in text
    args = parser.parse_args(["experiment", "list"])
    assert args.func.__module__.startswith("minise.experiment")
    assert parser.parse_args(["train"]).func is cli.train_command
    assert parser.parse_args(["eval", "--checkpoint", "x"]).func is cli.eval_command


def test_training_module_does_not_import_the_assignments_tool() -> None:
    code = "import sys, minise.train; print(any(m.startswith('minise.assignments') for m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=120)
    assert r.stdout == "False\n", r.stderr


def test_train_options_of_a_fresh_run_and_of_a_resume(tmp_path: Path) -> None:
    parser = cli.build_parser()
    config, kwargs = cli.train_options(parser.parse_args(["train", "--quick", "--lr", "0.2", "--out", "o"]))
    assert config["lr"] == 0.2 and config["epochs"] == 2 and config["quick"] is True
    assert kwargs == {"device": None, "data_dir": None, "out": "o", "resume": None, "stop_after": None,
                      "progress": None}
    config, kwargs = cli.train_options(parser.parse_args(["train", "--resume", str(tmp_path), "--lr", "0.3",
                                                           "--device", "cpu"]))
    assert config == {} and kwargs["resume"] == str(tmp_path) and kwargs["device"] == "cpu"
    assert kwargs["resume_options"] == {"lr": 0.3}  # train() checks them when it reads the checkpoint


# ----------------------------------------------------------------------------- damaged files
def _checkpoint_zip(path: Path, meta: object, arrays: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in (arrays or {}).items():
            zf.writestr(name, blob)
        zf.writestr("meta.json", json.dumps(meta))
    return path


def _huge_array_header() -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    return buf.getvalue()


@pytest.mark.parametrize("meta, arrays, message", [
    ([1, 2], None, "its meta.json holds a list, not an object"),
    ({"format": checkpoint.FORMAT, "kind": "train"}, None, "its header lacks 'config'"),
    ({"format": checkpoint.FORMAT, "config": {"model": "se_resnet8"}}, None, "its header lacks 'num_classes'"),
    ({"format": checkpoint.FORMAT, "config": {"epochs": -3}}, None,
     "its saved configuration is invalid (--epochs must be positive, got -3)"),
    ({"format": checkpoint.FORMAT}, {"model/w.npy": _huge_array_header()},
     "array 'model/w' declares shape (1000000000000,) of float64 (8000000000000 bytes)"),
])
def test_damaged_checkpoints_are_one_line_errors_in_eval(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         meta: object, arrays: dict | None, message: str) -> None:
    path = _checkpoint_zip(tmp_path / "best.npz", meta, arrays)
    assert cli.main(["eval", "--checkpoint", str(path), "--data-dir", str(tmp_path)]) == 2
    assert message in _one_line_error(capsys)


def test_labels_of_the_wrong_type_are_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import dataclasses
    import pickle

    from minise.data import SPECS, make_synthetic, write_cifar_folder

    monkeypatch.setitem(SPECS, "cifar10", dataclasses.replace(SPECS["cifar10"], train_count=20, test_count=10))
    folder = write_cifar_folder(tmp_path, make_synthetic(20, 10))
    with open(folder / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"labels"][1] = b"x"
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    assert cli.main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "data_batch_2: label 1 is b'x' (bytes); labels must be integers in 0..9" in _one_line_error(capsys)

