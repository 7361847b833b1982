"""Where the windows of a convolution or a pooling lie: one place for the settings, sizes and padding.

A window of kh × kw taps, spread by the dilation d, moves with stride s over the input padded by p
zeros (or −∞ for max pooling) on each side. Output pixel (i, j) sees the padded-input positions

    (i·s_h + u·d_h,  j·s_w + v·d_w)      for u < kh, v < kw,

and there are  H_out = ⌊(H + 2 p_h − d_h (kh − 1) − 1) / s_h⌋ + 1  of them down (W_out likewise).

Used by ``conv2d``, the pooling ops and the layers in ``minise.nn`` (which state their output
shapes without computing anything).

**The rule for settings.** ``kernel_size``, ``stride``, ``padding`` and ``dilation`` are an int (the
same on both axes) or a pair (height, width) of ints. ``True`` and ``False`` are refused although
Python counts them as ints: ``stride=True`` is a slip, not a stride of 1. NumPy integers are
accepted and become Python ints.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from ..backend import get_array_module

__all__ = ["IntPair", "pair", "output_size", "pad", "unpad", "Window"]

IntPair = int | tuple[int, int]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def pair(value: IntPair, name: str, op: str) -> tuple[int, int]:
    """``value`` as an (height, width) pair of Python ints; a one-line ValueError naming ``op`` and
    ``name`` for anything else (floats, bools, strings, sequences of another length)."""
    if _is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """⌊(size + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1: how many windows fit along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pad(x: Any, padding: tuple[int, int], fill: float = 0.0, extra_rows: int = 0) -> Any:
    """A new (N, C, H + 2p_h + extra_rows, W + 2p_w) array: x in the middle, ``fill`` around it.

    ``extra_rows`` adds rows of ``fill`` at the bottom (conv's column trick reads into one)."""
    xp = get_array_module(x)
    (ph, pw), (n, c, h, w) = padding, x.shape
    shape = (n, c, h + 2 * ph + extra_rows, w + 2 * pw)
    # zeros come from the allocator already zeroed (no pass over the array to fill it)
    out = xp.zeros(shape, dtype=x.dtype) if fill == 0 else xp.full(shape, fill, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def unpad(g: Any, padding: tuple[int, int], h: int, w: int) -> Any:
    """The (H, W) middle of a padded array (a gradient with respect to the padded input), contiguous."""
    ph, pw = padding
    return get_array_module(g).ascontiguousarray(g[:, :, ph:ph + h, pw:pw + w])


@dataclass(frozen=True)
class Window:
    """The windows of one op over one input size: settings, validation, sizes and offsets."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    h: int  # input height and width
    w: int

    @property
    def out_h(self) -> int:
        return output_size(self.h, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0])

    @property
    def out_w(self) -> int:
        return output_size(self.w, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1])

    def macs(self, weight_size: int) -> int:
        """Multiply-adds per sample of a conv over these windows with ``weight_size`` weights (O·C/g·kh·kw):
        each weight meets every output pixel once."""
        return self.out_h * self.out_w * weight_size

    def check(self, op: str) -> Window:
        """Raise a one-line ValueError (naming ``op``) for settings out of range or windows that do
        not fit in the padded input; return self."""
        if min(self.kernel) < 1:
            raise ValueError(f"{op}: kernel_size must be >= 1, got {self.kernel}")
        if min(self.stride) < 1:
            raise ValueError(f"{op}: stride must be >= 1, got {self.stride}")
        if min(self.padding) < 0:
            raise ValueError(f"{op}: padding must be >= 0, got {self.padding}")
        if min(self.dilation) < 1:
            raise ValueError(f"{op}: dilation must be >= 1, got {self.dilation}")
        if self.out_h < 1 or self.out_w < 1:
            (kh, kw), (dh, dw), (ph, pw) = self.kernel, self.dilation, self.padding
            spread = f" (dilation {dh}x{dw})" if (dh, dw) != (1, 1) else ""
            raise ValueError(f"{op}: kernel {kh}x{kw}{spread} is larger than the padded input "
                             f"{self.h + 2 * ph}x{self.w + 2 * pw}: output size would be {self.out_h}x{self.out_w}")
        return self

    def offset(self, u: int, v: int) -> tuple[slice, slice, slice, slice]:
        """Index of the (N, C, H_out, W_out) slice of the padded input that holds tap (u, v) of every
        window at once: x_pad[:, :, i·s_h + u·d_h, j·s_w + v·d_w] for all i, j."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        top, left = u * dh, v * dw
        return (slice(None), slice(None), slice(top, top + sh * (self.out_h - 1) + 1, sh),
                slice(left, left + sw * (self.out_w - 1) + 1, sw))

    def rows_cols(self, i: int, j: int) -> tuple[slice, slice]:
        """The rows and columns of the padded input that output pixel (i, j) sees."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        return (slice(i * sh, i * sh + dh * (kh - 1) + 1, dh), slice(j * sw, j * sw + dw * (kw - 1) + 1, dw))
