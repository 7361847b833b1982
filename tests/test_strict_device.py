"""The simulated device must be as strict as CuPy, or the op tests that run on it prove nothing."""

import numpy as np
import pytest

import minise
from minise import Function, Tensor, backend
from minise.testing import SYNCS, DeviceArray, xp


def test_refuses_implicit_numpy():
    a = xp.arange(6.0).reshape(2, 3)
    with pytest.raises(TypeError):
        np.asarray(a)
    with pytest.raises(TypeError):
        np.exp(a)
    with pytest.raises(TypeError):
        np.pad(a, 1)
    with pytest.raises(TypeError):
        a + np.ones(3)
    with pytest.raises(TypeError):
        xp.maximum(a, np.zeros(3))


def test_behaves_like_an_array_module():
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    b = xp.maximum(a - 2, 0) * 2.0 + np.float64(1)
    assert isinstance(b, DeviceArray) and b.shape == (2, 3)
    total = b.sum()
    assert isinstance(total, DeviceArray) and total.shape == ()  # as CuPy: a 0-d array, not a NumPy scalar
    np.testing.assert_array_equal(b.get(), [[1, 1, 1], [3, 5, 7]])
    view = xp.lib.stride_tricks.as_strided(a, shape=(2, 2), strides=a.strides)
    assert isinstance(view, DeviceArray)
    z = xp.zeros((3,))
    xp.add.at(z, xp.asarray(np.array([0, 0, 2])), 1.0)
    np.testing.assert_array_equal(z.get(), [2, 0, 1])


def test_counts_host_syncs():
    a = xp.ones(3)
    before = SYNCS[0]
    float(a.sum())
    a.get()
    assert SYNCS[0] == before + 2


class LeakyOp(Function):
    """An op written wrongly: np.exp instead of xp.exp."""

    def forward(self, x):
        return np.exp(x)

    def backward(self, gy):
        return gy


def test_catches_an_op_that_calls_numpy(simulated_gpu):
    x = Tensor(backend.to_device(np.ones(3), "cuda"))
    assert x.device == "cuda"
    with pytest.raises(TypeError, match="does not support ufuncs|simulated device"):
        LeakyOp()(x)
    LeakyOp()(Tensor(np.ones(3)))  # fine on the CPU


def test_two_devices_in_one_op_is_an_error(simulated_gpu):
    a = Tensor(np.ones(3))
    b = Tensor(np.ones(3)).to("cuda")
    with pytest.raises(minise.DeviceError, match="two devices"):
        a + b


def test_the_shipped_context_manager_binds_and_unbinds_the_device():
    import minise.testing

    with minise.testing.simulated_gpu() as dev:
        assert dev is xp
        x = Tensor(np.arange(3.0)).to("cuda")
        assert isinstance(x.data, DeviceArray) and x.device == "cuda"
        with pytest.raises(TypeError, match="implicit conversion of a simulated device array"):
            np.asarray(x.data)
    with pytest.raises(minise.DeviceError):  # unbound again: 'cuda' means CuPy, absent here
        Tensor(np.arange(3.0)).to("cuda")
    with pytest.raises(ValueError, match="'cpu' is NumPy itself"):
        with minise.testing.simulated_gpu("cpu"):
            pass
