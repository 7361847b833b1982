import numpy as np
import pytest
import torch

import minise.functional as F
from minise import Tensor, gradcheck
from minise.backend import to_numpy

from ..conftest import on


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5), (1, 1, 3, 3), (5, 2, 1, 1)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck(device, shape, training, affine):
    rng = np.random.default_rng(0)
    c = shape[1]
    x = Tensor(on(device, rng.standard_normal(shape) * 2 + 1), requires_grad=True)
    w = Tensor(on(device, rng.uniform(0.5, 1.5, c)), requires_grad=True)
    b = Tensor(on(device, rng.standard_normal(c)), requires_grad=True)
    rm, rv = on(device, rng.standard_normal(c)), on(device, rng.uniform(0.5, 2, c))
    if affine:
        assert gradcheck(lambda x, w, b: F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training), [x, w, b])
    else:
        assert gradcheck(lambda x: F.batch_norm(x, rm.copy(), rv.copy(), training=training), [x])


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 6, 6)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_against_torch(device, shape, training, dtype, tol):
    rng = np.random.default_rng(1)
    c = shape[1]
    x_np = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w_np, b_np = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm_np, rv_np = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    g_np = rng.standard_normal(shape).astype(dtype)

    x, w, b = (Tensor(on(device, a), requires_grad=True) for a in (x_np, w_np, b_np))
    rm, rv = on(device, rm_np), on(device, rv_np)
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3)
    y.backward(on(device, g_np))

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    rmt, rvt = torch.tensor(rm_np), torch.tensor(rv_np)
    yt = torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training=training, momentum=0.3)
    yt.backward(torch.tensor(g_np))

    for mine, theirs in [(y, yt), (x.grad, xt.grad), (w.grad, wt.grad), (b.grad, bt.grad),
                         (Tensor(rm), rmt), (Tensor(rv), rvt)]:
        assert mine.dtype == dtype
        np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), rtol=tol, atol=tol)


def test_running_variance_is_unbiased():
    x = np.array([[1.0], [2.0], [4.0]])
    rm, rv = np.zeros(1), np.ones(1)
    F.batch_norm(Tensor(x), rm, rv, training=True, momentum=1.0)
    assert rm[0] == pytest.approx(7 / 3)
    assert rv[0] == pytest.approx(np.var(x, ddof=1))


def test_bad_input():
    x = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="expected 2-D .* or 4-D"):
        F.batch_norm(x, np.zeros(3), np.ones(3))
    x = Tensor(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"running_mean of shape \(3,\)"):
        F.batch_norm(x, np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match=r"weight of shape \(3,\)"):
        F.batch_norm(x, np.zeros(3), np.ones(3), weight=Tensor(np.ones(2)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batch_norm(Tensor(np.zeros((1, 3))), np.zeros(3), np.ones(3), training=True)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (7, 2), (128, 16, 8, 8)])
def test_forward_matches_the_textbook_passes(device, shape, dtype, rtol):
    """The forward computes σ² without the temporary (x − μ)² and makes x̂ in place: the numbers of
    the plain formula, up to the order of the sums."""
    rng = np.random.default_rng(5)
    x_np = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    c = shape[1]
    w_np, b_np = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    axes = (0,) + tuple(range(2, len(shape)))
    bshape = (1, c) + (1,) * (len(shape) - 2)
    mean = x_np.mean(axis=axes, keepdims=True)
    var = ((x_np - mean) ** 2).mean(axis=axes, keepdims=True)
    expected = (x_np - mean) / np.sqrt(var + dtype(1e-5)) * w_np.reshape(bshape) + b_np.reshape(bshape)
    rm, rv = on(device, np.zeros(c, dtype)), on(device, np.ones(c, dtype))
    y = F.batch_norm(Tensor(on(device, x_np)), rm, rv, Tensor(on(device, w_np)), Tensor(on(device, b_np)),
                     training=True)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    m = x_np.size // c
    np.testing.assert_allclose(to_numpy(rv), 0.9 + 0.1 * var.reshape(c) * m / (m - 1), rtol=rtol * 10)
