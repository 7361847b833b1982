"""conv2d on the CPU with pixel-major columns: the same sums as ``minise.functional.conv``, fewer passes.

The textbook path builds channel-first columns (C·kh·kw rows, one column per output pixel) from an
NCHW input, so each copied run is one output row (8 numbers on an 8×8 map), and it computes rows on
the padded grid (W_q ≥ W_out wide) to make those runs longer. Here the input block is written once,
channels last, into a zero-bordered buffer, (b, H + 2p_h, W + 2p_w, C); then one window of one output
pixel is kh runs of kw·C numbers back to back, and the columns are exactly one row per output pixel:

    X_rows[(n, i, j), (u, v, c)] = x_pad[n, i·s_h + u·d_h, j·s_w + v·d_w, c]
    Y_rows = X_rows W_k,    W_k[(u, v, c), o] = W[o, c, u, v]           (b·H_out·W_out × O)
    ∂L/∂W_k += X_rowsᵀ ∂L/∂Y_rows                                        (one product per block)
    ∂L/∂x: stride 1: the correlation of ∂L/∂y, zero-padded by d(k − 1) − p, with the flipped kernel
           (the same code as the forward); otherwise ∂L/∂X_rows = ∂L/∂Y_rows W_kᵀ added back
           window offset by window offset (col2im) into a zero-bordered buffer.

Long rows of output pixels (2·W_out ≥ kw·C: the stems, 16 channels at 32×32) take the textbook's own
layout one sample at a time instead: X_col[n] (C·kh·kw × H_out·W_out), built in runs of W_out numbers
from the stride phases of the padded input, so Y[n] = W_mat X_col[n] is y[n] itself and
∂L/∂W_mat = Σ_n ∂L/∂Y[n] X_col[n]ᵀ reads ∂L/∂y as it is (no transposes of y or ∂L/∂y).

Every buffer of a block (the padded input, the columns, the product) belongs to the thread and is
reused from call to call (growing when a larger one is needed): no fresh allocation per block, so no
page faults on first touch. The batch is cut into one part per core (``speed.batch_parts``); each
thread writes its samples straight into the one output array. Grouped convolutions keep the
textbook path (``handles``).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from .. import speed
from ..functional.window import Window

SOLVES = ("conv/forward", "conv/backward")

BLOCK_BYTES = speed.default_block_bytes()
"""Bytes of columns per block (passed to ``speed.block_size``): half a core's L2 cache, as the textbook
path (1 and 2 MiB measured alike; the smaller holds less memory); tests lower it to run many blocks."""

_local = threading.local()


def supports(*arrays: Any) -> bool:
    """NumPy arrays, all float32 or all float64 (None, for an absent bias, is ignored)."""
    given = [a for a in arrays if a is not None]
    return (all(isinstance(a, np.ndarray) for a in given) and len({a.dtype for a in given}) == 1
            and given[0].dtype in (np.float32, np.float64))


def handles(geo: Window, groups: int) -> bool:
    """One group (grouped convolutions keep the textbook path, one product per group)."""
    return groups == 1


def _buffer(role: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """This thread's array for ``role``, viewed as ``shape`` (contents left over from the last use)."""
    buffers = _local.__dict__.setdefault("buffers", {})
    size = math.prod(shape)
    key = (role, np.dtype(dtype))
    flat = buffers.get(key)
    if flat is None or flat.size < size:
        flat = buffers[key] = np.empty(size, dtype=dtype)
    return flat[:size].reshape(shape)


def _padded(src: Any, padding: tuple[int, int], role: str) -> np.ndarray:
    """src (b, H, W, C), any strides, written into this thread's zero-bordered (b, H + 2p_h, W + 2p_w, C)."""
    b, h, w, c = src.shape
    ph, pw = padding
    grid = _buffer(role, (b, h + 2 * ph, w + 2 * pw, c), src.dtype)
    if ph or pw:
        grid.fill(0)  # one call, not four for the borders: each call costs the threads the shared lock
    grid[:, ph:ph + h, pw:pw + w] = src
    return grid


def _windows(grid: np.ndarray, geo: Window) -> np.ndarray:
    """windows[n, i, j, u, v, c] = grid[n, i·s_h + u·d_h, j·s_w + v·d_w, c] (a view, no copy)."""
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    s_n, s_h, s_w, s_c = grid.strides
    return _view(grid, (grid.shape[0], geo.out_h, geo.out_w, geo.kernel[0], geo.kernel[1], grid.shape[3]),
                 (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))


def _view(buffer: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...], offset: int = 0) -> np.ndarray:
    """A strided view into a contiguous buffer, starting ``offset`` bytes in (``as_strided`` without
    its Python overhead: a few microseconds per block, and the threads share one interpreter lock)."""
    return np.ndarray(shape, buffer.dtype, buffer, offset, strides)


def _rows(src: Any, geo: Window) -> np.ndarray:
    """X_rows of one block: src (b, H, W, C) → (b·H_out·W_out, kh·kw·C), this thread's buffer."""
    grid = _padded(src, geo.padding, "grid")
    b, c = src.shape[0], src.shape[3]
    rows = _buffer("rows", (b, geo.out_h, geo.out_w, geo.kernel[0], geo.kernel[1], c), src.dtype)
    np.copyto(rows, _windows(grid, geo))
    return rows.reshape(b * geo.out_h * geo.out_w, -1)


def _product_into(rows: np.ndarray, w_k: np.ndarray, out: np.ndarray) -> None:
    """out (b, O, H_out, W_out) = rows W_k, one row per output pixel, moved to channels first."""
    b, o, ho, wo = out.shape
    product = _buffer("product", (b * ho * wo, o), out.dtype)
    np.matmul(rows, w_k, out=product)
    out[...] = product.reshape(b, ho * wo, o).transpose(0, 2, 1).reshape(out.shape)


def _step(x: np.ndarray, geo: Window, channels: int, w: np.ndarray) -> int:
    """Samples per block: about BLOCK_BYTES of columns, and at least as many bytes as the weight, so
    that each product reads (and ∂L/∂W adds up) the weight over enough pixels (512 channels at 7×7:
    one sample's columns are a tenth of the weight)."""
    k = geo.kernel[0] * geo.kernel[1] * channels
    return speed.block_size(x, geo.out_h * geo.out_w * k * x.itemsize, max(BLOCK_BYTES, w.nbytes))


def _by_parts(fn: Any, n: int, x: np.ndarray) -> list[Any]:
    """fn(start, stop) for each part of the batch, one thread per part (``speed.in_parallel``)."""
    return speed.in_parallel(lambda s: fn(*s.indices(n)[:2]), speed.batch_parts(x))


def _k_major(w: np.ndarray) -> np.ndarray:
    """W_k[(u, v, c), o] = W[o, c, u, v], contiguous."""
    o = w.shape[0]
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(-1, o)


def forward(x: np.ndarray, w: np.ndarray, geo: Window) -> np.ndarray:
    """y = conv2d(x, W) without bias, (N, O, H_out, W_out)."""
    n, o = x.shape[0], w.shape[0]
    y = np.empty((n, o, geo.out_h, geo.out_w), dtype=x.dtype)
    if _planes(x, geo):  # Y[n] = W_mat X_col[n], written straight into y[n]
        w_mat = w.reshape(o, -1)
        step = _planes_step(x, geo)

        def part(start: int, stop: int) -> None:
            for n0 in range(start, stop, step):
                n1 = min(n0 + step, stop)
                cols = _plane_columns(x[n0:n1], geo)
                np.matmul(w_mat, cols, out=y[n0:n1].reshape(n1 - n0, o, -1))

        _by_parts(part, n, x)
        return y
    w_k = _k_major(w)
    step = _step(x, geo, x.shape[1], w)

    def part(start: int, stop: int) -> None:
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            _product_into(_rows(x[n0:n1].transpose(0, 2, 3, 1), geo), w_k, y[n0:n1])

    _by_parts(part, n, x)
    return y


def backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, geo: Window, need_x: bool,
             need_w: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(∂L/∂x, ∂L/∂W) of conv2d (each None where not needed), block by block, one part of the batch per thread.

    Stride 1 (and p ≤ d(k − 1)): the rows of ∂L/∂y padded by d(k − 1) − p, G_rows[(n, a, e), (u, v, o)]
    = ∂L/∂y_pad[n, a + u·d_h, e + v·d_w, o], serve both gradients:

        ∂L/∂x_rows = G_rows W'_k,    W'_k[(u, v, o), c] = W[o, c, kh−1−u, kw−1−v]   (the flipped kernel)
        ∂L/∂W'_k  = G_rowsᵀ x_rows,   x_rows[(n, a, e), c] = x[n, c, a, e]             (no columns of x)

    With long rows (``_planes``) the same per sample: ∂L/∂x[n] = W'_mat G_col[n], ∂L/∂W'_mat = Σ_n G_col[n] x[n]ᵀ.
    Otherwise ∂L/∂W_k = X_rowsᵀ ∂L/∂Y_rows (with long rows Σ_n ∂L/∂Y[n] X_col[n]ᵀ), and ∂L/∂x by col2im.
    """
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = geo.out_h, geo.out_w
    (ph, pw), (dh, dw) = geo.padding, geo.dilation
    full = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)  # ∂L/∂y's padding when ∂L/∂x is a correlation
    by_correlation = need_x and geo.stride == (1, 1) and min(full) >= 0
    gx = np.empty(x.shape, dtype=gy.dtype) if need_x else None
    if by_correlation:
        geo_x = Window(geo.kernel, (1, 1), full, geo.dilation, ho, wo)
        planes = _planes(gy, geo_x)
        if planes:  # W'_mat[c, (o, u, v)] = W[o, c, kh−1−u, kw−1−v]
            w_flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
            step = _planes_step(gy, geo_x)
        else:  # W'_k[(u, v, o), c]
            w_flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).reshape(-1, c)
            step = _step(x, geo_x, o, w)
    else:
        planes = need_w and _planes(x, geo)
        w_k = _k_major(w) if need_x else None
        step = _planes_step(x, geo) if planes else _step(x, geo, c, w)

    def part(start: int, stop: int) -> np.ndarray | None:
        gw_k = None  # ∂L/∂W'_k, ∂L/∂W_mat (few channels) or ∂L/∂W_k: summed over the blocks
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            b = n1 - n0
            if by_correlation and planes:
                g_cols = _plane_columns(gy[n0:n1], geo_x)
                np.matmul(w_flipped, g_cols, out=gx[n0:n1].reshape(b, c, -1))
                if need_w:
                    gw_k = _add(gw_k, np.matmul(g_cols, x[n0:n1].reshape(b, c, -1).transpose(0, 2, 1)).sum(axis=0))
                continue
            if by_correlation:
                g_rows = _rows(gy[n0:n1].transpose(0, 2, 3, 1), geo_x)
                _product_into(g_rows, w_flipped, gx[n0:n1])
                if need_w:
                    x_rows = _buffer("x", (b, h, wd, c), x.dtype)
                    x_rows[...] = x[n0:n1].transpose(0, 2, 3, 1)
                    gw_k = _add(gw_k, np.matmul(g_rows.T, x_rows.reshape(-1, c)))
                continue
            if planes:
                cols = _plane_columns(x[n0:n1], geo)
                gw_k = _add(gw_k, np.matmul(gy[n0:n1].reshape(b, o, -1), cols.transpose(0, 2, 1)).sum(axis=0))
                if not need_x:
                    continue
            gy_rows = _buffer("gy", (b, ho, wo, o), gy.dtype)
            gy_rows[...] = gy[n0:n1].transpose(0, 2, 3, 1)
            gy_rows = gy_rows.reshape(b * ho * wo, o)
            if need_w and not planes:
                gw_k = _add(gw_k, np.matmul(_rows(x[n0:n1].transpose(0, 2, 3, 1), geo).T, gy_rows))
            if need_x:
                _col2im_block(gy_rows, w_k, geo, gx[n0:n1])
        return gw_k

    gw_parts = _by_parts(part, n, x)
    if not need_w:
        return gx, None
    gw_k = gw_parts[0]
    for more in gw_parts[1:]:
        gw_k += more
    if by_correlation and planes:  # ∂L/∂W[o, c, u, v] = ∂L/∂W'_mat[(o, kh−1−u, kw−1−v), c]
        gw = gw_k.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)[:, :, ::-1, ::-1]
    elif by_correlation:  # ∂L/∂W[o, c, u, v] = ∂L/∂W'_k[(kh−1−u, kw−1−v, o), c]
        gw = gw_k.reshape(kh, kw, o, c).transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]
    elif planes:  # W_mat: O × (c, u, v), W's own layout
        gw = gw_k.reshape(w.shape)
    else:  # rows (u, v, c)
        gw = gw_k.reshape(kh, kw, c, o).transpose(3, 2, 0, 1)
    return gx, np.ascontiguousarray(gw)


def _add(total: np.ndarray | None, more: np.ndarray) -> np.ndarray:
    """total + more, in place after the first block."""
    if total is None:
        return more
    total += more
    return total


def _col2im_block(gy_rows: np.ndarray, w_k: np.ndarray, geo: Window, out: np.ndarray) -> None:
    """out (b, C, H, W) = ∂L/∂x of one block: ∂L/∂X_rows = ∂L/∂Y_rows W_kᵀ, each window offset (u, v)
    added back onto the pixels it was read from (overlapping windows add up: ``+=``)."""
    b, c, h, wd = out.shape
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    kh, kw = geo.kernel
    g_rows = _buffer("rows", (gy_rows.shape[0], kh * kw * c), out.dtype)
    np.matmul(gy_rows, w_k.T, out=g_rows)
    g_rows = g_rows.reshape(b, geo.out_h, geo.out_w, kh, kw, c)
    grid = _buffer("grid", (b, h + 2 * ph, wd + 2 * pw, c), out.dtype)
    grid.fill(0)
    s_n, s_h, s_w, s_c = grid.strides
    # with dilation 1, s consecutive offsets u (or v) land on distinct pixels for every output pixel:
    # one `+=` pass takes them together (4 passes instead of 9 for a 3×3/2 kernel, runs of s·C numbers)
    step_u, step_v = (sh if dh == 1 else 1), (sw if dw == 1 else 1)
    for u in range(0, kh, step_u):
        nu = min(step_u, kh - u)
        for v in range(0, kw, step_v):
            nv = min(step_v, kw - v)
            at = _view(grid, (b, geo.out_h, nu, geo.out_w, nv, c),
                       (s_n, s_h * sh, s_h * dh, s_w * sw, s_w * dw, s_c), u * dh * s_h + v * dw * s_w)
            at += g_rows[:, :, :, u:u + nu, v:v + nv].transpose(0, 1, 3, 2, 4, 5)
    out[...] = grid[:, ph:ph + h, pw:pw + wd].transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------- long rows: per-sample planes
def _planes(x: np.ndarray, geo: Window) -> bool:
    """Whether a row of output pixels (W_out numbers, the run of the per-sample columns) is at least half
    as long as a window row (kw·C numbers, the run of the pixel-major rows): then the per-sample columns
    are cheaper (no transposes). Measured: the stems (C = 3) and 16 channels at 32×32 take them,
    32 channels at 16×16 and 64 at 8×8 do not (benchmarks/README.md)."""
    return 2 * geo.out_w >= geo.kernel[1] * x.shape[1]


PLANES_BLOCK_BYTES = 1 << 20
"""Bytes of per-sample columns per block (at most BLOCK_BYTES): with few channels the products are
memory-bound, so the block is kept small enough for the columns to stay in the cache."""


def _planes_step(x: np.ndarray, geo: Window) -> int:
    k = geo.kernel[0] * geo.kernel[1] * x.shape[1]
    return speed.block_size(x, geo.out_h * geo.out_w * k * x.itemsize, min(BLOCK_BYTES, PLANES_BLOCK_BYTES))


def _plane_columns(x: Any, geo: Window) -> np.ndarray:
    """X_col[n] of each sample of one block, (b, C·kh·kw, H_out·W_out): the textbook's columns, one
    sample at a time, so that W_mat X_col[n] is y[n] itself (channels first, no transpose).

    Each column row is copied in runs of W_out numbers: the zero-padded input is first split into
    its stride phases, phase[a, e][n, c, r, t] = x_pad[n, c, r·s_h + a, t·s_w + e], so that with
    u·d_h = q_u·s_h + a and v·d_w = q_v·s_w + e the window entry (c, u, v) of output pixel (i, j) is
    phase[a, e][n, c, i + q_u, j + q_v]: a row of outputs reads a run of one phase's row."""
    b, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    kh, kw = geo.kernel
    ho, wo = geo.out_h, geo.out_w
    cols = _buffer("rows", (b, c, kh, kw, ho, wo), x.dtype)
    if sh == sw == 1:  # one phase, the padded input itself: every run in one copy
        grid = _buffer("grid", (b, c, h + 2 * ph, w + 2 * pw), x.dtype)
        if ph or pw:
            grid.fill(0)
        grid[:, :, ph:ph + h, pw:pw + w] = x
        s_n, s_c, s_r, s_t = grid.strides
        np.copyto(cols, _view(grid, cols.shape, (s_n, s_c, s_r * dh, s_t * dw, s_r, s_t)))
        return cols.reshape(b, c * kh * kw, ho * wo)
    rows, width = -(-(h + 2 * ph) // sh), -(-(w + 2 * pw) // sw)
    phases = _buffer("grid", (b, sh * sw, c, rows, width), x.dtype)
    phases.fill(0)
    for a in range(sh):
        for e in range(sw):
            r0, t0 = max(0, -(-(ph - a) // sh)), max(0, -(-(pw - e) // sw))  # the first row, column inside x
            src = x[:, :, r0 * sh + a - ph::sh, t0 * sw + e - pw::sw]
            phases[:, a * sw + e, :, r0:r0 + src.shape[2], t0:t0 + src.shape[3]] = src
    for u in range(kh):
        qu, a = divmod(u * dh, sh)
        for v in range(kw):
            qv, e = divmod(v * dw, sw)
            cols[:, :, u, v] = phases[:, a * sw + e, :, qu:qu + ho, qv:qv + wo]
    return cols.reshape(b, c * kh * kw, ho * wo)
