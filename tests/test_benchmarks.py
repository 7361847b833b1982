"""The benchmark scripts' own checks (their timings never go into tests)."""

import importlib.util
import os
import sys

import pytest


def _script(name):
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_step_prints_the_ops_and_draws_the_chart(tmp_path, capsys):
    _script("profile_step").main(["--model", "resnet8", "--batch", "2", "--steps", "1", "--size", "8",
                                  "--out", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    assert "Conv2d" in out and (tmp_path / "p.png").exists()


def test_compiled_without_numba_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    with pytest.raises(SystemExit, match="pip install numba"):
        _script("compiled").main(["--only", "bn"])


@pytest.mark.parametrize("argv", [["--repeat", "0"], ["--steps", "0"], ["--only", "pool"]])
def test_compiled_refuses_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        _script("compiled").main(argv)
    assert stop.value.code == 2 and "error" in capsys.readouterr().err


def test_compiled_check_stops_on_a_wrong_result():
    import numpy as np

    check = _script("compiled").check
    reference = np.array([1.0, -2.0, 4.0], dtype=np.float32)
    check("same up to rounding", reference * np.float32(1 + 1e-6), reference)
    with pytest.raises(SystemExit, match="relative error"):
        check("wrong", reference + np.float32(0.01), reference)


def test_c_kernels_without_a_compiler_says_what_it_needs(monkeypatch):
    script = _script("c_kernels")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="needs a C compiler"):
        script.main(["--only", "ops"])


@pytest.mark.parametrize("argv", [["--repeat", "0"], ["--steps", "0"], ["--only", "pool"], ["--model", "resnet56"]])
def test_c_kernels_refuses_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        _script("c_kernels").main(argv)
    assert stop.value.code == 2 and "error" in capsys.readouterr().err


def test_c_kernels_reports_a_failed_compile(tmp_path):
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: no such option' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(SystemExit, match="compiling failed(.|\n)*no such option"):
        _script("c_kernels").build(str(broken), str(tmp_path))


def _compiler_or_skip():
    script = _script("c_kernels")
    try:
        return script, script.find_compiler(None)
    except SystemExit as missing:
        pytest.skip(str(missing))


def test_c_kernels_without_native_vectors_agree_with_minise_too(tmp_path):
    """Built for the compiler's default target (no -march: 32-byte vectors, however wide the machine's),
    the kernels pass both checks as well."""
    import numpy as np

    script, compiler = _compiler_or_skip()
    swap = script.Swap(script.build(compiler, str(tmp_path), "-O2"))
    assert swap.kernels[np.dtype(np.float32)].lanes == 8
    try:
        script.check_ops(swap, np.random.default_rng(1), batch=2)
        assert script.check_step(swap, "resnet20", np.random.default_rng(1), batch=2) <= 1e-12
    finally:
        swap.use("minise")


def test_c_kernels_agree_with_minise_and_their_checks_catch_a_wrong_one(tmp_path, monkeypatch):
    """The kernels built here pass both checks (every op in float32, a float64 ResNet-20 step's gradients);
    a conv 0.1 % off, or a batch norm whose dL/dgamma is, is stopped by each."""
    import numpy as np

    script, compiler = _compiler_or_skip()
    swap = script.Swap(script.build(compiler, str(tmp_path)))
    try:
        script.check_ops(swap, np.random.default_rng(0), batch=2)
        assert script.check_step(swap, "resnet20", np.random.default_rng(0), batch=2) <= 1e-12
        kernels = swap.kernels[np.dtype(np.float64)]
        conv = kernels.conv3x3
        monkeypatch.setattr(kernels, "conv3x3", lambda *a, **k: conv(*a, **k) * 1.001)
        with pytest.raises(SystemExit, match="float64 training step"):
            script.check_step(swap, "resnet20", np.random.default_rng(0), batch=2)
        kernels32 = swap.kernels[np.dtype(np.float32)]
        backward = kernels32.batchnorm_backward

        def wrong_gamma(*a):
            gx, ggamma, gbeta = backward(*a)
            return gx, ggamma * np.float32(1.01), gbeta

        monkeypatch.setattr(kernels32, "batchnorm_backward", wrong_gamma)
        with pytest.raises(SystemExit, match="dL/dgamma"):
            script.check_ops(swap, np.random.default_rng(0), batch=2)
    finally:
        swap.use("minise")


def test_c_kernels_runs_end_to_end(capsys):
    """The whole script on a small batch: checks, op rows skipped, steps of every mode and the peak memory."""
    torch = pytest.importorskip("torch")
    script, _ = _compiler_or_skip()
    threads = torch.get_num_threads()  # the script gives torch minise's threads; the other tests run it on one
    try:
        script.main(["--only", "step", "--model", "resnet20", "--batch", "2", "--steps", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "checked: every op" in out and "C conv + batch norm" in out and "peak memory" in out
