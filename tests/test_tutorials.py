"""Every tutorial step runs in its quick mode, exits 0 and writes the figures it promises.

The steps assert the facts they teach (loops == im2col == conv2d, hand-derived SE backward ==
autograd == finite differences, summary() == the paper's counts, ...), so a library change that
breaks a lesson fails here. Steps that need CIFAR get an empty --data-dir, so they take the
labelled synthetic fallback: no network, no data set needed, the same path on every machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"

# script -> files it must write into --out
PROMISED = {
    "01_tensors_autograd.py": ["loss_slope.png"],
    "02_gradient_checking.py": ["fd_error_vs_eps.png", "buggy_vs_correct.png"],
    "03_convolution_three_ways.py": ["conv_three_ways.png"],
    "04_pooling_and_fc.py": ["pooling_forward_backward.png"],
    "05_squeeze.py": ["squeeze_examples.png", "class_descriptors.png"],
    "06_excitation.py": ["reduction_ratio.png", "gate_values.png"],
    "07_se_block.py": ["se_backward.png"],
    "08_se_resnet_summary.py": ["cost_by_stage.png", "summary_resnet50.txt", "summary_se_resnet50.txt"],
    "09_train_se_resnet20.py": ["training_curves.png", "se_resnet20.npz"],
    "10_role_of_excitation.py": ["excitation_per_class.png", "excitation_by_depth.png"],
    "11_gpu_cupy.py": ["device_timings.png"],
    "12_profile.py": ["step_profile.png"],
}
NEEDS_DATA = {"05_squeeze.py", "09_train_se_resnet20.py", "10_role_of_excitation.py"}


def run_step(script: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TUTORIALS / script), "--quick", "--out", str(out), *extra]
    if script in NEEDS_DATA:
        cmd += ["--data-dir", str(out / "no-cifar-here")]
    env = {**os.environ, "MPLBACKEND": "Agg", "MINISE_DEVICE": ""}
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}" \
                                 f"\n--- stderr ---\n{proc.stderr[-4000:]}"
    assert "[ok]" in proc.stdout, f"{script} checked no claim"
    return proc


def check_files(out: Path, names: list[str]) -> None:
    for name in names:
        path = out / name
        assert path.is_file(), f"{path} was promised but not written"
        if name.endswith(".png"):
            head = path.read_bytes()[:8]
            assert head == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
            assert path.stat().st_size > 5000, f"{path} is suspiciously small ({path.stat().st_size} bytes)"


def test_every_step_is_listed() -> None:
    scripts = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py"))
    assert scripts == sorted(PROMISED), "tutorials/ and this test disagree on the steps"
    readme = (TUTORIALS / "README.md").read_text()
    for script in scripts:
        assert script in readme, f"tutorials/README.md does not mention {script}"


@pytest.mark.parametrize("script", [s for s in PROMISED if s not in {"09_train_se_resnet20.py"}])
def test_step_runs_and_writes_its_figures(script: str, tmp_path: Path) -> None:
    proc = run_step(script, tmp_path)
    check_files(tmp_path, PROMISED[script])
    if script in NEEDS_DATA:  # no CIFAR was given: the fallback must say loudly that it is not CIFAR
        assert "SYNTHETIC" in proc.stdout and "NOT CIFAR" in proc.stdout


def test_training_checkpoint_feeds_step_10(tmp_path: Path) -> None:
    """Step 9 trains and saves se_resnet20.npz; step 10 reads it with --checkpoint."""
    run_step("09_train_se_resnet20.py", tmp_path)
    check_files(tmp_path, PROMISED["09_train_se_resnet20.py"])
    out10 = tmp_path / "step10"
    out10.mkdir()
    proc = run_step("10_role_of_excitation.py", out10, "--checkpoint", str(tmp_path / "se_resnet20.npz"))
    assert "loaded se_resnet20" in proc.stdout
    check_files(out10, PROMISED["10_role_of_excitation.py"])


def test_a_failing_claim_fails_the_step(tmp_path: Path) -> None:
    """claim() is a real assertion: a tutorial whose lesson stops holding exits non-zero."""
    code = (f"import sys; sys.path.insert(0, {str(TUTORIALS)!r}); import _common as C; "
            "C.claim(1 + 1 == 3, 'arithmetic')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "tutorial claim failed: arithmetic" in proc.stderr
