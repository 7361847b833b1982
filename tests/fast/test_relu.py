"""minise.fast.relu against the textbook ReLU (speed.use_fast(False)): the same bits, on one thread or several."""

import numpy as np
import pytest

import minise.fast.relu as fast_relu
import minise.functional as F
from minise import Tensor, speed
from minise.testing import simulated_gpu


def _grad(x_np, g, fast):
    x = Tensor(x_np, requires_grad=True)
    with speed.use_fast(fast):
        y = F.relu(x)
        assert y.creator.fast is (fast_relu if fast else None)
        y.backward(g)
    return y.numpy(), x.grad.numpy()


@pytest.mark.parametrize("shape", [(7,), (5, 3), (9, 4, 5, 6), (1, 2, 3, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block_bytes", [None, 1])  # the default blocks, and one sample per block
@pytest.mark.parametrize("threads", [1, 3])  # 3: every array, however small, split over three threads
def test_same_bits_as_the_textbook(cut_work, shape, dtype, block_bytes, threads):
    cut_work(fast_relu, block_bytes, threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::3] = 0  # exact zeros: the gradient there is 0
    g = rng.standard_normal(shape).astype(dtype)
    for fast, slow in zip(_grad(x, g, True), _grad(x, g, False)):
        assert fast.dtype == slow.dtype == dtype
        np.testing.assert_array_equal(fast, slow)


def test_blocks_that_do_not_divide_the_batch(monkeypatch):
    monkeypatch.setattr(speed, "default_block_bytes", lambda: 3 * 4 * 5 * 8)  # three samples a block, of 10
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((10, 4, 5)), rng.standard_normal((10, 4, 5))
    np.testing.assert_array_equal(_grad(x, g, True)[1], g * (x > 0))


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply")  # inf · 0, on both paths
def test_nan_inf_and_a_broadcast_upstream_gradient():
    x = np.array([[1.0, -1.0, 0.0, np.nan], [2.0, -np.inf, np.inf, -3.0]])
    g = np.broadcast_to(np.array([np.nan, np.inf, 2.0, -1.0]), x.shape)  # a read-only broadcast view
    fast, slow = _grad(x, g, True)[1], _grad(x, g, False)[1]
    np.testing.assert_array_equal(fast, slow)  # NaN where the textbook has NaN, signs of zero included
    np.testing.assert_array_equal(np.signbit(fast), np.signbit(slow))


@pytest.mark.parametrize("threads", [1, 2])
def test_a_non_contiguous_input(monkeypatch, threads):
    monkeypatch.setattr(speed, "NUM_THREADS", threads)
    monkeypatch.setattr(fast_relu, "PARALLEL_MIN_BYTES", 0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 5, 4)).transpose(2, 0, 1)  # y = max(x, 0) keeps x's memory order
    g = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(_grad(x, g, True)[1], _grad(x, g, False)[1])


def test_supports_only_cpu_floating_arrays():
    assert fast_relu.supports(np.zeros(3)) and fast_relu.supports(np.zeros((2, 2), np.float32))
    assert not fast_relu.supports(np.zeros(())) and not fast_relu.supports(np.zeros(3, np.float16))
    with simulated_gpu() as gpu:
        assert not fast_relu.supports(gpu.asarray(np.zeros(3)))
