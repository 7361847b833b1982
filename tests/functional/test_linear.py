import numpy as np
import pytest
import torch

import minise.functional as F
from minise import Tensor, gradcheck

from ..conftest import on


@pytest.mark.parametrize("n,i,o", [(1, 1, 1), (4, 3, 5), (7, 16, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(device, n, i, o, bias):
    rng = np.random.default_rng(0)
    x = Tensor(on(device, rng.standard_normal((n, i))), requires_grad=True)
    w = Tensor(on(device, rng.standard_normal((o, i))), requires_grad=True)
    b = Tensor(on(device, rng.standard_normal(o)), requires_grad=True) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    assert gradcheck(lambda x, w, *b: F.linear(x, w, *b), inputs)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_against_torch(device, dtype, tol):
    rng = np.random.default_rng(1)
    x_np, w_np, b_np = (rng.standard_normal(s).astype(dtype) for s in [(8, 12), (5, 12), (5,)])
    g_np = rng.standard_normal((8, 5)).astype(dtype)
    x, w, b = (Tensor(on(device, a), requires_grad=True) for a in (x_np, w_np, b_np))
    y = F.linear(x, w, b)
    y.backward(on(device, g_np))
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    yt = torch.nn.functional.linear(xt, wt, bt)
    yt.backward(torch.tensor(g_np))
    for mine, theirs in [(y, yt), (x.grad, xt.grad), (w.grad, wt.grad), (b.grad, bt.grad)]:
        np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), rtol=tol, atol=tol)


def test_bad_shapes():
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"weight of shape \(out_features, 3\)"):
        F.linear(x, Tensor(np.zeros((4, 2))))
    with pytest.raises(ValueError, match=r"input of shape \(N, in_features\)"):
        F.linear(Tensor(np.zeros((2, 3, 1))), Tensor(np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"bias of shape \(4,\)"):
        F.linear(x, Tensor(np.zeros((4, 3))), Tensor(np.zeros(3)))
