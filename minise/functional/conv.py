"""2-D convolution (NCHW), as torch.nn.functional.conv2d: im2col, and a plain-loop reference.

For input x (N, C, H, W), weight W (O, C/G, kh, kw), bias b (O,), stride s, zero padding p,
dilation d and G groups (output channel o sees only the C/G input channels of its group
g = o // (O/G)):

    y[n, o, i, j] = b[o] + Σ_c Σ_u Σ_v  W[o, c, u, v] · x_pad[n, g·C/G + c, i·s_h + u·d_h, j·s_w + v·d_w]

    H_out = ⌊(H + 2 p_h − d_h (kh − 1) − 1) / s_h⌋ + 1      (W_out likewise; see ``window.py``)

**im2col.** Copy every input value that one output pixel sees into one column of a matrix X_col
(C/G·kh·kw rows per group, one column per output pixel of the batch). The convolution is then one
matrix product per group, and so are the gradients:

    Y = W_mat X_col,      ∂L/∂W_mat = ∂L/∂Y · X_colᵀ,      ∂L/∂X_col = W_matᵀ · ∂L/∂Y,

where W_mat is W viewed as O/G × (C/G·kh·kw). **col2im** takes ∂L/∂X_col back to ∂L/∂x by adding
each column entry onto the input pixel it was copied from (a pixel seen by several windows
collects the sum). And ∂L/∂b[o] = Σ_{n,i,j} ∂L/∂y[n, o, i, j].

**The input gradient as a convolution.** For stride 1, ∂L/∂x is itself a convolution: the
upstream gradient, padded by d(k − 1) − p, correlated with the kernel flipped in both spatial
directions and with its in/out channels swapped,

    ∂L/∂x[n, c, a, e] = Σ_o Σ_u Σ_v W[o, c, u, v] · ∂L/∂y[n, o, a + p_h − u·d_h, e + p_w − v·d_w].

That replaces the gradient-of-columns product and the col2im additions with the forward path (one
column copy and one product); strided convolutions use col2im.

**Layout.** The columns are channel-first, (C/G·kh·kw, N·H_out·W_q), so one product per group
covers the batch. Each output row is computed on the padded grid, W_q = ⌈W_pad / s_w⌉ wide instead
of W_out, and the extra W_q − W_out columns are dropped: with stride 1 the rows of a window then
lie back to back in memory and the copy runs over long stretches. A spare zero row under the
padded input keeps the reads of the last (dropped) columns inside the array, and zeros in
∂L/∂y's dropped columns keep their garbage out of the gradients. Only the input is saved for
backward; the columns are rebuilt there.

**Speed machinery** (``minise.speed``, the op only calls it): on the CPU the columns are built a
block of samples at a time (``CPU_BLOCK_BYTES``), so they are still in the cache when the product
reads them, and the batch is cut into one part per core, each part on a thread of its own with
BLAS on one thread (a conv with too little work per part, ``speed.PARALLEL_MIN_MACS``, stays whole).
Neither changes the maths: the numbers are those of one block and one thread
up to rounding (BLAS may order a narrower product's sums differently, and ∂L/∂W adds up the parts).
The measured effect of each choice is in benchmarks/README.md.

**Fast path** (``minise/fast/conv.py``, off with ``minise.speed.use_fast(False)``): on the CPU,
ungrouped convolutions build exact columns (channels-last rows, or per-sample planes where output
rows are long) in buffers each thread reuses: the same sums, fewer passes over memory.
"""

from __future__ import annotations

from typing import Any

from .. import speed
from ..autograd import Function, Tensor
from ..backend import get_array_module
from .window import IntPair, Window, output_size, pad, pair, unpad

__all__ = ["conv2d", "conv2d_reference", "Conv2d", "Conv2dReference", "conv_output_size", "CPU_BLOCK_BYTES"]

conv_output_size = output_size  # the formula lives in window.py

CPU_BLOCK_BYTES: int | None = None
"""Size of one block of columns on the CPU (passed to ``minise.speed.block_size``); None: half a
core's L2 cache (``minise.speed.default_block_bytes()``, read when a conv runs). Tests lower it to
exercise many blocks."""


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
           padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    r"""2-D convolution of an NCHW input, as ``torch.nn.functional.conv2d``.

    y[n, o, i, j] = b[o] + Σ_{c,u,v} W[o, c, u, v] · x_pad[n, g·C/G + c, i·s_h + u·d_h, j·s_w + v·d_w]

    input (N, C, H, W); weight (O, C/groups, kh, kw); bias (O,) or None; stride, padding
    (zeros) and dilation an int or an (h, w) pair. Returns (N, O, H_out, W_out).

    By im2col (one group): X_col (C·kh·kw, N·H_out·W_out) holds every window as a column, and

    .. math::

        Y = W_{\mathrm{mat}} X_{\mathrm{col}} + b, \qquad
        \frac{\partial L}{\partial W_{\mathrm{mat}}} = \frac{\partial L}{\partial Y} X_{\mathrm{col}}^\top, \qquad
        \frac{\partial L}{\partial x} = \mathrm{col2im}\Big(W_{\mathrm{mat}}^\top
        \frac{\partial L}{\partial Y}\Big), \qquad
        \frac{\partial L}{\partial b} = \sum_{n,i,j} \frac{\partial L}{\partial y}

    with W_mat the weight as an (O, C·kh·kw) matrix; col2im adds each column entry back to its pixel.
    """
    return Conv2d(stride, padding, dilation, groups)(input, weight, bias)


class Conv2d(Function):
    """y = conv2d(x, W, b) by im2col and one matrix product per group (see the module docstring)."""

    def __init__(self, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> None:
        self.stride = pair(stride, "stride", "conv2d")
        self.padding = pair(padding, "padding", "conv2d")
        self.dilation = pair(dilation, "dilation", "conv2d")
        self.groups = groups

    def forward(self, x, w, b=None):
        geo = _check(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        self.geo, self.has_bias = geo, b is not None
        self.save(x, w)
        fast = speed.fast_path("conv", x, w, b)  # minise/fast/conv.py: the same sums, fewer passes
        self.fast = fast if fast is not None and fast.handles(geo, self.groups) else None
        if _is_pointwise(geo):
            y = _pointwise(x, w, self.stride, self.groups)
        elif self.fast is not None:
            y = self.fast.forward(x, w, geo)
        else:  # y = W_mat X_col, each part of the batch on a thread of its own
            y, _ = speed.over_batch(lambda s: (_correlate(x[s], w, geo, self.groups), None), x,
                                    (x.shape[0], w.shape[0], geo.out_h, geo.out_w), x.dtype,
                                    macs_per_sample=geo.macs(w.size))
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, gy):
        x, w = self.saved
        need_x, need_w = self.needs_input_grad[:2]
        gb = gy.sum(axis=(0, 2, 3)) if self.has_bias and self.needs_input_grad[2] else None
        if x.shape[0] == 0:  # an empty batch: ∂L/∂x is empty and ∂L/∂W = Σ over no images = 0
            xp = get_array_module(x, w)
            gx, gw = (xp.zeros_like(x) if need_x else None), (xp.zeros_like(w) if need_w else None)
        elif _is_pointwise(self.geo):
            gx, gw = _pointwise_backward(x, w, gy, self.stride, self.groups, need_x, need_w)
        elif self.fast is not None:
            gx, gw = self.fast.backward(x, w, gy, self.geo, need_x, need_w)
        else:
            gx, gw = self._backward_by_parts(x, w, gy, need_x, need_w)
        return (gx, gw, gb)[:len(self.needs_input_grad)]  # called as f(x, w) or f(x, w, b)

    def _backward_by_parts(self, x: Any, w: Any, gy: Any, need_x: bool, need_w: bool) -> tuple[Any, Any]:
        """∂L/∂x part by part of the batch and ∂L/∂W = Σ over the parts, each part on a thread of its
        own. ∂L/∂W (and, for strides > 1, ∂L/∂x) from the columns; ∂L/∂x for stride 1 as the
        correlation of ∂L/∂y with the flipped kernel."""
        full = self._full_correlation(gy)
        x_by_col2im = need_x and full is None
        w_flipped = _flipped(w, self.groups) if need_x and full is not None else None

        def part(s: slice) -> tuple[Any, Any]:
            gx_part = gw_part = None
            if need_w or x_by_col2im:
                gw_part, gx_part = self._backward_by_columns(x[s], w, gy[s], need_w, x_by_col2im)
            if w_flipped is not None:
                gx_part = _correlate(gy[s], w_flipped, full, self.groups)
            return gx_part, gw_part

        macs = self.geo.macs(w.size) * (need_x + need_w)  # per sample: one product per gradient
        gx, gw_parts = speed.over_batch(part, x, x.shape if need_x else None, gy.dtype, macs_per_sample=macs)
        gw = None
        if need_w:
            gw = gw_parts[0]
            for more in gw_parts[1:]:
                gw = gw + more
        return gx, gw

    def _full_correlation(self, gy: Any) -> _Geometry | None:
        """Geometry of ∂L/∂x as a correlation of ∂L/∂y (stride 1 and p ≤ d(k − 1) only), else None."""
        geo = self.geo
        (ph, pw), (dh, dw) = self.padding, self.dilation
        full = (dh * (geo.kh - 1) - ph, dw * (geo.kw - 1) - pw)
        if self.stride != (1, 1) or min(full) < 0:
            return None
        return _Geometry(geo.kernel, (1, 1), full, self.dilation, gy.shape[2], gy.shape[3])

    def _backward_by_columns(self, x: Any, w: Any, gy: Any, need_w: bool, need_x: bool) -> tuple[Any, Any]:
        """Block by block: ∂L/∂W_mat += ∂L/∂Y · X_colᵀ, and (if asked) ∂L/∂x by col2im of W_matᵀ · ∂L/∂Y."""
        # BEGIN SOLUTION conv/backward
        xp = get_array_module(gy)
        geo, g = self.geo, self.groups
        n = x.shape[0]
        o, cg, kh, kw = w.shape
        ho, wq = geo.out_h, geo.grid_w
        grid = _grid(x, geo)
        gy_grid = _on_grid(gy, geo)
        gw_t = xp.zeros((g, cg * kh * kw, o // g), dtype=w.dtype) if need_w else None  # ∂L/∂W_matᵀ
        g_grid = xp.zeros_like(grid) if need_x else None
        w_t = w.reshape(g, o // g, cg * kh * kw).transpose(0, 2, 1)
        step = _block_size(x, x.shape[1] * kh * kw * ho * wq * x.itemsize)
        for n0 in range(0, n, step):
            block = grid[n0:n0 + step]
            b = block.shape[0]
            gy_block = gy_grid[:, n0:n0 + b].reshape(g, o // g, b * ho * wq)
            if need_w:
                cols = _windows(block, geo).reshape(g, cg * kh * kw, b * ho * wq)
                # X_col ∂L/∂Yᵀ, then transposed: the same numbers as ∂L/∂Y X_colᵀ, but BLAS
                # computes this orientation faster (benchmarks/README.md)
                gw_t += xp.matmul(cols, gy_block.transpose(0, 2, 1))
            if need_x:
                g_cols = xp.matmul(w_t, gy_block).reshape(x.shape[1], kh, kw, b, ho, wq)
                g_windows = _windows(g_grid[n0:n0 + b], geo)
                for u in range(kh):
                    for v in range(kw):
                        g_windows[:, u, v] += g_cols[:, u, v]  # overlapping windows add up: `+=`
        gx = None
        if need_x:
            ph, pw = self.padding
            gx = xp.ascontiguousarray(g_grid[:, :, ph:ph + geo.h, pw:pw + geo.w])
        gw = gw_t.transpose(0, 2, 1).reshape(w.shape) if need_w else None
        return gw, gx
        # END SOLUTION


# ---------------------------------------------------------------------- im2col
class _Geometry(Window):
    """The windows of a convolution, plus the padded-grid width its columns are computed on."""

    @property
    def kh(self) -> int:
        return self.kernel[0]

    @property
    def kw(self) -> int:
        return self.kernel[1]

    @property
    def grid_w(self) -> int:
        """W_q: output rows are computed this wide (≥ W_out) so that stride-1 windows are contiguous."""
        return -(-(self.w + 2 * self.padding[1]) // self.stride[1])


def _check(x: Any, w: Any, b: Any, stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int], groups: int, op: str = "conv2d") -> _Geometry:
    """Validate shapes and settings (before any work); return the geometry."""
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D weight (out_channels, in_channels/groups, kh, kw), "
                         f"got shape {tuple(w.shape)}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    _, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if min(o, cg, kh, kw) < 1:
        raise ValueError(f"{op}: weight has an empty dimension: shape {tuple(w.shape)}")
    geo = _Geometry((kh, kw), stride, padding, dilation, h, wd)
    if min(stride) < 1 or min(padding) < 0 or min(dilation) < 1:
        geo.check(op)  # raises for the setting out of range
    if c % groups:
        raise ValueError(f"{op}: in_channels ({c}) must be divisible by groups ({groups})")
    if o % groups:
        raise ValueError(f"{op}: out_channels ({o}, weight.shape[0]) must be divisible by groups ({groups})")
    if cg * groups != c:
        raise ValueError(f"{op}: expected input with weight.shape[1] * groups = {cg} * {groups} = {cg * groups} "
                         f"channels, got {c} channels (input shape {tuple(x.shape)})")
    if b is not None and tuple(b.shape) != (o,):
        raise ValueError(f"{op}: expected bias of shape ({o},), got {tuple(b.shape)}")
    return geo.check(op)


def _block_size(x: Any, bytes_per_sample: int) -> int:
    """How many samples go into one block of columns (see ``minise.speed.block_size``)."""
    return speed.block_size(x, bytes_per_sample, speed.block_bytes(CPU_BLOCK_BYTES))


def _grid(x: Any, geo: _Geometry) -> Any:
    """x zero-padded, (N, C, H + 2p_h + 1, W + 2p_w): the extra zero row at the bottom holds the
    reads of the dropped columns of the last output row (see the module docstring)."""
    return pad(x, geo.padding, 0.0, extra_rows=1)


def _windows(grid: Any, geo: _Geometry) -> Any:
    """A view (no copy) of the windows of every output pixel, channel-first:

        windows[c, u, v, n, i, j] = grid[n, c, i·s_h + u·d_h, j·s_w + v·d_w]

    for i < H_out, j < W_q. Reading it copies the columns; writing through it (col2im) adds
    back into ``grid``."""
    xp = get_array_module(grid)
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    n, c = grid.shape[:2]
    s_n, s_c, s_h, s_w = grid.strides
    return xp.lib.stride_tricks.as_strided(
        grid, shape=(c, geo.kh, geo.kw, n, geo.out_h, geo.grid_w),
        strides=(s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw))


def _on_grid(gy: Any, geo: _Geometry) -> Any:
    """∂L/∂y laid out like the columns, (O, N, H_out, W_q), with zeros in the dropped columns:
    those zeros keep the garbage in the dropped columns out of ∂L/∂W and ∂L/∂x."""
    xp = get_array_module(gy)
    n, o, ho, wo = gy.shape
    out = xp.zeros((o, n, ho, geo.grid_w), dtype=gy.dtype)
    out[:, :, :, :wo] = gy.transpose(1, 0, 2, 3)
    return out


def _correlate(x: Any, w: Any, geo: _Geometry, groups: int) -> Any:
    """y = W_mat X_col for every group, block by block; (N, O, H_out, W_out), no bias."""
    # BEGIN SOLUTION conv/forward
    xp = get_array_module(x)
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    ho, wo, wq = geo.out_h, geo.out_w, geo.grid_w
    w_mat = w.reshape(groups, o // groups, cg * kh * kw)
    grid = _grid(x, geo)
    y = xp.empty((n, o, ho, wo), dtype=x.dtype)
    step = _block_size(x, x.shape[1] * kh * kw * ho * wq * x.itemsize)
    for n0 in range(0, n, step):
        block = grid[n0:n0 + step]
        b = block.shape[0]
        cols = _windows(block, geo).reshape(groups, cg * kh * kw, b * ho * wq)  # the im2col copy
        y_block = xp.matmul(w_mat, cols).reshape(o, b, ho, wq)
        y[n0:n0 + b] = y_block.transpose(1, 0, 2, 3)[:, :, :, :wo]
    return y
    # END SOLUTION


def _flipped(w: Any, groups: int) -> Any:
    """W'[c, o, u, v] = W[o, c, kh−1−u, kw−1−v] within each group: the kernel of ∂L/∂x for stride 1."""
    o, cg, kh, kw = w.shape
    og = o // groups
    w = w.reshape(groups, og, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(groups * cg, og, kh, kw)
    return w[:, :, ::-1, ::-1]


# ---------------------------------------------------------------------- 1×1: no columns needed
def _is_pointwise(geo: _Geometry) -> bool:
    return geo.kernel == (1, 1) and geo.padding == (0, 0)


def _pointwise(x: Any, w: Any, stride: tuple[int, int], groups: int) -> Any:
    """A 1×1 convolution without padding is a matrix product per sample: y[n] = W X[n]."""
    xp = get_array_module(x)
    x = x[:, :, ::stride[0], ::stride[1]]
    n, c, ho, wo = x.shape
    o = w.shape[0]
    y = xp.matmul(w.reshape(groups, o // groups, c // groups), x.reshape(n, groups, c // groups, ho * wo))
    return y.reshape(n, o, ho, wo)


def _pointwise_backward(x: Any, w: Any, gy: Any, stride: tuple[int, int], g: int, need_x: bool,
                        need_w: bool) -> tuple[Any, Any]:
    """1×1: ∂L/∂W = Σ_n ∂L/∂Y[n] X[n]ᵀ and ∂L/∂X[n] = Wᵀ ∂L/∂Y[n] (X[n]: the pixels the stride keeps)."""
    xp = get_array_module(gy)
    sh, sw = stride
    n, c, _, _ = x.shape
    o = w.shape[0]
    ho, wo = gy.shape[2:]
    gy_mat = gy.reshape(n, g, o // g, ho * wo)
    gx = gw = None
    if need_w:
        x_mat = x[:, :, ::sh, ::sw].reshape(n, g, c // g, ho * wo)
        gw = xp.matmul(gy_mat, x_mat.transpose(0, 1, 3, 2)).sum(axis=0).reshape(w.shape)
    if need_x:
        w_t = w.reshape(g, o // g, c // g).transpose(0, 2, 1)
        g_sub = xp.matmul(w_t, gy_mat).reshape(n, c, ho, wo)
        if (sh, sw) == (1, 1):
            gx = g_sub
        else:
            gx = xp.zeros(x.shape, dtype=gy.dtype)
            gx[:, :, ::sh, ::sw] = g_sub
    return gx, gw


# ---------------------------------------------------------------------- the plain-loop reference
class Conv2dReference(Function):
    """The same convolution, one output number at a time: slow, but it reads like the formula.

    Forward:   y[n, o, i, j] = b[o] + Σ (window of x_pad seen by (n, o, i, j)) · W[o]
    Backward:  that window of ∂L/∂x_pad gets ∂L/∂y[n, o, i, j] · W[o],
               ∂L/∂W[o] gets ∂L/∂y[n, o, i, j] · (the window),
               ∂L/∂b[o] = Σ_{n,i,j} ∂L/∂y[n, o, i, j].
    """

    def __init__(self, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> None:
        self.stride = pair(stride, "stride", "conv2d_reference")
        self.padding = pair(padding, "padding", "conv2d_reference")
        self.dilation = pair(dilation, "dilation", "conv2d_reference")
        self.groups = groups

    def forward(self, x, w, b=None):
        geo = _check(x, w, b, self.stride, self.padding, self.dilation, self.groups, "conv2d_reference")
        xp = get_array_module(x)
        self.save(x, w)
        self.geo, self.has_bias = geo, b is not None
        n_batch = x.shape[0]
        out_channels, cg, kh, kw = w.shape
        og = out_channels // self.groups
        x_pad = pad(x, self.padding)
        y = xp.zeros((n_batch, out_channels, geo.out_h, geo.out_w), dtype=x.dtype)
        for n in range(n_batch):
            for o in range(out_channels):
                g = o // og  # output channel o sees input channels g·cg … (g+1)·cg − 1
                for i in range(geo.out_h):
                    for j in range(geo.out_w):
                        rows, cols = geo.rows_cols(i, j)
                        y[n, o, i, j] = (x_pad[n, g * cg:(g + 1) * cg, rows, cols] * w[o]).sum()
        if b is not None:
            y += b.reshape(1, out_channels, 1, 1)
        return y

    def backward(self, gy):
        x, w = self.saved
        xp = get_array_module(x)
        n_batch, _, ho, wo = gy.shape
        out_channels, cg, kh, kw = w.shape
        og = out_channels // self.groups
        x_pad = pad(x, self.padding)
        gx_pad = xp.zeros_like(x_pad)
        gw = xp.zeros_like(w)
        for n in range(n_batch):
            for o in range(out_channels):
                g = o // og
                for i in range(ho):
                    for j in range(wo):
                        rows, cols = self.geo.rows_cols(i, j)
                        gx_pad[n, g * cg:(g + 1) * cg, rows, cols] += gy[n, o, i, j] * w[o]
                        gw[o] += gy[n, o, i, j] * x_pad[n, g * cg:(g + 1) * cg, rows, cols]
        gx = unpad(gx_pad, self.padding, x.shape[2], x.shape[3])
        gb = gy.sum(axis=(0, 2, 3)) if self.has_bias else None
        return (gx, gw, gb)[:len(self.needs_input_grad)]


def conv2d_reference(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
                     padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """:func:`conv2d` written as plain loops over every output number (slow; for reading and testing)."""
    return Conv2dReference(stride, padding, dilation, groups)(input, weight, bias)
