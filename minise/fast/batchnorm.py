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
    rows = x.reshape(n, c * length)
    if op.training:
        m = n * length
        mean = _per_channel_sum(x.reshape(n, c, length)) / dtype(m)
    else:
        mean = op.running_mean.astype(x.dtype)
    xc = np.subtract(rows, _row(mean, length))  # x − μ
    if op.training:
        var = _per_channel_dot(xc.reshape(n, c, length), xc.reshape(n, c, length)) / dtype(m)
        op.update_running_stats(mean, var, m, slice(None))
    else:
        var = op.running_var.astype(x.dtype)
    invstd = 1 / np.sqrt(var + dtype(op.eps))
    a = invstd if gamma is None else gamma * invstd  # γ/σ
    y = xc if not op._recording else np.empty_like(xc)  # without a graph, x − μ is not kept: y in place
    np.multiply(xc, _row(a, length), out=y)
    if beta is not None:
        y += _row(beta, length)
    op.save(xc, invstd, gamma)
    return y.reshape(x.shape)


def backward(op: Any, gy: Any) -> tuple[Any, Any, Any]:
    """(∂L/∂x, ∂L/∂γ, ∂L/∂β) from what :func:`forward` saved, each None where not needed."""
    xc, invstd, gamma = op.saved
    need_x, need_w, need_b = op.needs_input_grad
    n, c = gy.shape[:2]
    length = gy.size // (n * c)
    m = n * length
    gyv, xcv = gy.reshape(n, c, length), xc.reshape(n, c, length)
    sum_gy = _per_channel_sum(gyv) if (need_b or (need_x and op.training)) else None
    sum_gy_xhat = _per_channel_dot(gyv, xcv) * invstd if (need_w or (need_x and op.training)) else None
    gx = None
    if need_x:
        k = invstd if gamma is None else gamma * invstd  # γ/σ
        gy_rows = gy.reshape(n, c * length)
        gx = np.multiply(gy_rows, _row(k, length))
        if op.training:
            # k·(g − mean(g) − x̂·mean(g·x̂)) = k·g + c1·(x − μ) + c0, with x̂ = (x − μ)/σ
            inv_m = gy.dtype.type(1.0 / m)
            c1, c0 = _row(-k * invstd * sum_gy_xhat * inv_m, length), _row(-k * sum_gy * inv_m, length)
            _add_scaled(gx, xc, c1, c0)
        gx = gx.reshape(gy.shape)
    gw = sum_gy_xhat if need_w else None
    gb = sum_gy if (need_b and op.has_bias) else None
    return gx, gw, gb


def _add_scaled(out: Any, v: Any, scale: Any, shift: Any) -> None:
    """out += v·scale + shift (rows (N, C·L); scale and shift channel rows), a block of samples at a
    time: the temporary v·scale is one block, still in the cache when it is added."""
    rows = out.shape[0]
    step = speed.block_size(out, out[0].nbytes, speed.default_block_bytes())
    tmp = np.empty((min(step, rows), out.shape[1]), dtype=out.dtype)
    for start in range(0, rows, step):
        block = slice(start, min(start + step, rows))
        t = tmp[: block.stop - block.start]
        np.multiply(v[block], scale, out=t)
        t += shift
        out[block] += t
