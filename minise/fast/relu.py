"""ReLU in cache-sized blocks, on the threads for large arrays (the op and its maths:
``minise.functional.activation``).

The textbook ∂L/∂x = ∂L/∂y · [y > 0] makes the whole mask [y > 0] (a bool array) and then the
whole product: the mask is written out to memory and read back. Here, a block of samples at a
time, the mask is written as 0 and 1 straight into ∂L/∂x's block (in the gradient's dtype) and
multiplied by ∂L/∂y in place while it is still in the cache. Arrays of ``PARALLEL_MIN_BYTES`` or
more are cut into one part of the batch per thread (``minise.speed.parts``), forward and backward.
The numbers are the same to the bit (max(x, 0), and a product by exactly 0 or 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import speed

SOLVES = ("autograd/relu",)

PARALLEL_MIN_BYTES = 2 << 20
"""Arrays from this size are split over the threads. Measured on arrays fresh from memory, as in a
training step (24 different arrays in turn, median; two threads against one, forward / backward):
128×16×32×32 float32 (8 MiB) 1.85 / 4.59 → 1.24 / 3.52 ms, 128×32×16×16 (4 MiB) 0.95 / 1.94 → 0.75 /
1.85, 128×64×8×8 (2 MiB) 0.47 / 0.96 → 0.44 / 0.92. (An earlier measurement on one array used again
and again, so from the cache, found 4 MiB no faster and 2 MiB slower on two threads.)"""


def supports(*arrays: Any) -> bool:
    """NumPy arrays (CPU) of float32 or float64 with at least one axis."""
    return all(type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and a.ndim > 0 for a in arrays)


def forward(x: Any) -> Any:
    """y = max(x, 0)."""
    y = np.empty_like(x)
    speed.in_parallel(lambda s: np.maximum(x[s], 0, out=y[s]), speed.parts(x, min_bytes=PARALLEL_MIN_BYTES),
                      limit_blas=False)
    return y


def backward(y: Any, gy: Any) -> Any:
    """∂L/∂x = ∂L/∂y · [y > 0], for the ReLU output y."""
    gx = np.empty(gy.shape, dtype=gy.dtype)

    def part(s: slice) -> None:
        out, ys, gys = gx[s], y[s], gy[s]
        for b in speed.sample_blocks(out):
            np.greater(ys[b], 0, out=out[b])  # [y > 0] as 0.0 and 1.0
            out[b] *= gys[b]

    speed.in_parallel(part, speed.parts(gx, min_bytes=PARALLEL_MIN_BYTES), limit_blas=False)
    return gx
