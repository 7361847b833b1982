"""Batch norm in fewer, faster passes (the op and its maths: ``minise.functional.normalization``).

The same numbers as the textbook code, up to rounding, computed differently:

- Per-channel values are spread once over a *channel row*: the C·L values of one sample
  (``np.repeat(v, L)``, a few KiB), and each pass combines the (N, C·L) view of the data with
  that row. Every inner loop then runs over C·L contiguous numbers. Broadcasting a (C, 1) column
  over (N, C, L) instead runs one loop per (n, c) plane, which measured about twice as slow for
  the 32×32 maps (L = 1024).
- Nothing new is kept for backward: x itself (which the graph holds anyway) and μ. x − μ is made
  again where it is needed, a block of samples at a time into a small buffer that stays in the
  cache (the textbook keeps x̂, one more array the size of x per layer: about 90 MB of ResNet-20's
  training step at batch 128). In a training step the activations come from main memory, not the
  cache, so what counts is how often each large array is swept: forward reads x three times (μ,
  σ², y) and writes y once; backward reads ∂L/∂y and x twice each and writes ∂L/∂x once.
- 1/σ is folded into the per-channel factors: y = (x − μ)·(γ/σ) + β (in evaluation, where μ and σ
  are fixed, y = x·(γ/σ) + (β − μ·γ/σ): two passes over each block instead of three, as PyTorch's
  CPU kernel does; the rounding differs from the textbook's order, not the value), and
  ∂L/∂x = k·g + c₁·(x − μ) + c₀ (k = γ/σ; c₁, c₀ per channel from Σ g and Σ g·(x − μ)).
- The per-channel sums are ``einsum`` over each (n, c) plane, then summed over n, exactly as
  the textbook's σ²; so how the samples are cut into blocks, or the channels over threads
  (``PARALLEL_MIN_BYTES``), changes no number.

Where this pays is measured in benchmarks/README.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import speed

SOLVES = ("se/batchnorm_backward",)


def supports(*arrays: Any) -> bool:
    """NumPy arrays (CPU) of float32 or float64 with at least one value (None: an absent γ or β)."""
    present = [a for a in arrays if a is not None]
    return all(type(a) is np.ndarray and a.dtype in (np.float32, np.float64) for a in present) \
        and present[0].size > 0


def _row(values: Any, length: int) -> Any:
    """Per-channel values spread over a channel row: each value repeated ``length`` times."""
    return np.repeat(values, length)


def forward(op: Any, x: Any, gamma: Any, beta: Any) -> Any:
    """y for the BatchNorm ``op`` (its mode, momentum, ε and running estimates); saves what
    :func:`backward` needs on ``op``."""
    n, c = x.shape[:2]
    length = x.size // (n * c)
    dtype = x.dtype.type
    m = n * length
    rows = x.reshape(n, c * length)
    y = np.empty(rows.shape, dtype=x.dtype)  # cpu-only
    mean, invstd = np.empty(c, dtype=x.dtype), np.empty(c, dtype=x.dtype)  # cpu-only

    def part(s: slice) -> None:  # the channels s (independent of the others): columns of the rows
        cols, k = slice(s.start * length, s.stop * length), s.stop - s.start
        xs = rows[:, cols]
        if not op.training:  # fixed μ and σ²: y = x·(γ/σ) + (β − μ·γ/σ), two passes over each block, not three
            mean[s] = op.running_mean[s]
            invstd[s] = 1 / np.sqrt(op.running_var[s].astype(x.dtype) + dtype(op.eps))  # cpu-only
            a = invstd[s] if gamma is None else gamma[s] * invstd[s]
            a_row, shift_row = _row(a, length), _row(-mean[s] * a if beta is None else beta[s] - mean[s] * a, length)
            for b in speed.sample_blocks(xs):
                yb = y[b, cols]
                np.multiply(xs[b], a_row, out=yb)
                yb += shift_row
            return
        mean[s] = _planes_sum(xs, k).sum(axis=0) / dtype(m)
        mean_row = _row(mean[s], length)
        squares = np.empty((n, k), dtype=x.dtype)  # cpu-only; Σ_l (x − μ)² of each (n, c) plane
        tmp = None
        for b in speed.sample_blocks(xs):
            tmp = _buffer(tmp, xs[b])
            np.subtract(xs[b], mean_row, out=tmp)
            _planes_dot(tmp, tmp, k, out=squares[b])
        var = squares.sum(axis=0) / dtype(m)
        op.update_running_stats(mean[s], var, m, s)
        invstd[s] = 1 / np.sqrt(var + dtype(op.eps))  # cpu-only
        a_row = _row(invstd[s] if gamma is None else gamma[s] * invstd[s], length)  # γ/σ
        beta_row = None if beta is None else _row(beta[s], length)
        for b in speed.sample_blocks(xs):
            yb = y[b, cols]
            np.subtract(xs[b], mean_row, out=yb)
            yb *= a_row
            if beta_row is not None:
                yb += beta_row

    speed.in_parallel(part, _channel_parts(x), limit_blas=False)
    op.save(rows, mean, invstd, gamma)
    return y.reshape(x.shape)


def backward(op: Any, gy: Any) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂γ, ∂L/∂β) from what :func:`forward` saved, each None where not needed."""
    rows, mean, invstd, gamma = op.saved
    need_x, need_w, need_b = op.needs_input_grad
    n, c = gy.shape[:2]
    length = gy.size // (n * c)
    m = n * length
    inv_m = gy.dtype.type(1.0 / m)
    g = gy.reshape(n, c * length)
    want_sum = need_b or (need_x and op.training)  # Σ g
    want_dot = need_w or (need_x and op.training)  # Σ g·x̂
    gx = np.empty(g.shape, dtype=gy.dtype) if need_x else None  # cpu-only
    gw = np.empty(c, dtype=gy.dtype) if need_w else None  # cpu-only
    gb = np.empty(c, dtype=gy.dtype) if need_b and op.has_bias else None  # cpu-only

    def part(s: slice) -> None:  # the channels s
        cols, k = slice(s.start * length, s.stop * length), s.stop - s.start
        gs, xs = g[:, cols], rows[:, cols]
        mean_row = _row(mean[s], length)
        sums = np.empty((n, k), dtype=gy.dtype) if want_sum else None  # Σ_l g of each (n, c) plane
        dots = np.empty((n, k), dtype=gy.dtype) if want_dot else None  # Σ_l g·(x − μ) of each plane
        tmp = None
        if want_sum or want_dot:
            for b in speed.sample_blocks(xs):  # one sweep of g for both sums
                if want_sum:
                    _planes_sum(gs[b], k, out=sums[b])
                if want_dot:
                    tmp = _buffer(tmp, xs[b])
                    np.subtract(xs[b], mean_row, out=tmp)
                    _planes_dot(gs[b], tmp, k, out=dots[b])
        sum_gy = sums.sum(axis=0) if want_sum else None
        sum_gy_xhat = dots.sum(axis=0) * invstd[s] if want_dot else None
        if gw is not None:
            gw[s] = sum_gy_xhat
        if gb is not None:
            gb[s] = sum_gy
        if not need_x:
            return
        kx = invstd[s] if gamma is None else gamma[s] * invstd[s]  # γ/σ
        k_row = _row(kx, length)
        if not op.training:
            np.multiply(gs, k_row, out=gx[:, cols])
            return
        # k·(g − mean(g) − x̂·mean(g·x̂)) = k·g + c1·(x − μ) + c0, with x̂ = (x − μ)/σ
        c1_row = _row(-kx * invstd[s] * sum_gy_xhat * inv_m, length)
        c0_row = _row(-kx * sum_gy * inv_m, length)
        for b in speed.sample_blocks(xs):
            tmp = _buffer(tmp, xs[b])
            np.subtract(xs[b], mean_row, out=tmp)
            tmp *= c1_row
            tmp += c0_row
            gxb = gx[b, cols]
            np.multiply(gs[b], k_row, out=gxb)
            gxb += tmp

    speed.in_parallel(part, _channel_parts(gy), limit_blas=False)
    return (gx.reshape(gy.shape) if need_x else None), gw, gb


PARALLEL_MIN_BYTES = 2 << 20
"""Arrays from this size have their channels split over the threads. Measured on arrays fresh from
memory, as in a training step (24 different arrays in turn, median; batch norm forward /
backward, one thread against two): 128×16×32×32 float32 (8 MiB) 6.30 / 11.06 → 3.78 / 6.44 ms,
128×32×16×16 (4 MiB) 3.64 / 5.12 → 2.27 / 3.86, 128×64×8×8 (2 MiB) 1.75 / 2.62 → 1.66 / 2.26. (An
earlier measurement on one array used again and again, so from the cache, found 2 MiB slower on two
threads.) Without a free core the split gains nothing."""


def _channel_parts(x: Any) -> list[slice]:
    """The channels cut into one slice per thread (``speed.parts``; one slice for small arrays)."""
    split = speed.parts(x, axis=1, min_bytes=PARALLEL_MIN_BYTES)
    return [slice(0, x.shape[1]) if s == slice(None) else s for s in split]


def _planes_sum(rows: Any, k: int, out: Any = None) -> Any:
    """Σ_l of each (n, c) plane of rows (N, k·L): an (N, k) array (into ``out`` if given)."""
    return np.einsum("ncl->nc", rows.reshape(rows.shape[0], k, -1), out=out)


def _planes_dot(a: Any, b: Any, k: int, out: Any) -> Any:
    """Σ_l a·b of each (n, c) plane of rows (N, k·L), into ``out`` (N, k), without the temporary a·b."""
    return np.einsum("ncl,ncl->nc", a.reshape(a.shape[0], k, -1), b.reshape(b.shape[0], k, -1), out=out)


def _buffer(tmp: Any, like: Any) -> Any:
    """A scratch array of ``like``'s shape and dtype: ``tmp`` (or its first rows) when it is big enough."""
    if tmp is None or tmp.shape[0] < like.shape[0]:
        return np.empty(like.shape, dtype=like.dtype)
    return tmp[: like.shape[0]]
