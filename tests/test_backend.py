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
def test_environment_variable_selects_the_device():
    code = "import minise"
    result = subprocess.run([sys.executable, "-c", code], env={"MINISE_DEVICE": "cuda", "PATH": ""},
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "pip install" in result.stderr and "minise[gpu]" in result.stderr


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
