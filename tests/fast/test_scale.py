"""minise.fast.scale against the textbook scale (speed.use_fast(False)): x̃ and ∂L/∂u the same bits,
∂L/∂s up to the order of its sums."""

import numpy as np
import pytest

import minise.fast.scale as fast_scale
import minise.functional as F
from minise import Tensor, no_grad, speed
from minise.testing import simulated_gpu

TOL = {np.float64: 1e-13, np.float32: 1e-5}


def _run(shape, dtype, fast, wanted=(True, True), g=None):
    rng = np.random.default_rng(0)
    u = Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=wanted[0])
    s = Tensor(rng.uniform(0.1, 0.9, shape[:2]).astype(dtype), requires_grad=wanted[1])
    g = rng.standard_normal(shape).astype(dtype) if g is None else g
    with speed.use_fast(fast):
        y = F.scale(u, s)
        assert y.creator.fast is (fast_scale if fast else None)
        y.backward(g)
    return y.numpy(), (u.grad.numpy() if wanted[0] else None), (s.grad.numpy() if wanted[1] else None)


def _same(fast, slow, dtype):
    y, gu, gs = fast
    np.testing.assert_array_equal(y, slow[0])  # one product per value: the same bits
    for a, b in ((gu, slow[1]), (gs, slow[2])):
        assert (a is None) == (b is None)
    if gu is not None:
        np.testing.assert_array_equal(gu, slow[1])
    if gs is not None:
        assert gs.dtype == dtype
        np.testing.assert_allclose(gs, slow[2], rtol=TOL[dtype], atol=TOL[dtype] * np.abs(slow[2]).max())


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 4, 5), (3, 8, 1, 7), (16, 4, 6, 6)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block_bytes", [None, 1])  # the default blocks, and one sample per block
@pytest.mark.parametrize("threads", [1, 3])  # 3: every array, however small, split over three threads
def test_same_numbers_as_the_textbook(cut_work, shape, dtype, block_bytes, threads):
    cut_work(fast_scale, block_bytes, threads)
    _same(_run(shape, dtype, True), _run(shape, dtype, False), dtype)


@pytest.mark.parametrize("wanted", [(True, False), (False, True)])
def test_only_the_wanted_gradient(wanted):
    _same(_run((5, 3, 4, 4), np.float64, True, wanted), _run((5, 3, 4, 4), np.float64, False, wanted), np.float64)


@pytest.mark.parametrize("threads", [1, 2])
def test_blocks_that_do_not_divide_the_batch(monkeypatch, threads):
    monkeypatch.setattr(speed, "default_block_bytes", lambda: 3 * 4 * 25 * 8)  # three samples a block, of 10
    monkeypatch.setattr(speed, "NUM_THREADS", threads)
    monkeypatch.setattr(fast_scale, "PARALLEL_MIN_BYTES", 0)
    _same(_run((10, 4, 5, 5), np.float64, True), _run((10, 4, 5, 5), np.float64, False), np.float64)


def test_upstream_gradient_that_is_a_broadcast_view():
    g = np.broadcast_to(np.random.default_rng(1).standard_normal((6, 3, 1, 1)), (6, 3, 4, 4))
    _same(_run((6, 3, 4, 4), np.float64, True, g=g), _run((6, 3, 4, 4), np.float64, False, g=g), np.float64)


def test_the_se_block_through_autograd():
    """relu(u) → squeeze → excitation → scale, gradients of u and of W1, W2 with and without the fast path."""
    rng = np.random.default_rng(2)
    u_np, w1, w2 = rng.standard_normal((8, 6, 5, 5)), rng.standard_normal((2, 6)), rng.standard_normal((6, 2))
    g = rng.standard_normal(u_np.shape)

    def run():
        u = Tensor(u_np, requires_grad=True)
        W1, W2 = Tensor(w1, requires_grad=True), Tensor(w2, requires_grad=True)
        r = F.relu(u)
        s = F.sigmoid(F.linear(F.relu(F.linear(F.global_avg_pool2d(r), W1)), W2))
        F.scale(r, s).backward(g)
        return u.grad.numpy(), W1.grad.numpy(), W2.grad.numpy()

    fast = run()
    with speed.use_fast(False):
        slow = run()
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_without_a_graph():
    rng = np.random.default_rng(3)
    u, s = rng.standard_normal((4, 3, 2, 2)), rng.uniform(0, 1, (4, 3))
    with no_grad():
        y = F.scale(Tensor(u), Tensor(s)).numpy()
    np.testing.assert_array_equal(y, u * s[:, :, None, None])


def test_supports_only_cpu_floating_arrays():
    assert fast_scale.supports(np.zeros((2, 3, 1, 1)), np.zeros((2, 3)))
    assert not fast_scale.supports(np.zeros((2, 3, 1, 1), np.float16), np.zeros((2, 3), np.float16))
    with simulated_gpu() as gpu:
        assert not fast_scale.supports(gpu.asarray(np.zeros((2, 3, 1, 1))), gpu.asarray(np.zeros((2, 3))))
