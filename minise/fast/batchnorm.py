"""Batch norm in fewer, faster passes (the op and its maths: ``minise.functional.normalization``).

The same numbers as the textbook code, up to rounding, computed differently:

- Per-channel values are spread once over a *channel row*: the C·L values of one sample
  (``np.repeat(v, L)``, a few KiB), and each pass combines the (N, C·L) view of the data with
  that row. Every inner loop then runs over C·L contiguous numbers. Broadcasting a (C, 1) column
  over (N, C, L) instead runs one loop per (n, c) plane, which measured about twice as slow for
  the 32×32 maps (L = 1024): the passes were bound by loop overhead, not by memory.
- Forward keeps x − μ (not x̂) and folds 1/σ into the per-channel factor: y = (x − μ)·(γ/σ) + β,
  three passes and one new array besides y (the textbook makes x̂ in a pass of its own).
- Backward: the two per-channel sums Σ g and Σ g·(x − μ) by ``einsum`` (no temporary), and
  ∂L/∂x = k·g + c₁·(x − μ) + c₀ (k = γ/σ, c₁ and c₀ per channel, from those sums) written into
  one new array, a block of samples at a time so that the one temporary stays in the cache.

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


def _per_channel_sum(v: Any) -> Any:
    """Σ over n and l of v (N, C, L), per channel: each plane's sum, then those summed over n."""
    return np.einsum("ncl->nc", v).sum(axis=0)


def _per_channel_dot(a: Any, b: Any) -> Any:
    """Σ over n and l of a·b, per channel, without the temporary a·b."""
    return np.einsum("ncl,ncl->nc", a, b).sum(axis=0)


def forward(op: Any, x: Any, gamma: Any, beta: Any) -> Any:
    """y for the BatchNorm ``op`` (its mode, momentum, ε and running estimates); saves what
    :func:`backward` needs on ``op``."""
    n, c = x.shape[:2]
    length = x.size // (n * c)
    dtype = x.dtype.type
    m = n * length
    rows = x.reshape(n, c * length)
    xc = np.empty_like(rows, dtype=x.dtype)  # x − μ, kept for backward
    y = xc if not op._recording else np.empty_like(xc)  # without a graph, y is made in place of x − μ
    invstd = np.empty(c, dtype=x.dtype)

    def part(s: slice) -> None:  # the channels s (independent of the others): columns of the rows
        cols = slice(s.start * length, s.stop * length)
        k = s.stop - s.start
        if op.training:
            mean = _per_channel_sum(rows[:, cols].reshape(n, k, length)) / dtype(m)
        else:
            mean = op.running_mean[s].astype(x.dtype)
        np.subtract(rows[:, cols], _row(mean, length), out=xc[:, cols])
        if op.training:
            xcv = xc[:, cols].reshape(n, k, length)
            var = _per_channel_dot(xcv, xcv) / dtype(m)
            op.update_running_stats(mean, var, m, s)
        else:
            var = op.running_var[s].astype(x.dtype)
        invstd[s] = 1 / np.sqrt(var + dtype(op.eps))
        a = invstd[s] if gamma is None else gamma[s] * invstd[s]  # γ/σ
        np.multiply(xc[:, cols], _row(a, length), out=y[:, cols])
        if beta is not None:
            y[:, cols] += _row(beta[s], length)

    speed.in_parallel(part, _channel_parts(x), limit_blas=False)
    op.save(xc, invstd, gamma)
    return y.reshape(x.shape)


def backward(op: Any, gy: Any) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂γ, ∂L/∂β) from what :func:`forward` saved, each None where not needed."""
    xc, invstd, gamma = op.saved
    need_x, need_w, need_b = op.needs_input_grad
    n, c = gy.shape[:2]
    length = gy.size // (n * c)
    m = n * length
    inv_m = gy.dtype.type(1.0 / m)
    g = gy.reshape(n, c * length)
    gx = np.empty(g.shape, dtype=gy.dtype) if need_x else None
    gw = np.empty(c, dtype=gy.dtype) if need_w else None
    gb = np.empty(c, dtype=gy.dtype) if need_b and op.has_bias else None

    def part(s: slice) -> None:  # the channels s
        cols = slice(s.start * length, s.stop * length)
        k = s.stop - s.start
        gyv, xcv = g[:, cols].reshape(n, k, length), xc[:, cols].reshape(n, k, length)
        sum_gy = _per_channel_sum(gyv) if (need_b or (need_x and op.training)) else None
        sum_gy_xhat = _per_channel_dot(gyv, xcv) * invstd[s] if (need_w or (need_x and op.training)) else None
        if gw is not None:
            gw[s] = sum_gy_xhat
        if gb is not None:
            gb[s] = sum_gy
        if need_x:
            kx = invstd[s] if gamma is None else gamma[s] * invstd[s]  # γ/σ
            if op.training:
                # k·(g − mean(g) − x̂·mean(g·x̂)) = k·g + c1·(x − μ) + c0, with x̂ = (x − μ)/σ
                c1, c0 = -kx * invstd[s] * sum_gy_xhat * inv_m, -kx * sum_gy * inv_m
                _combine(gx[:, cols], g[:, cols], _row(kx, length), xc[:, cols], _row(c1, length), _row(c0, length))
            else:
                np.multiply(g[:, cols], _row(kx, length), out=gx[:, cols])

    speed.in_parallel(part, _channel_parts(gy), limit_blas=False)
    return (gx.reshape(gy.shape) if need_x else None), gw, gb


PARALLEL_MIN_BYTES = 4 << 20
"""Arrays from this size have their channels split over the threads: 128×16×32×32 float32 (8 MiB)
measured about 1.5× faster on two threads, 128×32×16×16 (4 MiB) about 1.2×, and 128×64×8×8 (2 MiB)
about 1.25× slower (the hand-over to a second thread costs more than half the work)."""


def _channel_parts(x: Any) -> list[slice]:
    """The channels cut into one slice per thread (``speed.parts``; one slice for small arrays)."""
    split = speed.parts(x, axis=1, min_bytes=PARALLEL_MIN_BYTES)
    return [slice(0, x.shape[1]) if s == slice(None) else s for s in split]


def _combine(out: Any, a: Any, ka: Any, b: Any, kb: Any, shift: Any) -> None:
    """out = a·ka + b·kb + shift (rows (N, ·); ka, kb and shift channel rows), a block of samples at
    a time: the block of ``out`` and the temporary b·kb are still in the cache when they are added."""
    rows = out.shape[0]
    step = speed.block_size(out, out[0].nbytes, speed.default_block_bytes())
    tmp = np.empty((min(step, rows), out.shape[1]), dtype=out.dtype)
    for start in range(0, rows, step):
        block = slice(start, min(start + step, rows))
        t = tmp[: block.stop - block.start]
        np.multiply(a[block], ka, out=out[block])
        np.multiply(b[block], kb, out=t)
        t += shift
        out[block] += t
