"""conv2d on the CPU with pixel-major columns: the same sums as ``minise.functional.conv``, fewer passes.

The textbook path builds channel-first columns (C·kh·kw rows, one column per output pixel) from an
NCHW input, so each copied run is one output row (8 numbers on an 8×8 map), and it computes rows on
the padded grid (W_q ≥ W_out wide) to make those runs longer. Here the input block is written once,
channels last, into a zero-bordered buffer, (b, H + 2p_h, W + 2p_w, C); then one window of one output
pixel is kh runs of kw·C numbers back to back, and the columns are exactly one row per output pixel:

    X_rows[(n, i, j), (u, v, c)] = x_pad[n, i·s_h + u·d_h, j·s_w + v·d_w, c]
    Y_rows = X_rows W_k,    W_k[(u, v, c), o] = W[o, c, u, v] = W_o[o, (u, v, c)]   (b·H_out·W_out × O)
    ∂L/∂W_k += X_rowsᵀ ∂L/∂Y_rows                                        (one product per block)
    ∂L/∂x: stride 1: the correlation of ∂L/∂y, zero-padded by d(k − 1) − p, with the flipped kernel
           (the same code as the forward); otherwise ∂L/∂X_rows = ∂L/∂Y_rows W_o added back
           window offset by window offset (col2im) into a zero-bordered buffer.

Long rows of output pixels (2·W_out ≥ kw·C: the stems, 16 channels at 32×32) take the textbook's own
layout one sample at a time instead: X_col[n] (C·kh·kw × H_out·W_out), built in runs of W_out numbers
from the stride phases of the padded input, so Y[n] = W_mat X_col[n] is y[n] itself and
∂L/∂W_mat = Σ_n ∂L/∂Y[n] X_col[n]ᵀ reads ∂L/∂y as it is (no transposes of y or ∂L/∂y).

Of those, the convs that keep the map's size at stride 1 (3×3 with padding 1: 16 channels at 32×32,
and the stems' ∂L/∂W) take shifted planes instead: each plane padded by zero rows only and copied
kw times, moved by one window column each (kw copies, not kh·kw, in runs of a whole plane), so
window row u of every output pixel is the same columns moved by u·W; one product per block gives
all kh rows' partial sums, Z = W_rows S, and y is Σ_u of Z's rows moved by u·W, straight into y.

Every buffer of a block (the padded input, the columns, the product) belongs to the thread and is
reused from call to call (growing when a larger one is needed): no fresh allocation per block, so no
page faults on first touch. The batch is cut into parts of whole blocks, ``CHUNKS_PER_THREAD`` per
core, which the threads take in turn as each is free (``speed.in_parallel``); each thread writes its
samples straight into the one output array, and ∂L/∂W is summed part by part in batch order. A batch
with too little work for the threads (``speed.PARALLEL_MIN_MACS`` multiply-adds per part) stays whole,
on the calling thread, with BLAS held at one thread.
Grouped convolutions keep the textbook path (``handles``).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from .. import speed
from ..functional.window import Window

SOLVES = ("conv/forward", "conv/backward")

BLOCK_BYTES: int | None = None
"""Bytes of columns per block (passed to ``speed.block_size``); None: ``speed.default_block_bytes()``,
half a core's L2 cache, as the textbook path (1 and 2 MiB measured alike; the smaller holds less
memory), read when a conv runs. Tests set it to run many blocks."""


def _block_bytes() -> int:
    return speed.block_bytes(BLOCK_BYTES)


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
    return speed.block_size(x, geo.out_h * geo.out_w * k * x.itemsize, max(_block_bytes(), w.nbytes))


CHUNKS_PER_THREAD = 4
"""Parts of the batch per thread, each a run of whole blocks: threads take the next part when free
(``speed.in_parallel``), so a slower core ends up with fewer of them."""


def _by_parts(fn: Any, n: int, x: np.ndarray, step: int, macs: int, w: np.ndarray | None = None) -> list[Any]:
    """[fn(start, stop) for each part of the batch], the parts runs of whole blocks of ``step`` samples,
    in batch order, run on the threads (``speed.in_parallel``). With fewer blocks than threads, one
    part per thread (``speed.batch_parts``), each then a smaller block. ``macs``: multiply-adds per
    sample; a batch with too little work (``speed.PARALLEL_MIN_MACS`` per thread) stays one part.

    ``w``: each part returns its own ∂L/∂W, one array of w's size to keep and add up per part, so a
    thread gets at most BLOCK_BYTES // w.nbytes parts (one for ImageNet's 512→512 3×3)."""
    split = speed.batch_parts(x, macs_per_sample=macs)
    blocks = -(-n // step)
    per_thread = CHUNKS_PER_THREAD if w is None else max(1, min(CHUNKS_PER_THREAD, _block_bytes() // w.nbytes))
    if len(split) > 1 and blocks > len(split) and per_thread > 1:  # runs of whole blocks
        k = min(blocks, per_thread * len(split))
        edges = [min(n, (j * blocks // k) * step) for j in range(k + 1)]
        split = [slice(a, b) for a, b in zip(edges, edges[1:])]
    if len(split) == 1:
        with speed.blas_for_one_part(x, macs):
            return [fn(0, n)]
    return speed.in_parallel(lambda s: fn(*s.indices(n)[:2]), split)


def _o_major(w: np.ndarray) -> np.ndarray:
    """W_o[o, (u, v, c)] = W[o, c, u, v], contiguous: W_k = W_oᵀ is a view (BLAS reads it transposed).

    Copied one filter at a time (runs of C numbers); W_k itself, with o last, reads W at a stride of
    C·kh·kw numbers per element: 8.8 ms against 1.3 for 512→512 3×3."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)


def _flipped_taps(w: np.ndarray) -> np.ndarray:
    """W'_k[(u, v, o), c] = W[o, c, kh−1−u, kw−1−v], contiguous, copied for 32 filters at a time (their
    weights stay in the cache across the kh·kw offsets; one copy of the whole transpose reads all of W
    once per offset: 4.0 ms against 1.5 for 512→512 3×3)."""
    o, c, kh, kw = w.shape
    taps = w.reshape(o, c, kh * kw)[:, :, ::-1].transpose(2, 0, 1)
    out = np.empty(taps.shape, dtype=w.dtype)
    for o0 in range(0, o, 32):
        out[:, o0:o0 + 32] = taps[:, o0:o0 + 32]
    return out.reshape(-1, c)


def forward(x: np.ndarray, w: np.ndarray, geo: Window) -> np.ndarray:
    """y = conv2d(x, W) without bias, (N, O, H_out, W_out)."""
    n, o = x.shape[0], w.shape[0]
    y = np.empty((n, o, geo.out_h, geo.out_w), dtype=x.dtype)
    if _shifted(x, geo, min_channels=8):  # same size, stride 1: one product per block on the shifted planes
        _shifted_forward(x, w, geo, y)
        return y
    if _planes(x, geo):  # Y[n] = W_mat X_col[n], written straight into y[n]
        w_mat = w.reshape(o, -1)
        step = _planes_step(x, geo)

        def part(start: int, stop: int) -> None:
            for n0 in range(start, stop, step):
                n1 = min(n0 + step, stop)
                cols = _plane_columns(x[n0:n1], geo)
                np.matmul(w_mat, cols, out=y[n0:n1].reshape(n1 - n0, o, -1))

        _by_parts(part, n, x, step, geo.macs(w.size))
        return y
    w_k = _o_major(w).T  # a view
    step = _step(x, geo, x.shape[1], w)

    def part(start: int, stop: int) -> None:
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            _product_into(_rows(x[n0:n1].transpose(0, 2, 3, 1), geo), w_k, y[n0:n1])

    _by_parts(part, n, x, step, geo.macs(w.size))
    return y


def backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, geo: Window, need_x: bool,
             need_w: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(∂L/∂x, ∂L/∂W) of conv2d (each None where not needed), block by block, parts of the batch on the threads.

    Stride 1 (and p ≤ d(k − 1)): the rows of ∂L/∂y padded by d(k − 1) − p, G_rows[(n, a, e), (u, v, o)]
    = ∂L/∂y_pad[n, a + u·d_h, e + v·d_w, o], serve both gradients:

        ∂L/∂x_rows = G_rows W'_k,    W'_k[(u, v, o), c] = W[o, c, kh−1−u, kw−1−v]   (the flipped kernel)
        ∂L/∂W'_k  = G_rowsᵀ x_rows,   x_rows[(n, a, e), c] = x[n, c, a, e]             (no columns of x)

    With long rows (``_planes``) the same per sample: ∂L/∂x[n] = W'_mat G_col[n], ∂L/∂W'_mat = Σ_n G_col[n] x[n]ᵀ.
    Otherwise ∂L/∂W_k = X_rowsᵀ ∂L/∂Y_rows (with long rows Σ_n ∂L/∂Y[n] X_col[n]ᵀ), and ∂L/∂x by col2im.
    """
    if _shifted(x, geo):
        return _shifted_backward(x, w, gy, geo, need_x, need_w)
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
            w_flipped = _flipped_taps(w)
            step = _step(x, geo_x, o, w)
    else:
        planes = need_w and _planes(x, geo)
        w_o = _o_major(w) if need_x else None
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
                _col2im_block(gy_rows, w_o, geo, gx[n0:n1])
        return gw_k

    gw_parts = _by_parts(part, n, x, step, geo.macs(w.size) * (need_x + need_w), w if need_w else None)
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


def _col2im_block(gy_rows: np.ndarray, w_o: np.ndarray, geo: Window, out: np.ndarray) -> None:
    """out (b, C, H, W) = ∂L/∂x of one block: ∂L/∂X_rows = ∂L/∂Y_rows W_o, each window offset (u, v)
    added back onto the pixels it was read from (overlapping windows add up: ``+=``)."""
    b, c, h, wd = out.shape
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    kh, kw = geo.kernel
    g_rows = _buffer("rows", (gy_rows.shape[0], kh * kw * c), out.dtype)
    np.matmul(gy_rows, w_o, out=g_rows)
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
    return speed.block_size(x, geo.out_h * geo.out_w * k * x.itemsize, min(_block_bytes(), PLANES_BLOCK_BYTES))


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


# ---------------------------------------------------------------------- same-size, stride 1: shifted planes
def _shifted(x: np.ndarray, geo: Window, min_channels: int = 1) -> bool:
    """Whether the conv keeps the map's size at stride 1 (2p = d(k − 1): 3×3 with padding 1), has long rows
    (as ``_planes``) and at least ``min_channels`` input channels: then it takes the shifted planes below.

    Measured (one thread, CPU time, batch 128, against the per-sample planes): 16→16 @32 forward 15.6 →
    12.4 ms, backward 25.7 → 21.9; the stem 3→16 @32 ∂L/∂W 5.4 → 5.0 but its forward 4.7 → 6.6 (a product
    only C·kw = 9 deep, then kh sums): the forward asks for 8 channels. At 32→32 @16 and 64→64 @8 (not long
    rows) the shifted planes were no faster than the pixel-major rows (29.5 → 28.4 and 25.4 → 36.5 ms)."""
    (ph, pw), (dh, dw) = geo.padding, geo.dilation
    same = geo.stride == (1, 1) and 2 * ph == dh * (geo.kernel[0] - 1) and 2 * pw == dw * (geo.kernel[1] - 1)
    return same and _planes(x, geo) and x.shape[1] >= min_channels


def _shifted_step(x: np.ndarray, geo: Window, channels: int) -> int:
    """Samples per block: about PLANES_BLOCK_BYTES of shifted planes and products."""
    per_sample = (geo.kernel[1] * x.shape[1] + geo.kernel[0] * channels) * (geo.h + 2 * geo.padding[0]) * geo.w
    return speed.block_size(x, per_sample * x.itemsize, min(_block_bytes(), PLANES_BLOCK_BYTES))


def _shifts(src: np.ndarray, geo: Window) -> np.ndarray:
    """S[n, (c, v), q] = x_v[n, c, q + v·d_w − p_w], (b, C·kw, (H + 2p_h)·W), where x_v is each plane of
    src (b, C, H, W) padded by p_h zero rows above and below and read flat at the pitch W, and where
    a column j + v·d_w − p_w outside [0, W) reads zero (not the neighbouring row). Then, for an output
    pixel q = i·W + j, S[n, (c, v), q + u·d_h·W] = x_pad[n, c, i + u·d_h, j + v·d_w]: window row u of
    every output pixel is S's columns moved by u·d_h·W, and the outputs come out at the pitch W."""
    b, c, h, w = src.shape
    (ph, pw), kw, dw = geo.padding, geo.kernel[1], geo.dilation[1]
    n_q, head = (h + 2 * ph) * w, ph * w + pw  # the zeros before each plane in the flat grid
    grid = _buffer("grid", (b, c, n_q + 2 * pw), src.dtype)
    grid[:, :, :head] = 0
    grid[:, :, head + h * w:] = 0
    grid[:, :, head:head + h * w] = src.reshape(b, c, h * w)
    shifted = _buffer("rows", (b, c, kw, n_q), src.dtype)
    s_n, s_c, s_q = grid.strides
    np.copyto(shifted, _view(grid, shifted.shape, (s_n, s_c, s_q * dw, s_q)))
    columns = shifted.reshape(b, c, kw, n_q // w, w)
    for v in range(kw):  # the columns that ran into the row before (δ < 0) or after (δ > 0)
        delta = v * dw - pw
        if delta < 0:
            columns[:, :, v, :, :min(w, -delta)] = 0
        elif delta > 0:
            columns[:, :, v, :, max(0, w - delta):] = 0
    return shifted.reshape(b, c * kw, n_q)


def _sum_rows(shifted: np.ndarray, w_rows: np.ndarray, geo: Window, out: np.ndarray) -> None:
    """out (b, O, H, W) = Σ_u Z[n, (u, o), q + u·d_h·W] with Z[n] = W_rows S[n] (one product per block)."""
    b, o, h, w = out.shape
    kh, dh = geo.kernel[0], geo.dilation[0]
    z = _buffer("product", (b, w_rows.shape[0], shifted.shape[2]), out.dtype)
    np.matmul(w_rows, shifted, out=z)
    flat = out.reshape(b, o, h * w)
    rows = [z[:, u * o:(u + 1) * o, u * dh * w:u * dh * w + h * w] for u in range(kh)]
    if kh == 1:
        np.copyto(flat, rows[0])
    else:
        np.add(rows[0], rows[1], out=flat)
    for more in rows[2:]:
        flat += more


def _shifted_forward(x: np.ndarray, w: np.ndarray, geo: Window, y: np.ndarray) -> None:
    """y = conv2d(x, W) for a same-size stride-1 conv: Z[n] = W_rows S[n] with W_rows[(u, o), (c, v)] =
    W[o, c, u, v], y[n, o, q] = Σ_u Z[n, (u, o), q + u·d_h·W] (runs of H·W numbers, nothing to cut out)."""
    o, c, kh, kw = w.shape
    w_rows = np.ascontiguousarray(w.transpose(2, 0, 1, 3)).reshape(kh * o, c * kw)
    step = _shifted_step(x, geo, o)

    def part(start: int, stop: int) -> None:
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            _sum_rows(_shifts(x[n0:n1], geo), w_rows, geo, y[n0:n1])

    _by_parts(part, x.shape[0], x, step, geo.macs(w.size))


def _moved(shifted: np.ndarray, kh: int, move: int, hw: int) -> np.ndarray:
    """M[n, u, r, q] = S[n, r, q + u·move] for q < H·W: S (b, R, n_q) seen once per window row, (b, kh, R,
    H·W), a view (no copy), so that one stacked product covers every sample and window row of a block."""
    s_n, s_r, s_q = shifted.strides
    return _view(shifted, (shifted.shape[0], kh, shifted.shape[1], hw), (s_n, s_q * move, s_r, s_q))


def _shifted_backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, geo: Window, need_x: bool,
                      need_w: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(∂L/∂x, ∂L/∂W) of a same-size stride-1 conv by shifted planes (its ∂L/∂y padding d(k − 1) − p is p).

    ∂L/∂x: the forward's sum on ∂L/∂y's shifted planes G with the flipped kernel, W'_rows[(u, c), (o, v)]
    = W[o, c, kh−1−u, kw−1−v]; then ∂L/∂W[o, c, kh−1−u, kw−1−v] = Σ_q G[n, (o, v), q + u·d_h·W] x[n, c, q].
    Without ∂L/∂x (the stems): x's shifted planes S and ∂L/∂W[o, c, u, v] = Σ_q ∂L/∂y[n, o, q] S[n, (c, v),
    q + u·d_h·W]. Both read x and ∂L/∂y flat as they are (pixels q = i·W + j)."""
    o, c, kh, kw = w.shape
    hw, move = geo.h * geo.w, geo.dilation[0] * geo.w  # window row u's columns are moved by u·d_h·W
    gx = np.empty(x.shape, dtype=gy.dtype) if need_x else None
    if need_x:
        w_flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 1, 0, 3)).reshape(kh * c, o * kw)
        step = _shifted_step(gy, geo, c)
    else:
        step = _shifted_step(x, geo, o)

    def part(start: int, stop: int) -> np.ndarray | None:
        gw = None  # (kh, O·kw, C) from G, or (kh, O, C·kw) from S: summed over the blocks
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            if need_x:
                g_shifted = _shifts(gy[n0:n1], geo)
                _sum_rows(g_shifted, w_flipped, geo, gx[n0:n1])
                if not need_w:
                    continue
                x_flat = x[n0:n1].reshape(n1 - n0, 1, c, hw).transpose(0, 1, 3, 2)
                products = np.matmul(_moved(g_shifted, kh, move, hw), x_flat)
            else:
                x_shifted = _shifts(x[n0:n1], geo)
                gy_flat = gy[n0:n1].reshape(n1 - n0, 1, o, hw)
                products = np.matmul(gy_flat, _moved(x_shifted, kh, move, hw).transpose(0, 1, 3, 2))
            gw = _add(gw, products.sum(axis=0))  # one product and one sum per block for all kh window rows
        return gw

    gw_parts = _by_parts(part, x.shape[0], x, step, geo.macs(w.size) * (need_x + need_w), w if need_w else None)
    if not need_w:
        return gx, None
    gw = gw_parts[0]
    for more in gw_parts[1:]:
        gw += more
    if need_x:  # gw[u, (o, v), c] = ∂L/∂W[o, c, kh−1−u, kw−1−v]
        gw = gw.reshape(kh, o, kw, c).transpose(1, 3, 0, 2)[:, :, ::-1, ::-1]
    else:  # gw[u, o, (c, v)] = ∂L/∂W[o, c, u, v]
        gw = gw.reshape(kh, o, c, kw).transpose(1, 2, 0, 3)
    return gx, np.ascontiguousarray(gw)
