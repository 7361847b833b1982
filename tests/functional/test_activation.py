import warnings

import numpy as np
import pytest
import torch

import minise.functional as F
from minise import Tensor, gradcheck

from ..conftest import on

ACTS = [(F.relu, torch.relu), (F.sigmoid, torch.sigmoid), (F.tanh, torch.tanh)]


def away_from_zero(rng, shape):
    """Values with |x| in [0.1, 3]: ReLU's kink at 0 would make finite differences lie."""
    return rng.uniform(0.1, 3.0, shape) * rng.choice([-1.0, 1.0], shape)


@pytest.mark.parametrize("fn,_", ACTS)
@pytest.mark.parametrize("shape", [(1,), (3, 4), (2, 3, 5, 5)])
def test_gradcheck(device, fn, _, shape):
    x = Tensor(on(device, away_from_zero(np.random.default_rng(0), shape)), requires_grad=True)
    assert gradcheck(fn, [x])


@pytest.mark.parametrize("fn,tfn", ACTS)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_against_torch(device, fn, tfn, dtype, tol):
    rng = np.random.default_rng(1)
    x_np = away_from_zero(rng, (4, 6, 3, 3)).astype(dtype)
    g_np = rng.standard_normal(x_np.shape).astype(dtype)
    x = Tensor(on(device, x_np), requires_grad=True)
    y = fn(x)
    y.backward(on(device, g_np))
    xt = torch.tensor(x_np, requires_grad=True)
    yt = tfn(xt)
    yt.backward(torch.tensor(g_np))
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=tol, atol=tol)


def test_sigmoid_is_stable_at_extremes(device):
    x = Tensor(on(device, np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would raise here
        s = F.sigmoid(x)
        s.sum().backward()
    np.testing.assert_array_equal(s.numpy(), np.array([0.0, np.float32(1 / (1 + np.exp(50.0))), 0.5, 1.0, 1.0],
                                                      dtype=np.float32))
    assert np.isfinite(x.grad.numpy()).all()


def test_relu_gradient_at_zero_is_zero():
    x = Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 1.0])
