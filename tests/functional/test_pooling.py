"""Pooling: finite differences, PyTorch as the oracle (the tie rule included), bad input, host syncs."""

import numpy as np
import pytest
import torch

import minise.functional as F
from minise import Tensor, gradcheck

from ..conftest import on

# (N, C, H, W), kernel_size, stride, padding
WINDOWS = [
    ((2, 3, 6, 6), 2, None, 0),      # 2×2/2: windows tile the input
    ((2, 2, 7, 7), 3, 2, 1),         # 3×3/2 pad 1: ImageNet ResNet's max pool, overlapping, odd size
    ((1, 1, 5, 6), 3, 1, 0),         # stride 1: every pixel in up to 9 windows; batch 1, one channel
    ((2, 2, 7, 5), (3, 2), (2, 1), (1, 0)),  # non-square kernel, stride and padding
    ((2, 3, 5, 5), 2, 3, 0),         # stride > kernel: some pixels in no window
    ((1, 2, 4, 4), 4, None, 0),      # one window covers everything
    ((2, 2, 6, 5), 3, 2, 0),         # overlapping, no padding, the last column in no window
]
IDS = [f"x{w[0]}-k{w[1]}-s{w[2]}-p{w[3]}" for w in WINDOWS]


def _distinct(shape, rng, dtype=np.float64):
    """Values that differ by at least 0.01, so that a ±1e-6 step never changes which one is the maximum."""
    values = rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01
    return (values - values.mean()).astype(dtype)


@pytest.mark.parametrize("window", WINDOWS, ids=IDS)
def test_gradcheck_max(device, window):
    shape, k, s, p = window
    x = Tensor(on(device, _distinct(shape, np.random.default_rng(0))), requires_grad=True)
    assert gradcheck(lambda x: F.max_pool2d(x, k, s, p), [x])


@pytest.mark.parametrize("window", WINDOWS, ids=IDS)
def test_gradcheck_avg(device, window):
    shape, k, s, p = window
    x = Tensor(on(device, np.random.default_rng(1).standard_normal(shape)), requires_grad=True)
    assert gradcheck(lambda x: F.avg_pool2d(x, k, s, p), [x])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2, 7, 1)])
def test_gradcheck_global(device, shape):
    x = Tensor(on(device, _distinct(shape, np.random.default_rng(2))), requires_grad=True)
    assert gradcheck(F.global_avg_pool2d, [x])
    assert gradcheck(F.global_max_pool2d, [x])


def _against_torch(device, mine, theirs, x_np, dtype, rtol, seed, integer_grad=False):
    x = Tensor(on(device, x_np), requires_grad=True)
    y = mine(x)
    rng = np.random.default_rng(seed)
    gy = (rng.integers(-8, 9, y.shape) if integer_grad else rng.standard_normal(y.shape)).astype(dtype)
    y.backward(on(device, gy))
    xt = torch.tensor(x_np, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(gy))
    for name, m, t in [("y", y, yt), ("grad", x.grad, xt.grad)]:
        m, t = m.numpy(), t.detach().numpy()
        assert m.dtype == t.dtype == dtype, name
        np.testing.assert_allclose(m, t, rtol=rtol, atol=rtol * np.abs(t).max(), err_msg=name)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("window", WINDOWS, ids=IDS)
def test_against_torch(device, window, dtype, rtol):
    shape, k, s, p = window
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal(shape).astype(dtype)
    _against_torch(device, lambda x: F.max_pool2d(x, k, s, p), lambda x: torch.nn.functional.max_pool2d(x, k, s, p),
                   x_np, dtype, rtol, 4)
    _against_torch(device, lambda x: F.avg_pool2d(x, k, s, p), lambda x: torch.nn.functional.avg_pool2d(x, k, s, p),
                   x_np, dtype, rtol, 4)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_global_against_torch(device, dtype, rtol):
    x_np = np.random.default_rng(5).standard_normal((3, 4, 5, 7)).astype(dtype)
    _against_torch(device, F.global_avg_pool2d, lambda x: x.mean(dim=(2, 3)), x_np, dtype, rtol, 6)
    _against_torch(device, F.global_max_pool2d, lambda x: torch.nn.functional.max_pool2d(x, (5, 7))[:, :, 0, 0],
                   x_np, dtype, rtol, 6)


def test_squeeze_is_equation_2():
    """z_c = 1/(H·W) Σ_i Σ_j u_c(i, j), one number per sample and channel."""
    u = np.arange(2 * 3 * 2 * 4, dtype=np.float64).reshape(2, 3, 2, 4)
    z = F.global_avg_pool2d(Tensor(u)).numpy()
    assert z.shape == (2, 3)
    assert z[1, 2] == sum(u[1, 2, i, j] for i in range(2) for j in range(4)) / 8


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_squeeze_in_parts_of_the_batch_gives_the_same_bits(monkeypatch, dtype):
    """Large inputs have their planes summed on the threads, a part of the batch each: not one bit changes."""
    from minise import speed
    from minise.functional import pooling

    u = np.random.default_rng(7).standard_normal((7, 5, 6, 9)).astype(dtype)
    whole = F.global_avg_pool2d(Tensor(u)).numpy()
    seen = []
    real = speed.in_parallel
    monkeypatch.setattr(speed, "in_parallel", lambda fn, parts, limit_blas=True: seen.append(parts) or
                        real(fn, parts, limit_blas))
    monkeypatch.setattr(speed, "NUM_THREADS", 3)
    monkeypatch.setattr(pooling, "SQUEEZE_PARALLEL_MIN_BYTES", 0)
    split = F.global_avg_pool2d(Tensor(u)).numpy()
    assert seen == [[slice(0, 2), slice(2, 4), slice(4, 7)]]
    assert split.dtype == dtype
    np.testing.assert_array_equal(split, whole)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("window", WINDOWS + [((2, 2, 6, 6), 3, 1, 1)], ids=IDS + ["x(2, 2, 6, 6)-k3-s1-p1"])
def test_max_ties_like_torch(device, window, dtype):
    """Ties: the whole gradient of a window goes to one element, its first maximum in row-major order.

    Compared exactly: an integer upstream gradient makes the sums over overlapping windows exact."""
    shape, k, s, p = window
    rng = np.random.default_rng(7)
    for x_np in (rng.integers(0, 3, shape).astype(dtype), np.ones(shape, dtype)):
        _against_torch(device, lambda x: F.max_pool2d(x, k, s, p),
                       lambda x: torch.nn.functional.max_pool2d(x, k, s, p), x_np, dtype, 0.0, 8,
                       integer_grad=True)


def test_max_tie_rule_by_hand():
    x = Tensor(np.ones((1, 1, 3, 3)), requires_grad=True)
    F.max_pool2d(x, 2, stride=1).backward(np.array([[[[1.0, 2.0], [4.0, 8.0]]]]))
    # each 2×2 window of equal values sends its whole gradient to its top-left element
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[1, 2, 0], [4, 8, 0], [0, 0, 0]])


def test_global_max_ties():
    x = Tensor(np.array([[[[1.0, 3.0], [3.0, 0.0]]]]), requires_grad=True)
    F.global_max_pool2d(x).backward(np.array([[5.0]]))
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[0, 5], [0, 0]])


def test_avg_counts_padding():
    """count_include_pad: a corner window with padding 1 holds 4 real values and 5 zeros, divisor 9."""
    y = F.avg_pool2d(Tensor(np.ones((1, 1, 4, 4))), 3, stride=1, padding=1).numpy()
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert y[0, 0, 1, 1] == pytest.approx(1.0)


def test_float32_stays_float32(device):
    x = Tensor(on(device, np.random.default_rng(9).standard_normal((2, 3, 6, 6)).astype(np.float32)),
               requires_grad=True)
    for fn in (lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: F.avg_pool2d(x, 3, 2, 1),
               F.global_avg_pool2d, F.global_max_pool2d):
        x.grad = None
        y = fn(x)
        y.backward(on(device, np.ones(y.shape, np.float32)))
        assert y.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d])
def test_bad_input(fn):
    name = fn.__name__
    x = Tensor(np.zeros((2, 3, 5, 5)))
    with pytest.raises(ValueError, match=rf"{name}: expected a 4-D input \(N, C, H, W\), got shape \(3, 5, 5\)"):
        fn(Tensor(np.zeros((3, 5, 5))), 2)
    with pytest.raises(ValueError, match=rf"{name}: kernel 7x7 is larger than the padded input 5x5: "
                                         r"output size would be 0x0"):
        fn(x, 7)
    with pytest.raises(ValueError, match=rf"{name}: kernel_size must be an int or a pair of ints, got 'a'"):
        fn(x, "a")
    with pytest.raises(ValueError, match=rf"{name}: kernel_size must be >= 1, got \(0, 0\)"):
        fn(x, 0)
    with pytest.raises(ValueError, match=rf"{name}: stride must be >= 1, got \(0, 0\)"):
        fn(x, 2, 0)
    with pytest.raises(ValueError, match=rf"{name}: padding must be at most half the kernel size, "
                                         r"got padding \(2, 2\) for kernel \(3, 3\)"):
        fn(x, 3, 1, 2)
    with pytest.raises(ValueError, match=rf"{name}: padding must be >= 0, got \(-1, -1\)"):
        fn(x, 3, 1, -1)


@pytest.mark.parametrize("fn", [F.global_avg_pool2d, F.global_max_pool2d])
def test_bad_input_global(fn):
    with pytest.raises(ValueError, match=rf"{fn.__name__}: expected a 4-D input \(N, C, H, W\), got shape \(2, 3\)"):
        fn(Tensor(np.zeros((2, 3))))


def test_no_host_syncs(simulated_gpu):
    """Forward and backward on the simulated GPU pull no number back to the host."""
    x = Tensor(on("cuda", np.random.default_rng(10).standard_normal((2, 3, 7, 7)).astype(np.float32)),
               requires_grad=True)
    for fn in (lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: F.avg_pool2d(x, 3, 2, 1),
               F.global_avg_pool2d, F.global_max_pool2d):
        gy = on("cuda", np.ones(fn(x).shape, np.float32))
        simulated_gpu.SYNCS[0] = 0
        fn(x).backward(gy)
        assert simulated_gpu.SYNCS[0] == 0
