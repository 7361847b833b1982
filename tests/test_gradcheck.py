import numpy as np
import pytest

import minise.functional as F
from minise import Function, GradcheckError, Tensor, gradcheck, gradcheck_directional


class WrongSquare(Function):
    """y = x², with a deliberately wrong backward (forgets the factor 2)."""

    def forward(self, x):
        self.save(x)
        return x * x

    def backward(self, gy):
        (x,) = self.saved
        return gy * x


def test_a_wrong_backward_is_caught_and_named():
    x = Tensor(np.array([[0.5, -1.0], [2.0, 3.0]]), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 0 .* at index \(\d, \d\): analytic .* numeric"):
        gradcheck(lambda x: WrongSquare()(x), [x])
    with pytest.raises(GradcheckError, match="directional"):
        gradcheck_directional(lambda x: WrongSquare()(x), [x])


def test_a_right_backward_passes():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    w = Tensor(np.random.default_rng(1).standard_normal((2, 4)), requires_grad=True)
    assert gradcheck(lambda x, w: F.tanh(F.linear(x, w)), [x, w])
    assert gradcheck_directional(lambda x, w: F.tanh(F.linear(x, w)), [x, w])


def test_needs_float64():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 2, [x])


def test_transposed_gradient_is_caught():
    """A random upstream gradient catches what an all-ones one would hide."""

    class WrongTranspose(Function):
        def forward(self, x):
            return x.T.copy()

        def backward(self, gy):
            return gy  # should be gy.T

    x = Tensor(np.random.default_rng(0).standard_normal((3, 3)), requires_grad=True)
    with pytest.raises(GradcheckError):
        gradcheck(lambda x: WrongTranspose()(x), [x])
