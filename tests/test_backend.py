import subprocess
import sys

import numpy as np
import pytest

import minise
from minise import Tensor, backend


def test_numpy_is_the_default():
    assert minise.get_default_device() == "cpu"
    assert backend.get_array_module(np.zeros(2)) is np
    assert backend.get_array_module(None, 1.0, np.zeros(1)) is np
    assert Tensor([1.0, 2.0]).device == "cpu"


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        minise.set_default_device("tpu")


@pytest.mark.skipif(backend.gpu_available(), reason="this machine has a usable GPU")
def test_missing_cupy_or_gpu_is_one_clear_error():
    with pytest.raises(minise.DeviceError, match="cuda"):
        minise.set_default_device("cuda")
    with pytest.raises(minise.DeviceError, match="cuda"):
        Tensor([1.0]).to("cuda")
    assert minise.get_default_device() == "cpu"  # nothing changed


@pytest.mark.skipif(backend.gpu_available(), reason="this machine has a usable GPU")
@pytest.mark.parametrize("value, message", [("cuda", "pip install"), ("foo", "unknown device 'foo'")])
def test_environment_variable_is_read_when_a_device_is_needed(value: str, message: str) -> None:
    """MINISE_DEVICE never breaks `import minise`; the first tensor made on the default device reports it."""
    code = "import minise; print('imported', flush=True); minise.Tensor([1.0])"
    result = subprocess.run([sys.executable, "-c", code], env={"MINISE_DEVICE": value, "PATH": ""},
                            capture_output=True, text=True)
    assert result.stdout == "imported\n"
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"minise.backend.DeviceError: MINISE_DEVICE={value!r}: ") and message in last


def test_environment_variable_sets_the_default(monkeypatch: pytest.MonkeyPatch, simulated_gpu) -> None:
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINISE_DEVICE", "cuda")
    assert backend.get_default_device() == "cuda" and Tensor([1.0]).device == "cuda"
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINISE_DEVICE", "")
    assert backend.get_default_device() == "cpu"
    monkeypatch.setattr(backend, "_default_device", None)
    monkeypatch.setenv("MINISE_DEVICE", "tpu")
    with pytest.raises(minise.DeviceError, match="MINISE_DEVICE='tpu': unknown device 'tpu'"):
        backend.get_default_device()
    minise.set_default_device("cpu")  # an explicit choice wins over the variable
    assert backend.get_default_device() == "cpu"


def test_default_device_block(simulated_gpu) -> None:
    with backend.default_device("cuda") as name:
        assert name == "cuda" and Tensor([1.0]).device == "cuda"
        with backend.default_device("cpu"):
            assert Tensor([1.0]).device == "cpu"
        assert backend.get_default_device() == "cuda"
    assert backend.get_default_device() == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"), backend.default_device("tpu"):
        pass
    assert backend.get_default_device() == "cpu"


def test_tensor_moves_between_devices(simulated_gpu):
    x = Tensor(np.arange(3.0), requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda" and isinstance(y.data, simulated_gpu.DeviceArray)
    (y * y).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(y.numpy(), [0.0, 1.0, 2.0])  # .numpy() copies back from the device


def test_default_device_places_new_tensors(simulated_gpu):
    minise.set_default_device("cuda")
    try:
        assert Tensor([1.0, 2.0]).device == "cuda"
    finally:
        minise.set_default_device("cpu")
