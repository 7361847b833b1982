"""Shape operations: they move numbers around without changing them, so each backward moves
the gradient back the same way."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from .. import backend
from ..autograd import Function, Tensor
from ..backend import get_array_module

__all__ = ["reshape", "flatten", "getitem", "to_device", "concat"]


class Reshape(Function):
    """y = x viewed with another shape;   ∂L/∂x = ∂L/∂y reshaped back"""

    keeps_integers = True

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError as exc:
            raise ValueError(f"reshape: cannot view shape {tuple(x.shape)} as {self.shape}") from exc

    def backward(self, gy):
        return gy.reshape(self.in_shape)


def _is_basic(index: Any) -> bool:
    """Whether ``index`` is basic indexing (slices, integers, None, ...): it names each element at most once."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, slice)
               or (isinstance(p, Integral) and not isinstance(p, bool)) for p in parts)


class GetItem(Function):
    """y = x[index];   ∂L/∂x = zeros with ∂L/∂y added at index (repeated indices add up)"""

    keeps_integers = True

    def __init__(self, index: Any) -> None:
        self.index = index

    def forward(self, x):
        self.in_shape, self.in_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.in_shape, dtype=self.in_dtype)
        if _is_basic(self.index):
            gx[self.index] = gy  # no index repeats: a plain copy (add.at is about 10× slower)
        else:
            xp.add.at(gx, self.index, gy)
        return gx


class ToDevice(Function):
    """y = x copied to another device;   ∂L/∂x = ∂L/∂y copied back"""

    keeps_integers = True

    def __init__(self, device: str) -> None:
        self.device = device

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy):
        return backend.to_device(gy, self.source)


class Concat(Function):
    """y = [x_1, x_2, …] joined along ``axis``;   ∂L/∂x_k = the slice of ∂L/∂y that x_k filled"""

    keeps_integers = True

    def __init__(self, axis: int = 1) -> None:
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        grads, start = [], 0
        for n in self.sizes:
            index = [slice(None)] * gy.ndim
            index[self.axis] = slice(start, start + n)
            grads.append(gy[tuple(index)])
            start += n
        return tuple(grads)


def reshape(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    return Reshape(shape)(x)


def flatten(x: Tensor, start_dim: int = 1) -> Tensor:
    """(N, C, H, W) -> (N, C·H·W) by default: all axes from ``start_dim`` on become one."""
    shape = x.shape[:start_dim] + (-1,)
    return Reshape(shape)(x)


def getitem(x: Tensor, index: Any) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data
    return GetItem(index)(x)


def to_device(x: Tensor, device: str) -> Tensor:
    return ToDevice(device)(x)


def concat(xs: list[Tensor], axis: int = 1) -> Tensor:
    """Join tensors along ``axis`` (channels by default: the Inception module's filter concatenation)."""
    return Concat(axis)(*xs)
