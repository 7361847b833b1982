"""The SE block's scale (Eq. 4) by ``einsum`` (the op and its maths: ``minise.functional.scale``).

x̃ = s_c · u_c multiplies every (n, c) plane of u by one number. Written as a broadcast product,
u * s[:, :, None, None], NumPy runs one short loop per plane; ``einsum`` runs the same products
faster (the same bits: one multiplication per value). The backward makes both gradients a block
of samples at a time, so that the block of ∂L/∂x̃ read for ∂L/∂u is still in the cache when it
is read again for ∂L/∂s = Σ_ij ∂L/∂x̃ · u. Arrays of ``PARALLEL_MIN_BYTES`` or more are cut into
one part of the batch per thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import speed

SOLVES = ("se/scale_forward", "se/scale_backward")


def supports(*arrays: Any) -> bool:
    """NumPy arrays (CPU) of float32 or float64."""
    return all(type(a) is np.ndarray and a.dtype in (np.float32, np.float64) for a in arrays)


def _planes(a: Any) -> Any:
    """(N, C, H, W) as (N, C, H·W)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


PARALLEL_MIN_BYTES = 2 << 20
"""Arrays from this size are split over the threads (parts of the batch), as for ReLU. Measured on
arrays fresh from memory (two threads against one, forward / backward with the autograd step):
8 MiB 2.69 / 6.93 → 1.43 / 4.95 ms, 4 MiB 1.15 / 2.93 → 0.78 / 2.30, 2 MiB 0.58 / 1.35 → 0.55 / 1.22."""


def forward(op: Any, u: Any, s: Any) -> Any:
    """x̃ = s_c · u_c for u (N, C, H, W) and s (N, C); saves u and s on ``op``."""
    op.save(u, s)
    uv = _planes(u)
    x = np.empty(uv.shape, dtype=u.dtype)
    speed.in_parallel(lambda p: np.einsum("ncl,nc->ncl", uv[p], s[p], out=x[p]),
                      speed.parts(u, min_bytes=PARALLEL_MIN_BYTES), limit_blas=False)
    return x.reshape(u.shape)


def backward(op: Any, gy: Any) -> tuple[Any, Any]:
    """(∂L/∂u, ∂L/∂s), each None where not needed."""
    u, s = op.saved
    need_u, need_s = op.needs_input_grad
    g, uv = _planes(gy), _planes(u)
    gu = np.empty(g.shape, dtype=gy.dtype) if need_u else None
    gs = np.empty(s.shape, dtype=gy.dtype) if need_s else None

    def part(p: slice) -> None:  # the samples p, a block at a time
        for b in speed.sample_blocks(g, p):
            if need_u:
                np.einsum("ncl,nc->ncl", g[b], s[b], out=gu[b])
            if need_s:
                np.einsum("ncl,ncl->nc", g[b], uv[b], out=gs[b])

    speed.in_parallel(part, speed.parts(g, min_bytes=PARALLEL_MIN_BYTES), limit_blas=False)
    return (gu.reshape(gy.shape) if need_u else None), gs
