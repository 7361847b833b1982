"""ReLU's backward in cache-sized blocks (the op and its maths: ``minise.functional.activation``).

The textbook ∂L/∂x = ∂L/∂y · [y > 0] makes the whole mask [y > 0] (a bool array) and then the
whole product: the mask is written out to memory and read back. Here, a block of samples at a
time, the mask is written as 0 and 1 straight into ∂L/∂x's block (in the gradient's dtype) and
multiplied by ∂L/∂y in place while it is still in the cache. The numbers are the same to the bit
(a product by exactly 0 or 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import speed

SOLVES = ("autograd/relu",)


def supports(*arrays: Any) -> bool:
    """NumPy arrays (CPU) of float32 or float64 with at least one axis."""
    return all(type(a) is np.ndarray and a.dtype in (np.float32, np.float64) and a.ndim > 0 for a in arrays)


def backward(y: Any, gy: Any) -> Any:
    """∂L/∂x = ∂L/∂y · [y > 0], for the ReLU output y."""
    gx = np.empty(gy.shape, dtype=gy.dtype)
    n = gx.shape[0]
    step = speed.block_size(gx, gx[0].nbytes if n else 1, speed.default_block_bytes())
    for start in range(0, n, step):
        block = gx[start:start + step]
        np.greater(y[start:start + step], 0, out=block)  # [y > 0] as 0.0 and 1.0
        block *= gy[start:start + step]
    return gx
