"""Elementwise non-linearities: δ (ReLU) and σ (sigmoid) of the excitation, Eq. 3, and tanh."""

from __future__ import annotations

from .. import speed
from ..autograd import Function, Tensor
from ..backend import get_array_module

__all__ = ["relu", "sigmoid", "tanh"]


class ReLU(Function):
    """y = δ(x) = max(x, 0);   ∂L/∂x = ∂L/∂y · [x > 0]   (the gradient at exactly 0 is taken as 0)

    On the CPU the work goes to ``minise.fast.relu`` (the same numbers, in cache-sized blocks and threads)."""

    def forward(self, x):
        xp = get_array_module(x)
        self.fast = speed.fast_path("relu", x)
        y = self.fast.forward(x) if self.fast is not None else xp.maximum(x, 0)
        self.save(y)  # y > 0 exactly where x > 0, and y is kept alive by the next layer anyway
        return y

    def backward(self, gy):
        if self.fast is not None:
            return self.fast.backward(self.saved[0], gy)
        # BEGIN SOLUTION autograd/relu
        (y,) = self.saved
        return gy * (y > 0)
        # END SOLUTION


class Sigmoid(Function):
    """s = σ(x) = 1 / (1 + e^(−x));   ∂L/∂x = ∂L/∂s · s · (1 − s)

    Stable for large |x|: with e = e^(−|x|) ∈ (0, 1], σ(x) = 1/(1 + e) for x ≥ 0 and e/(1 + e) for
    x < 0, so no exponential ever overflows.
    """

    def forward(self, x):
        xp = get_array_module(x)
        e = xp.exp(-xp.abs(x))
        s = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        self.save(s)
        return s

    def backward(self, gs):
        # BEGIN SOLUTION autograd/sigmoid
        (s,) = self.saved
        return gs * s * (1 - s)
        # END SOLUTION


class Tanh(Function):
    """y = tanh(x);   ∂L/∂x = ∂L/∂y · (1 − y²)"""

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.tanh(x)
        self.save(y)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return gy * (1 - y * y)


def relu(x: Tensor) -> Tensor:
    return ReLU()(x)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid()(x)


def tanh(x: Tensor) -> Tensor:
    return Tanh()(x)
