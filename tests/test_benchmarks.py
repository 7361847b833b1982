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
