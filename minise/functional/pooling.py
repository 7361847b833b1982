"""Pooling over NCHW feature maps: max and average over sliding windows, and the global squeeze.

A window of size kh × kw moves with stride (s_h, s_w) over the input padded by p on each side:

    max:  y[n, c, i, j] = max_{u,v}        x_pad[n, c, i·s_h + u, j·s_w + v]    (padding = −∞)
    avg:  y[n, c, i, j] = 1/(kh·kw) Σ_{u,v} x_pad[n, c, i·s_h + u, j·s_w + v]    (padding = 0, counted)

    H_out = ⌊(H + 2 p_h − kh) / s_h⌋ + 1      (W_out likewise; see ``window.py``)

Both are computed as kh·kw whole-array operations, one per window offset (u, v): the slice
x_pad[:, :, u::s_h, v::s_w] (H_out × W_out of it) holds, for every output pixel at once, the input
value at offset (u, v) of its window. Backward adds the gradient back through the same slices with
``+=``, so a pixel shared by overlapping windows (stride < kernel) collects from all of them.

The global pools reduce each whole channel to one number, (N, C, H, W) -> (N, C):

    global average (the SE squeeze, Eq. 2):  z_c = 1/(H·W) Σ_i Σ_j u_c(i, j)
    global max (the paper's max-squeeze ablation):  z_c = max_{i,j} u_c(i, j)
"""

from __future__ import annotations

from typing import Any

from .. import speed
from ..autograd import Function, Tensor
from ..backend import get_array_module
from .window import IntPair, Window, pad, pair, unpad

__all__ = ["max_pool2d", "avg_pool2d", "global_avg_pool2d", "global_max_pool2d",
           "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d"]


def _check_4d(x: Any, op: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")


class _Pool2d(Function):
    """Shared settings, shape checks and window slicing of max_pool2d and avg_pool2d."""

    op = "pool2d"

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> None:
        self.kernel = pair(kernel_size, "kernel_size", self.op)
        self.stride = self.kernel if stride is None else pair(stride, "stride", self.op)
        self.padding = pair(padding, "padding", self.op)
        Window(self.kernel, self.stride, self.padding, (1, 1), 1 << 30, 1 << 30).check(self.op)  # settings in range
        if self.padding[0] * 2 > self.kernel[0] or self.padding[1] * 2 > self.kernel[1]:
            raise ValueError(f"{self.op}: padding must be at most half the kernel size, "
                             f"got padding {self.padding} for kernel {self.kernel}")

    def _output_size(self, x: Any) -> tuple[int, int]:
        """Check x and fix the windows over it; return (H_out, W_out)."""
        _check_4d(x, self.op)
        self.window = Window(self.kernel, self.stride, self.padding, (1, 1), x.shape[2], x.shape[3]).check(self.op)
        return self.window.out_h, self.window.out_w

    def _pad(self, x: Any, fill: float) -> Any:
        return x if self.padding == (0, 0) else pad(x, self.padding, fill)

    def _unpad(self, g: Any) -> Any:
        h, w = self.window.h, self.window.w
        return g if self.padding == (0, 0) else unpad(g, self.padding, h, w)

    def _offset(self, u: int, v: int, ho: int, wo: int) -> tuple[slice, slice, slice, slice]:
        """Index of the (H_out, W_out) slice of x_pad that holds offset (u, v) of every window
        (ho, wo: the output size, which ``self.window`` already knows)."""
        return self.window.offset(u, v)


class MaxPool2d(_Pool2d):
    """y = max over each window (padding −∞). Backward: the whole ∂L/∂y of a window goes to ONE
    element, its first maximum in row-major order (as PyTorch), summed over overlapping windows."""

    op = "max_pool2d"

    def forward(self, x):
        ho, wo = self._output_size(x)
        xp = get_array_module(x)
        kh, kw = self.kernel
        x_pad = self._pad(x, -float("inf"))
        y = x_pad[self._offset(0, 0, ho, wo)].copy()
        arg = xp.zeros(y.shape, dtype=xp.uint8 if kh * kw < 256 else xp.int32)  # offset u·kw + v of the max
        for u in range(kh):
            for v in range(kw):
                if u == 0 and v == 0:
                    continue
                candidate = x_pad[self._offset(u, v, ho, wo)]
                better = candidate > y  # strictly greater: on a tie the earlier offset keeps the gradient
                arg = xp.where(better, arg.dtype.type(u * kw + v), arg)
                xp.maximum(y, candidate, out=y)
        self.save(arg)
        self.in_shape = x.shape
        return y

    def backward(self, gy):
        # BEGIN SOLUTION conv/max_pool_backward
        (arg,) = self.saved
        xp = get_array_module(gy)
        kh, kw = self.kernel
        ph, pw = self.padding
        n, c, h, w = self.in_shape
        ho, wo = gy.shape[2:]
        gx_pad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
        for u in range(kh):
            for v in range(kw):
                # ∂L/∂y of the windows whose maximum sits at offset (u, v); `+=` as windows overlap
                gx_pad[self._offset(u, v, ho, wo)] += gy * (arg == u * kw + v)
        return self._unpad(gx_pad)
        # END SOLUTION


class AvgPool2d(_Pool2d):
    """y = 1/(kh·kw) Σ over each window (zero padding counted in the divisor, PyTorch's default).
    Backward: every element of a window gets ∂L/∂y / (kh·kw), summed over overlapping windows."""

    op = "avg_pool2d"

    def forward(self, x):
        ho, wo = self._output_size(x)
        kh, kw = self.kernel
        x_pad = self._pad(x, 0.0)
        y = x_pad[self._offset(0, 0, ho, wo)].copy()
        for u in range(kh):
            for v in range(kw):
                if u or v:
                    y += x_pad[self._offset(u, v, ho, wo)]
        self.in_shape = x.shape
        return y * (1.0 / (kh * kw))

    def backward(self, gy):
        # BEGIN SOLUTION conv/avg_pool_backward
        xp = get_array_module(gy)
        kh, kw = self.kernel
        ph, pw = self.padding
        n, c, h, w = self.in_shape
        ho, wo = gy.shape[2:]
        share = gy * (1.0 / (kh * kw))
        gx_pad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
        for u in range(kh):
            for v in range(kw):
                gx_pad[self._offset(u, v, ho, wo)] += share
        return self._unpad(gx_pad)
        # END SOLUTION


SQUEEZE_PARALLEL_MIN_BYTES = 4 << 20
"""Inputs from this size have the squeeze's sums split over the threads. Measured on fresh arrays (median
of 60, one thread against two): 128×16×32×32 float32 (8 MiB) 0.82 → 0.57 ms, 128×32×16×16 (4 MiB) 0.40
→ 0.37, 128×64×8×8 (2 MiB) 0.19 → 0.24 (slower, so not split)."""


class GlobalAvgPool2d(Function):
    """The squeeze (Eq. 2): z_c = 1/(H·W) Σ_i Σ_j u_c(i, j);   ∂L/∂u_c(i, j) = ∂L/∂z_c / (H·W)"""

    def forward(self, x):
        _check_4d(x, "global_avg_pool2d")
        xp = get_array_module(x)
        self.in_shape = n, c, h, w = x.shape
        planes, z = x.reshape(n, c, h * w), xp.empty((n, c), dtype=x.dtype)

        def squeeze(s: slice) -> None:  # Σ over each contiguous plane by einsum: 1.5-3× faster here than mean
            z[s] = xp.einsum("ncl->nc", planes[s])

        # large inputs on the CPU: parts of the batch on the threads (each plane's sum is the same either way)
        speed.in_parallel(squeeze, speed.parts(x, min_bytes=SQUEEZE_PARALLEL_MIN_BYTES), limit_blas=False)
        z *= x.dtype.type(1.0 / (h * w))
        return z

    def backward(self, gz):
        xp = get_array_module(gz)
        n, c, h, w = self.in_shape
        # every pixel of a channel gets the same number: a broadcast view (no memory, no pass over
        # it), added in where it meets the gradient of the other branch, as Sum's backward does
        return xp.broadcast_to((gz * (1.0 / (h * w))).reshape(n, c, 1, 1), self.in_shape)


class GlobalMaxPool2d(Function):
    """z_c = max_{i,j} u_c(i, j);   ∂L/∂u_c goes whole to the first maximum (row-major), 0 elsewhere"""

    def forward(self, x):
        _check_4d(x, "global_max_pool2d")
        xp = get_array_module(x)
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        arg = flat.argmax(axis=2)  # argmax returns the first maximum
        self.save(arg)
        self.in_shape = x.shape
        return xp.take_along_axis(flat, arg[:, :, None], axis=2)[:, :, 0]

    def backward(self, gz):
        (arg,) = self.saved
        xp = get_array_module(gz)
        n, c, h, w = self.in_shape
        hit = xp.arange(h * w).reshape(1, 1, h * w) == arg[:, :, None]
        gx = xp.where(hit, gz[:, :, None], xp.zeros((), dtype=gz.dtype))
        return gx.reshape(self.in_shape)


def max_pool2d(input: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> Tensor:
    """Max over kh×kw windows, as ``torch.nn.functional.max_pool2d`` (stride defaults to the kernel size).

    y[n, c, i, j] = max_{u,v} x_pad[n, c, i·s_h + u, j·s_w + v], padding with −∞; the gradient of each
    window goes to its first maximum in row-major order.
    """
    return MaxPool2d(kernel_size, stride, padding)(input)


def avg_pool2d(input: Tensor, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0) -> Tensor:
    """Mean over kh×kw windows, as ``torch.nn.functional.avg_pool2d`` (count_include_pad=True).

    y[n, c, i, j] = 1/(kh·kw) Σ_{u,v} x_pad[n, c, i·s_h + u, j·s_w + v], padding with zeros.
    """
    return AvgPool2d(kernel_size, stride, padding)(input)


def global_avg_pool2d(input: Tensor) -> Tensor:
    """The SE squeeze (Eq. 2): (N, C, H, W) -> (N, C), z_c = 1/(H·W) Σ_i Σ_j u_c(i, j)."""
    return GlobalAvgPool2d()(input)


def global_max_pool2d(input: Tensor) -> Tensor:
    """Max-squeeze (the paper's ablation): (N, C, H, W) -> (N, C), z_c = max_{i,j} u_c(i, j)."""
    return GlobalMaxPool2d()(input)
