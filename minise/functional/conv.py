"""2-D convolution (NCHW), as torch.nn.functional.conv2d: the fast im2col path and a plain-loop reference.

For input x (N, C, H, W), weight W (O, C/G, kh, kw), bias b (O,), stride s, zero padding p,
dilation d and G groups (output channel o sees only the input channels of its group g = o // (O/G)):

    y[n, o, i, j] = b[o] + Σ_c Σ_u Σ_v  W[o, c, u, v] · x_pad[n, g·C/G + c, i·s_h + u·d_h, j·s_w + v·d_w]

    H_out = ⌊(H + 2 p_h − d_h (kh − 1) − 1) / s_h⌋ + 1      (W_out likewise)

im2col. Every input value that one output pixel sees is one column of a matrix X_col
(C·kh·kw rows, N·H_out·W_out columns); the convolution is then one matrix product per group,

    Y = W_mat X_col        (W_mat: O × C/G·kh·kw per group)

and the gradients are two more,

    ∂L/∂W_mat = ∂L/∂Y · X_colᵀ,      ∂L/∂X_col = W_matᵀ · ∂L/∂Y,

after which col2im adds every column back onto the input pixels it came from (a pixel seen by
several windows gets the sum of their gradients), and ∂L/∂b[o] = Σ_{n,i,j} ∂L/∂y[n, o, i, j].
"""

from __future__ import annotations

from typing import Any

from ..autograd import Function, Tensor
from ..backend import get_array_module

__all__ = ["conv2d", "conv2d_reference", "Conv2d", "Conv2dReference", "conv_output_size"]

IntPair = int | tuple[int, int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """⌊(size + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1"""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check(x: Any, w: Any, b: Any, stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int], groups: int, name: str = "conv2d") -> tuple[int, int]:
    """Validate shapes and settings; return (H_out, W_out)."""
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if w.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D weight (out_channels, in_channels/groups, kh, kw), "
                         f"got shape {tuple(w.shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{name}: groups must be a positive int, got {groups!r}")
    if min(stride) < 1:
        raise ValueError(f"{name}: stride must be >= 1, got {stride}")
    if min(padding) < 0:
        raise ValueError(f"{name}: padding must be >= 0, got {padding}")
    if min(dilation) < 1:
        raise ValueError(f"{name}: dilation must be >= 1, got {dilation}")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if c % groups:
        raise ValueError(f"{name}: in_channels ({c}) must be divisible by groups ({groups})")
    if o % groups:
        raise ValueError(f"{name}: out_channels ({o}, weight.shape[0]) must be divisible by groups ({groups})")
    if cg * groups != c:
        raise ValueError(f"{name}: expected input with weight.shape[1] * groups = {cg} * {groups} = {cg * groups} "
                         f"channels, got {c} channels (input shape {tuple(x.shape)})")
    if b is not None and tuple(b.shape) != (o,):
        raise ValueError(f"{name}: expected bias of shape ({o},), got {tuple(b.shape)}")
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(wd, kw, stride[1], padding[1], dilation[1])
    if ho < 1 or wo < 1:
        raise ValueError(
            f"{name}: kernel {kh}x{kw} (dilation {dilation}) is larger than the padded input "
            f"{h + 2 * padding[0]}x{wd + 2 * padding[1]}: output size would be {ho}x{wo}"
        )
    return ho, wo


def _pad(x: Any, padding: tuple[int, int]) -> Any:
    """x with ``padding`` zeros on each side of H and W (x itself when there is none)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def _unpad(g: Any, padding: tuple[int, int]) -> Any:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return g
    return g[:, :, ph:g.shape[2] - ph, pw:g.shape[3] - pw]


class Conv2d(Function):
    """y = conv2d(x, W, b) by im2col and one matrix product per group (see the module docstring).

    Columns are laid out (C·kh·kw, N·H_out·W_out), rows channel-major, so that col2im in the
    backward pass adds whole (N, H_out, W_out) planes onto the channel-first padded gradient.
    Only x is saved; backward rebuilds the columns (an input is C·H·W numbers per sample, its
    columns kh·kw times more).
    """

    def __init__(self, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> None:
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups

    # ------------------------------------------------------------------ im2col / col2im
    def _columns(self, xc: Any, kh: int, kw: int, ho: int, wo: int) -> Any:
        """(G, C/G·kh·kw, N·H_out·W_out) columns from the channel-first padded input xc (C, N, Hp, Wp)."""
        xp = get_array_module(xc)
        (sh, sw), (dh, dw) = self.stride, self.dilation
        c, n = xc.shape[:2]
        s_c, s_n, s_h, s_w = xc.strides
        # windows[c, u, v, n, i, j] = xc[c, n, i·sh + u·dh, j·sw + v·dw]   (a view: no copy yet)
        windows = xp.lib.stride_tricks.as_strided(
            xc, shape=(c, kh, kw, n, ho, wo), strides=(s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw))
        return windows.reshape(self.groups, (c // self.groups) * kh * kw, n * ho * wo)  # the copy

    def _col2im(self, gcols: Any, shape_c: tuple[int, ...], kh: int, kw: int, ho: int, wo: int) -> Any:
        """Adjoint of _columns: add every column entry back onto its padded pixel, (C, N, Hp, Wp)."""
        xp = get_array_module(gcols)
        (sh, sw), (dh, dw) = self.stride, self.dilation
        c, n = shape_c[:2]
        gcols = gcols.reshape(c, kh, kw, n, ho, wo)
        gxc = xp.zeros(shape_c, dtype=gcols.dtype)
        for u in range(kh):
            for v in range(kw):
                # windows overlap when stride < kernel: `+=`, never `=`
                gxc[:, :, u * dh:u * dh + sh * (ho - 1) + 1:sh, v * dw:v * dw + sw * (wo - 1) + 1:sw] += gcols[:, u, v]
        return gxc

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x, w, b=None):
        ho, wo = _check(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        xp = get_array_module(x)
        n = x.shape[0]
        o, _, kh, kw = w.shape
        g = self.groups
        self.save(x, w)
        self.shapes = (ho, wo, b is not None)
        xc = _pad(x, self.padding).transpose(1, 0, 2, 3)
        cols = self._columns(xc, kh, kw, ho, wo)
        y = xp.matmul(w.reshape(g, o // g, -1), cols)  # (G, O/G, N·Ho·Wo)
        y = y.reshape(o, n, ho, wo).transpose(1, 0, 2, 3)
        if b is not None:
            y = y + b.reshape(1, o, 1, 1)
        return xp.ascontiguousarray(y)

    def backward(self, gy):
        x, w = self.saved
        ho, wo, has_bias = self.shapes
        xp = get_array_module(gy)
        n = x.shape[0]
        o, _, kh, kw = w.shape
        g = self.groups
        gx = gw = gb = None
        gy_mat = gy.transpose(1, 0, 2, 3).reshape(g, o // g, n * ho * wo)
        if self.needs_input_grad[1]:
            xc = _pad(x, self.padding).transpose(1, 0, 2, 3)
            cols = self._columns(xc, kh, kw, ho, wo)
            gw = xp.matmul(gy_mat, cols.transpose(0, 2, 1)).reshape(w.shape)
            del cols
        if self.needs_input_grad[0]:
            gcols = xp.matmul(w.reshape(g, o // g, -1).transpose(0, 2, 1), gy_mat)
            ph, pw = self.padding
            shape_c = (x.shape[1], n, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw)
            gxc = self._col2im(gcols, shape_c, kh, kw, ho, wo)
            gx = xp.ascontiguousarray(_unpad(gxc.transpose(1, 0, 2, 3), self.padding))
        if has_bias and self.needs_input_grad[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return gx, gw, gb


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
           padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """2-D convolution of an NCHW input, as ``torch.nn.functional.conv2d``.

    y[n, o, i, j] = b[o] + Σ_{c,u,v} W[o, c, u, v] · x_pad[n, g·C/G + c, i·s_h + u·d_h, j·s_w + v·d_w]

    input (N, C, H, W); weight (O, C/groups, kh, kw); bias (O,) or None; stride, padding
    (zeros) and dilation an int or an (h, w) pair. Returns (N, O, H_out, W_out).
    """
    return Conv2d(stride, padding, dilation, groups)(input, weight, bias)


# ---------------------------------------------------------------------- the plain-loop reference
class Conv2dReference(Function):
    """The same convolution, one output number at a time: slow, but it reads like the formula.

    Forward:   y[n, o, i, j] = b[o] + Σ window(x, n, g, i, j) · W[o]
    Backward:  that window of ∂L/∂x gets  ∂L/∂y[n, o, i, j] · W[o],
               ∂L/∂W[o] gets ∂L/∂y[n, o, i, j] · window(x, n, g, i, j),
               ∂L/∂b[o] = Σ_{n,i,j} ∂L/∂y[n, o, i, j].
    """

    def __init__(self, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> None:
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups

    def _window(self, i: int, j: int, kh: int, kw: int) -> tuple[slice, slice]:
        """The rows and columns of the padded input that output pixel (i, j) sees."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        return (slice(i * sh, i * sh + dh * (kh - 1) + 1, dh),
                slice(j * sw, j * sw + dw * (kw - 1) + 1, dw))

    def forward(self, x, w, b=None):
        ho, wo = _check(x, w, b, self.stride, self.padding, self.dilation, self.groups, "conv2d_reference")
        xp = get_array_module(x)
        self.save(x, w)
        self.has_bias = b is not None
        n_batch = x.shape[0]
        out_channels, cg, kh, kw = w.shape
        og = out_channels // self.groups
        x_pad = _pad(x, self.padding)
        y = xp.zeros((n_batch, out_channels, ho, wo), dtype=x.dtype)
        for n in range(n_batch):
            for o in range(out_channels):
                g = o // og  # the group of output channel o sees input channels g·cg ... (g+1)·cg − 1
                for i in range(ho):
                    for j in range(wo):
                        rows, cols = self._window(i, j, kh, kw)
                        patch = x_pad[n, g * cg:(g + 1) * cg, rows, cols]
                        y[n, o, i, j] = (patch * w[o]).sum()
        if b is not None:
            y += b.reshape(1, out_channels, 1, 1)
        return y

    def backward(self, gy):
        x, w = self.saved
        xp = get_array_module(x)
        n_batch, _, ho, wo = gy.shape
        out_channels, cg, kh, kw = w.shape
        og = out_channels // self.groups
        x_pad = _pad(x, self.padding)
        gx_pad = xp.zeros_like(x_pad)
        gw = xp.zeros_like(w)
        for n in range(n_batch):
            for o in range(out_channels):
                g = o // og
                for i in range(ho):
                    for j in range(wo):
                        rows, cols = self._window(i, j, kh, kw)
                        gx_pad[n, g * cg:(g + 1) * cg, rows, cols] += gy[n, o, i, j] * w[o]
                        gw[o] += gy[n, o, i, j] * x_pad[n, g * cg:(g + 1) * cg, rows, cols]
        gx = xp.ascontiguousarray(_unpad(gx_pad, self.padding))
        gb = gy.sum(axis=(0, 2, 3)) if self.has_bias else None
        return gx, gw, gb


def conv2d_reference(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntPair = 1,
                     padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """:func:`conv2d` written as plain loops over every output number (slow; for reading and testing)."""
    return Conv2dReference(stride, padding, dilation, groups)(input, weight, bias)
