"""Elementwise arithmetic with NumPy broadcasting, and reductions.

When an input was broadcast in the forward pass (a bias of shape (C, 1, 1) added to (N, C, H, W)),
its gradient is the upstream gradient summed over the broadcast axes: :func:`sum_to`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import speed
from ..autograd import Function, Tensor, as_tensor
from ..backend import get_array_module

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "matmul", "sum", "mean", "sum_to"]


def sum_to(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` down to ``shape``: the adjoint of broadcasting ``shape`` up to ``g.shape``."""
    # BEGIN SOLUTION autograd/sum_to
    if tuple(g.shape) == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)
    # END SOLUTION


class Add(Function):
    """y = a + b;   ∂L/∂a = ∂L/∂y,  ∂L/∂b = ∂L/∂y  (summed over broadcast axes)"""

    keeps_integers = True

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return speed.add(a, b)  # a + b (large arrays on the CPU: split over the threads)

    def backward(self, gy):
        # BEGIN SOLUTION autograd/add
        sa, sb = self.shapes
        return sum_to(gy, sa), sum_to(gy, sb)
        # END SOLUTION


class Sub(Function):
    """y = a − b;   ∂L/∂a = ∂L/∂y,  ∂L/∂b = −∂L/∂y"""

    keeps_integers = True

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, gy):
        sa, sb = self.shapes
        gb = sum_to(-gy, sb) if self.needs_input_grad[1] else None
        return sum_to(gy, sa), gb


class Mul(Function):
    """y = a · b;   ∂L/∂a = ∂L/∂y · b,  ∂L/∂b = ∂L/∂y · a"""

    keeps_integers = True

    def forward(self, a, b):
        self.save(a, b)
        return a * b

    def backward(self, gy):
        # BEGIN SOLUTION autograd/mul
        a, b = self.saved
        ga = sum_to(gy * b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(gy * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb
        # END SOLUTION


class Div(Function):
    """y = a / b;   ∂L/∂a = ∂L/∂y / b,  ∂L/∂b = −∂L/∂y · a / b²"""

    def forward(self, a, b):
        self.save(a, b)
        return a / b

    def backward(self, gy):
        a, b = self.saved
        ga = sum_to(gy / b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(-gy * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    """y = −x;   ∂L/∂x = −∂L/∂y"""

    keeps_integers = True

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x^p (p a constant);   ∂L/∂x = ∂L/∂y · p · x^(p−1)"""

    def __init__(self, p: float) -> None:
        self.p = p
        # integers to a whole power stay integers (as in PyTorch); to any other power they become floats
        self.keeps_integers = isinstance(p, int) and not isinstance(p, bool) and p >= 0

    def forward(self, x):
        self.save(x)
        return x**self.p

    def backward(self, gy):
        (x,) = self.saved
        return gy * self.p * x ** (self.p - 1)


class MatMul(Function):
    """Y = A B for 2-D A (n×k) and B (k×m);   ∂L/∂A = ∂L/∂Y Bᵀ,  ∂L/∂B = Aᵀ ∂L/∂Y"""

    keeps_integers = True

    def forward(self, a, b):
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: expected (n, k) @ (k, m), got {tuple(a.shape)} @ {tuple(b.shape)}")
        self.save(a, b)
        return a @ b

    def backward(self, gy):
        a, b = self.saved
        ga = gy @ b.T if self.needs_input_grad[0] else None
        gb = a.T @ gy if self.needs_input_grad[1] else None
        return ga, gb


def _axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


class Sum(Function):
    """y = Σ_axes x;   ∂L/∂x = ∂L/∂y broadcast back over the summed axes"""

    keeps_integers = True

    def __init__(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> None:
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _axes(self.axis, x.ndim)
        self.shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        if not self.keepdims:
            gy = xp.expand_dims(gy, self.axes) if self.axes else gy
        return xp.broadcast_to(gy, self.shape)


class Mean(Sum):
    """y = (1/n) Σ_axes x;   ∂L/∂x = ∂L/∂y / n broadcast back, n = number of summed elements"""

    keeps_integers = False  # the mean of integers is a float: float32, PyTorch's default dtype

    def forward(self, x):
        y = super().forward(x)
        n = 1
        for a in self.axes:
            n *= x.shape[a]
        if n == 0:  # (1/0) Σ of nothing: no number, so an error rather than NaN and a warning
            raise ValueError(f"mean: over no elements (axes {tuple(self.axes)} of shape {tuple(x.shape)})")
        self.n = n
        return y / x.dtype.type(n)

    def backward(self, gy):
        return super().backward(gy / gy.dtype.type(self.n))


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    """Both operands as Tensors; a Python number takes the other's dtype and device."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    b = as_tensor(b)
    return as_tensor(a, like=b), b


def add(a: Any, b: Any) -> Tensor:
    return Add()(*_pair(a, b))


def sub(a: Any, b: Any) -> Tensor:
    return Sub()(*_pair(a, b))


def mul(a: Any, b: Any) -> Tensor:
    return Mul()(*_pair(a, b))


def div(a: Any, b: Any) -> Tensor:
    return Div()(*_pair(a, b))


def neg(x: Tensor) -> Tensor:
    return Neg()(x)


def pow(x: Tensor, p: float) -> Tensor:  # mirrors torch.pow
    return Pow(p)(x)


def matmul(a: Any, b: Any) -> Tensor:
    return MatMul()(*_pair(a, b))


def sum(x: Tensor, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
    return Sum(axis, keepdims)(x)


def mean(x: Tensor, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
    return Mean(axis, keepdims)(x)
