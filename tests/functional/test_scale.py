import numpy as np
import pytest
import torch

import minise.functional as F
from minise import Tensor, gradcheck

from ..conftest import on


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 4, 5), (3, 8, 1, 7)])
def test_gradcheck(device, shape):
    rng = np.random.default_rng(0)
    u = Tensor(on(device, rng.standard_normal(shape)), requires_grad=True)
    s = Tensor(on(device, rng.uniform(0.1, 0.9, shape[:2])), requires_grad=True)
    assert gradcheck(F.scale, [u, s])


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_against_torch(device, dtype, tol):
    rng = np.random.default_rng(2)
    u_np = rng.standard_normal((4, 6, 5, 5)).astype(dtype)
    s_np = rng.uniform(0, 1, (4, 6)).astype(dtype)
    g_np = rng.standard_normal(u_np.shape).astype(dtype)
    u, s = Tensor(on(device, u_np), requires_grad=True), Tensor(on(device, s_np), requires_grad=True)
    y = F.scale(u, s)
    y.backward(on(device, g_np))
    ut, st = torch.tensor(u_np, requires_grad=True), torch.tensor(s_np, requires_grad=True)
    yt = ut * st[:, :, None, None]
    yt.backward(torch.tensor(g_np))
    for mine, theirs in [(y, yt), (u.grad, ut.grad), (s.grad, st.grad)]:
        np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), rtol=tol, atol=tol)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"expected s of shape \(2, 3\)"):
        F.scale(Tensor(np.zeros((2, 3, 4, 4))), Tensor(np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"u of shape \(N, C, H, W\)"):
        F.scale(Tensor(np.zeros((2, 3))), Tensor(np.zeros((2, 3))))
